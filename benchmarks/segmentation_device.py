"""What the segmentation method's model stage costs per audio hour, on a CPU or a GPU, without Ray.

Runs :func:`audio_ops.neural_diarization.diarize_audio_segmentation` (the reference the pipeline
agrees with) file by file and times its three parts separately: the segmentation model over the
10 s chunks, CAM++ over the local speakers of the embedded chunks, and the rest (clustering and
reconstruction, always on the CPU). Writes one RTTM per file, so a run on a GPU can be scored
against the same files' CPU run (``voxflow eval diarization``).

    python benchmarks/segmentation_device.py --audio ../shared/realdata/diar/audio/*.flac \\
        --device cpu --threads 1 --rttm /tmp/seg_cpu

Audio: 16 kHz mono FLAC/WAV (read with soundfile), or ``.npy`` arrays of int16 or float32
samples (for machines without soundfile). ``--repeat`` passes over the files again after the
first (warm-up) pass; only the later passes are timed. ``--compare-first-conv`` also times the
segmentation model the old way (SincNet's first convolution run on every chunk cut out) against
the pipeline's (run once over the stretch the chunks cover), in the same passes, and counts the
chunk frames whose decoded activity differs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

SAMPLE_RATE = 16000


def read_audio(path: Path) -> np.ndarray:
    """float32 samples of a 16 kHz mono file."""
    if path.suffix == ".npy":
        x = np.load(path)
        return (x / 32768.0).astype(np.float32) if x.dtype == np.int16 else x.astype(np.float32)
    import soundfile as sf

    x, rate = sf.read(path, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise SystemExit(f"{path}: {rate} Hz; this benchmark takes 16 kHz audio")
    return x.mean(axis=1)


class Timed:
    """Wraps a callable and adds up its wall seconds (CUDA work is finished when it returns:
    both wrapped methods hand back numpy arrays)."""

    def __init__(self, fn):
        self.fn = fn
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, *args, **kwargs):
        t = time.perf_counter()
        out = self.fn(*args, **kwargs)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--audio", nargs="+", required=True, type=Path)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=1, help="torch/onnxruntime CPU threads")
    parser.add_argument("--batch-size", type=int, default=16, help="segmentation chunks per pass")
    parser.add_argument("--step", type=float, default=None, help="segmentation.step (s)")
    parser.add_argument("--embed-every", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=1, help="timed passes after the warm-up")
    parser.add_argument("--rttm", type=Path, default=None, help="write one RTTM per file here")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument(
        "--compare-first-conv",
        action="store_true",
        help="also time the segmentation with SincNet's first convolution run per chunk (as "
        "before it was shared across chunks), interleaved with the shared way in each pass, "
        "and count the frames where their decoded activity differs",
    )
    args = parser.parse_args()

    import dataclasses

    import torch

    from audio_ops.embedding import make_encoder
    from audio_ops.neural_diarization import (
        SegmentationDiarizationConfig,
        diarize_audio_segmentation,
    )
    from audio_ops.segmentation import load_segmentation

    torch.set_num_threads(args.threads)
    config = SegmentationDiarizationConfig(device=args.device, batch_size=args.batch_size)
    changes = {"step": args.step, "embed_every": args.embed_every}
    config = dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})
    t = time.perf_counter()
    model = load_segmentation(config.segmentation_config())
    encoder = make_encoder(config.embedding_config())
    load_s = time.perf_counter() - t
    from audio_ops.segmentation import cut_chunks

    shared = Timed(model.activity_at)
    per_chunk = Timed(
        lambda audio, offsets, ends=None: model.activity(
            cut_chunks(audio, offsets, model.chunk_samples, ends)
        )
    )
    activity = model.activity_at = shared
    embed = encoder.embed_masked = Timed(encoder.embed_masked)

    files = {p.name.split(".")[0]: read_audio(p) for p in sorted(args.audio)}
    seconds = sum(len(x) for x in files.values()) / SAMPLE_RATE
    results = {}
    for name, audio in files.items():  # warm-up pass, and the output
        results[name] = diarize_audio_segmentation(audio, model, encoder, config)
    activity.seconds = embed.seconds = 0.0
    t = time.perf_counter()
    for _ in range(args.repeat):
        for audio in files.values():
            diarize_audio_segmentation(audio, model, encoder, config)
    wall = time.perf_counter() - t
    hours = seconds * args.repeat / 3600
    per_hour = {
        "segmentation": activity.seconds / hours,
        "embeddings": embed.seconds / hours,
        "clustering_and_rest": (wall - activity.seconds - embed.seconds) / hours,
        "total": wall / hours,
    }
    comparison = None
    if args.compare_first_conv:
        from audio_ops.segmentation import chunk_starts

        shared.seconds = 0.0
        differing = frames = 0
        for _ in range(args.repeat):
            for audio in files.values():
                starts = chunk_starts(len(audio), model.chunk_samples, int(config.step * 16000))
                a, b = shared(audio, starts), per_chunk(audio, starts)
                differing += int((a != b).any(axis=2).sum())
                frames += a.shape[0] * a.shape[1]
        comparison = {
            "segmentation_shared_first_conv": shared.seconds / hours,
            "segmentation_per_chunk_first_conv": per_chunk.seconds / hours,
            "chunk_frames_differing": differing,
            "chunk_frames": frames,
        }
    figures = {
        "device": model.device,
        "gpu": torch.cuda.get_device_name() if model.device == "cuda" else None,
        "gpu_peak_mib": (
            round(torch.cuda.max_memory_allocated() / 2**20) if model.device == "cuda" else None
        ),
        "threads": args.threads,
        "batch_size": args.batch_size,
        "step": config.step,
        "embed_every": config.embed_every,
        "files": len(files),
        "audio_seconds": round(seconds, 1),
        "repeat": args.repeat,
        "load_seconds": round(load_s, 2),
        "seconds_per_audio_hour": {k: round(v, 2) for k, v in per_hour.items()},
        "real_time_factor": round(3600 / per_hour["total"], 1),
        "embedding_runtime": "onnxruntime" if getattr(encoder, "session", None) else "torch",
    }
    if comparison:
        figures["first_conv"] = {
            k: round(v, 2) if isinstance(v, float) else v for k, v in comparison.items()
        }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if args.rttm:
        from pipelines.reports.evaluate import rttm_line

        args.rttm.mkdir(parents=True, exist_ok=True)
        for name, result in results.items():
            lines = [
                rttm_line(name, t.start, t.end - t.start, f"spk{t.speaker}")
                for t in result["turns"]
            ]
            (args.rttm / f"{name}.rttm").write_text("".join(lines))


if __name__ == "__main__":
    main()
