"""Transcription quality and speed of both Whisper backends on the sample corpus's reference turns.

    HF_HUB_OFFLINE=1 python benchmarks/transcription_wer.py [--runs 2] [--model-dir DIR]

Every reference turn of ``examples/sample/transcripts.jsonl`` is cut from its file (16 kHz mono),
transcribed whole, and scored against its reference text (corpus WER after lowercasing and
punctuation removal; numbers are not spelled out, so ``5`` against ``five`` counts as an error).

Rows:

- faster-whisper, the bundled tiny.en (CTranslate2, int8), beam 5 and beam 1, batched (8 clips per
  decode) and one clip at a time;
- transformers, the same tiny.en weights read out of the CTranslate2 file and saved as a
  transformers folder (:func:`ct2_whisper_to_transformers`; float16 weights, run in float32 on
  CPU), beam 5 and beam 1. No transformers Whisper can be downloaded here, so this conversion is
  what gives the transformers backend a real WER offline; with ``--model-dir`` any transformers
  Whisper folder is measured instead.

``x real time`` is audio seconds per wall-clock second of ``Transcriber.transcribe`` (model
loaded, best of ``--runs``), on the CPU threads the config resolves to. The machine's load average
is recorded: on a shared machine the speeds move by tens of percent between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, save  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sample"
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2_variables(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The named arrays of a CTranslate2 ``model.bin`` (aliases resolved).

    Args:
        path: the ``model.bin`` file.
    """
    data = Path(path).read_bytes()
    pos = 0

    def take(fmt: str) -> Any:
        nonlocal pos
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal pos
        n = take("H")
        value = data[pos : pos + n - 1].decode("utf-8")
        pos += n
        return value

    take("I")  # binary version
    string()  # spec name
    take("I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        name = string()
        shape = [take("I") for _ in range(take("B"))]
        dtype = CT2_DTYPES[take("B")]
        size = take("I")
        variables[name] = np.frombuffer(data, dtype, size // np.dtype(dtype).itemsize, pos).reshape(
            shape
        )
        pos += size
    for _ in range(take("I")):
        alias = string()
        variables[alias] = variables[string()]
    return variables


def ct2_whisper_to_transformers(ct2_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]):
    """Save a CTranslate2 Whisper (as faster-whisper loads it) as a transformers folder.

    The weights are copied unchanged (fused q/k/v projections split again); the tokenizer comes
    from the folder's ``tokenizer.json`` plus the timestamp tokens of its ``vocabulary.txt``, the
    generation config from its ``config.json``. English-only and multilingual models both work.

    Args:
        ct2_dir: the CTranslate2 model folder (``model.bin``, ``config.json``, ``tokenizer.json``,
            ``vocabulary.txt``).
        out_dir: where ``save_pretrained`` writes the model and processor.
    """
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    ct2_dir = Path(ct2_dir)
    v = read_ct2_variables(ct2_dir / "model.bin")
    ct2_config = json.loads((ct2_dir / "config.json").read_text())
    vocab_size, d_model = v["decoder/embeddings/weight"].shape
    enc_layers = sum(1 for k in v if k.endswith("self_attention/linear_1/bias") and "encoder/" in k)
    dec_layers = sum(1 for k in v if k.endswith("/attention/linear_2/bias"))
    n_mels = v["encoder/conv1/weight"].shape[1]

    tokenizer = WhisperTokenizer(tokenizer_file=str(ct2_dir / "tokenizer.json"))
    vocabulary = (ct2_dir / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    tokenizer.add_tokens(vocabulary[len(tokenizer) :], special_tokens=False)
    if len(tokenizer) != vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, the model {vocab_size}")
    ids = {t.content: i for i, t in tokenizer.added_tokens_decoder.items()}
    multilingual = vocab_size >= 51865
    lang_ids = [i for i in ct2_config.get("lang_ids", []) if i in tokenizer.added_tokens_decoder]
    lang_to_id = {tokenizer.added_tokens_decoder[i].content: i for i in lang_ids}

    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=n_mels,
        d_model=d_model,
        encoder_layers=enc_layers,
        decoder_layers=dec_layers,
        encoder_attention_heads=int(v["encoder/num_heads"]),
        decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        decoder_start_token_id=ids["<|startoftranscript|>"],
        eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
    )
    model = WhisperForConditionalGeneration(config)

    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(v[name], dtype=np.float32))

    state = {
        "model.encoder.conv1.weight": t("encoder/conv1/weight"),
        "model.encoder.conv1.bias": t("encoder/conv1/bias"),
        "model.encoder.conv2.weight": t("encoder/conv2/weight"),
        "model.encoder.conv2.bias": t("encoder/conv2/bias"),
        "model.encoder.embed_positions.weight": t("encoder/position_encodings/encodings"),
        "model.encoder.layer_norm.weight": t("encoder/layer_norm/gamma"),
        "model.encoder.layer_norm.bias": t("encoder/layer_norm/beta"),
        "model.decoder.embed_tokens.weight": t("decoder/embeddings/weight"),
        "model.decoder.embed_positions.weight": t("decoder/position_encodings/encodings"),
        "model.decoder.layer_norm.weight": t("decoder/layer_norm/gamma"),
        "model.decoder.layer_norm.bias": t("decoder/layer_norm/beta"),
        "proj_out.weight": t("decoder/projection/weight"),
    }

    def linear(hf: str, ct2: str) -> None:
        state[f"{hf}.weight"] = t(f"{ct2}/weight")
        state[f"{hf}.bias"] = t(f"{ct2}/bias")

    def norm(hf: str, ct2: str) -> None:
        state[f"{hf}.weight"] = t(f"{ct2}/gamma")
        state[f"{hf}.bias"] = t(f"{ct2}/beta")

    def split(hf: str, ct2: str, names: tuple[str, ...]) -> None:
        weights = t(f"{ct2}/weight").chunk(len(names))
        biases = t(f"{ct2}/bias").chunk(len(names))
        for name, weight, bias in zip(names, weights, biases, strict=True):
            state[f"{hf}.{name}.weight"] = weight.contiguous()
            if name != "k_proj":  # Whisper's key projections have no bias (CTranslate2: zeros)
                state[f"{hf}.{name}.bias"] = bias.contiguous()

    for side, layers in (("encoder", enc_layers), ("decoder", dec_layers)):
        for i in range(layers):
            hf, ct2 = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            split(
                f"{hf}.self_attn", f"{ct2}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj")
            )
            linear(f"{hf}.self_attn.out_proj", f"{ct2}/self_attention/linear_1")
            norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
            linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0")
            linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")
            norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")
            if side == "decoder":
                linear(f"{hf}.encoder_attn.q_proj", f"{ct2}/attention/linear_0")
                split(f"{hf}.encoder_attn", f"{ct2}/attention/linear_1", ("k_proj", "v_proj"))
                linear(f"{hf}.encoder_attn.out_proj", f"{ct2}/attention/linear_2")
                norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("k_proj.bias")]
    if missing or unexpected:
        raise ValueError(f"weights do not fit: missing {missing}, unexpected {unexpected}")

    special = {
        "decoder_start_token_id": ids["<|startoftranscript|>"],
        "eos_token_id": ids["<|endoftext|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "bos_token_id": ids["<|endoftext|>"],
        "no_timestamps_token_id": ids["<|notimestamps|>"],
        "begin_suppress_tokens": ct2_config.get("suppress_ids_begin", []),
        "suppress_tokens": ct2_config.get("suppress_ids", []),
        "alignment_heads": ct2_config.get("alignment_heads"),
        "max_initial_timestamp_index": 50,
        "max_length": config.max_target_positions,
        "is_multilingual": multilingual,
    }
    if multilingual:
        special["lang_to_id"] = lang_to_id
        special["task_to_id"] = {
            "transcribe": ids["<|transcribe|>"],
            "translate": ids["<|translate|>"],
        }
    model.generation_config = GenerationConfig(**special)
    processor = WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=n_mels), tokenizer=tokenizer
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return Path(out_dir)


def reference_turns() -> tuple[list[np.ndarray], list[str]]:
    """16 kHz clips and texts of every reference turn of the sample corpus."""
    from audio_ops.io import load_audio

    clips, texts = [], []
    for line in (SAMPLE / "transcripts.jsonl").read_text().splitlines():
        turn = json.loads(line)
        audio, _ = load_audio(
            str(SAMPLE / turn["file"]), 16000, start=turn["start"], end=turn["end"]
        )
        clips.append(audio)
        texts.append(turn["text"])
    return clips, texts


def measure(name: str, config: Any, clips: list[np.ndarray], texts: list[str], runs: int) -> dict:
    from audio_ops.evaluation import word_error_rate
    from audio_ops.transcription import Transcriber

    started = time.perf_counter()
    transcriber = Transcriber(config)
    load = time.perf_counter() - started
    times, rows = [], []
    for _ in range(runs):
        started = time.perf_counter()
        rows = transcriber.transcribe(clips)
        times.append(time.perf_counter() - started)
    audio_seconds = sum(len(c) for c in clips) / 16000
    wer = word_error_rate(texts, [r["text"] for r in rows])
    result = {
        "name": name,
        "backend": config.backend,
        "beam_size": config.beam_size,
        "batch_size": config.batch_size,
        "compute_type": config.compute_type if config.backend == "faster-whisper" else "float32",
        "threads": config.threads(),
        "wer": round(wer, 4),
        "load_seconds": round(load, 2),
        "seconds": [round(t, 2) for t in times],
        "x_real_time": round(audio_seconds / min(times), 2),
        "hallucination_flags": int(sum(r["hallucination"] for r in rows)),
        "hypotheses": [r["text"] for r in rows],
    }
    print(f"  {name}: WER {wer:.2%}, {result['x_real_time']}x real time", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="timed runs per row (best is kept)")
    parser.add_argument("--model-dir", help="a transformers Whisper folder (default: converted)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: config default)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from audio_ops.models import BUNDLED, package_file
    from audio_ops.transcription import TranscriptionConfig

    clips, texts = reference_turns()
    audio_seconds = sum(len(c) for c in clips) / 16000
    print(f"{len(clips)} reference turns, {audio_seconds:.1f} s of audio", flush=True)
    rows = []
    fw = {"cpu_threads": args.threads, "speech_detector": "none"}
    for name, extra in (
        ("faster-whisper int8 beam 5, batch 8", {"beam_size": 5, "batch_size": 8}),
        ("faster-whisper int8 beam 1, batch 8", {"beam_size": 1, "batch_size": 8}),
        ("faster-whisper int8 beam 5, one clip at a time", {"beam_size": 5, "batch_size": 1}),
        ("faster-whisper int8 beam 1, one clip at a time", {"beam_size": 1, "batch_size": 1}),
    ):
        rows.append(measure(name, TranscriptionConfig(**fw, **extra), clips, texts, args.runs))

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        source = model_dir or "tiny.en converted from the bundled CTranslate2 file"
        if not model_dir:
            entry = BUNDLED["whisper-tiny-en"]
            ct2 = package_file(entry.package, entry.relative_path).parent
            model_dir = str(ct2_whisper_to_transformers(ct2, Path(tmp) / "whisper-tiny-en"))
        for beam in (5, 1):
            config = TranscriptionConfig(
                backend="transformers",
                model=model_dir,
                beam_size=beam,
                batch_size=8,
                cpu_threads=args.threads,
                device="cpu",
                speech_detector="none",
            )
            row = measure(
                f"transformers fp32 beam {beam}, batch 8", config, clips, texts, args.runs
            )
            row["model"] = source
            rows.append(row)

    results = {
        "corpus": "examples/sample reference turns",
        "turns": len(clips),
        "audio_seconds": round(audio_seconds, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "machine": machine(),
        "rows": rows,
    }
    path = save(results, "transcription_wer")
    print()
    print("| backend / decoding | WER | x real time | load (s) | flagged |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['name']} | {row['wer']:.2%} | {row['x_real_time']} | "
            f"{row['load_seconds']} | {row['hallucination_flags']} |"
        )
    print(f"\n{results['turns']} turns, {results['audio_seconds']} s; wrote {path}")


if __name__ == "__main__":
    main()
