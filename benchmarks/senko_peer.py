"""The peer diarizer senko on a list of audio files: one RTTM per file, and how fast it ran.

    HF_HUB_OFFLINE=1 python -m benchmarks.senko_peer ../shared/realdata/diar/audio --out /tmp/senko
    voxflow eval diarization --ref ../shared/realdata/diar/rttm --hyp /tmp/senko

senko (``pip install senko``) runs its own pipeline: silero VAD on CPU, CAM++ embeddings of 1.5 s
sub-segments, spectral clustering (UMAP + HDBSCAN past 20 min). Its models ship inside the wheel,
so nothing is downloaded. ``Diarizer.diarize`` takes only a path to a 16 kHz mono 16-bit PCM WAV
(it checks with the ``wave`` module, which also rejects float WAVs), so every other input is
decoded, downmixed and resampled into a temporary WAV first, outside the timed region.

The RTTM turns are senko's ``merged_segments`` (same-speaker gaps up to 4 s bridged, turns up to
0.78 s dropped), the output its README writes to RTTM. senko sets torch to ``os.cpu_count()``
threads (one during VAD).

senko's CPU filterbank is a bundled C++ library (``libfbank_extractor.so``) built with AVX-512:
on a CPU without it the process dies of an illegal instruction at the first file. ``--fbank
auto`` (the default) then computes the same Kaldi filterbank (80 bins, 25/10 ms, povey window,
no dither, each sub-segment's mean removed) with ``torchaudio.compliance.kaldi.fbank``, the
options senko's own CUDA path gives kaldifeat "to match the C++ extractor", and everything else
in senko's pipeline stays its own. The JSON says which one ran (``fbank``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SENKO_SAMPLE_RATE = 16000
FBANK_CHOICES = ("auto", "native", "torchaudio")
AUDIO_EXT = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus"}


def input_files(inputs: list[str]) -> list[str]:
    """Expand folders (recursively, audio extensions only, sorted) and keep files as given.

    Args:
        inputs: audio files and folders of audio files.
    """
    paths: list[str] = []
    for item in inputs:
        root = Path(item)
        if root.is_dir():
            paths.extend(str(p) for p in sorted(root.rglob("*")) if p.suffix.lower() in AUDIO_EXT)
        elif root.is_file():
            paths.append(str(root))
        else:
            raise FileNotFoundError(f"no such file or folder: {item}")
    return paths


def _is_senko_ready(path: str) -> bool:
    import soundfile as sf

    try:
        info = sf.info(path)
    except RuntimeError:
        return False
    return (
        info.format == "WAV"
        and info.subtype == "PCM_16"
        and info.samplerate == SENKO_SAMPLE_RATE
        and info.channels == 1
    )


def senko_wav(path: str, scratch_dir: str) -> tuple[str, float]:
    """A 16 kHz mono PCM_16 WAV of ``path`` (the file itself when it already is one).

    Args:
        path: any audio file soundfile can decode (WAV, FLAC, OGG...), at any rate and channels.
        scratch_dir: folder for the converted copy.

    Returns:
        The path to hand to senko, and the audio's duration in seconds.
    """
    import soundfile as sf

    if _is_senko_ready(path):
        return path, sf.info(path).frames / SENKO_SAMPLE_RATE
    import soxr

    audio, sample_rate = sf.read(path, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if sample_rate != SENKO_SAMPLE_RATE:
        mono = soxr.resample(mono, sample_rate, SENKO_SAMPLE_RATE, quality="HQ")
    # libsndfile does not clip float -> int16 by default; resampling can overshoot full scale.
    pcm = np.clip(np.round(mono * 32768.0), -32768, 32767).astype(np.int16)
    target = os.path.join(scratch_dir, f"{Path(path).stem}.wav")
    sf.write(target, pcm, SENKO_SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return target, len(pcm) / SENKO_SAMPLE_RATE


def cpu_has_avx512() -> bool | None:
    """Whether this CPU has AVX-512F, read from ``/proc/cpuinfo`` (None where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return "avx512f" in line.split()
    except OSError:
        return None
    return None


def kaldi_fbank_features(
    wav: np.ndarray, subsegments: list[tuple[float, float]], sample_offset: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """senko's filterbank features of each sub-segment, computed with torchaudio.

    Cuts and pads each sub-segment as senko's kaldifeat path does (at least 400 samples), takes
    Kaldi's 80-bin log filterbank with the options senko gives kaldifeat, and removes each
    sub-segment's mean over frames.

    Args:
        wav: mono 16 kHz float32 samples in [-1, 1].
        subsegments: (start, end) seconds.
        sample_offset: the sample index of ``wav[0]`` in the recording.

    Returns:
        What senko's ``_extract_fbank_features`` returns: the features flat (float32), the frames
        of each sub-segment, each one's offset into the flat array, and the feature dimension.
    """
    import torch
    from torchaudio.compliance import kaldi

    signal = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    flat: list[np.ndarray] = []
    frames: list[int] = []
    offsets: list[int] = []
    offset = 0
    for start_sec, end_sec in subsegments:
        start = int(start_sec * SENKO_SAMPLE_RATE) - sample_offset
        length = max(int((end_sec - start_sec) * SENKO_SAMPLE_RATE), 1)
        length = min(length, signal.numel() - start)
        piece = signal[start : start + length]
        if piece.numel() < 400:
            piece = torch.nn.functional.pad(piece, (0, 400 - piece.numel()))
        feats = kaldi.fbank(
            piece.unsqueeze(0),
            num_mel_bins=80,
            frame_length=25.0,
            frame_shift=10.0,
            dither=0.0,
            preemphasis_coefficient=0.97,
            remove_dc_offset=True,
            window_type="povey",
            round_to_power_of_two=True,
            blackman_coeff=0.42,
            snip_edges=True,
            low_freq=20.0,
            high_freq=0.0,
            vtln_low=100.0,
            vtln_high=-500.0,
            use_energy=False,
            energy_floor=1.0,
            raw_energy=True,
            use_log_fbank=True,
            use_power=True,
            sample_frequency=float(SENKO_SAMPLE_RATE),
        )
        if feats.shape[0] > 0:
            feats = feats - feats.mean(dim=0, keepdim=True)
        values = feats.numpy().astype(np.float32).reshape(-1)
        flat.append(values)
        frames.append(int(feats.shape[0]))
        offsets.append(offset)
        offset += values.size
    features = np.concatenate(flat) if flat else np.zeros(0, dtype=np.float32)
    return features, np.array(frames, dtype=np.int64), np.array(offsets, dtype=np.int64), 80


def portable_diarizer_class(senko_module: Any) -> type:
    """senko's ``Diarizer`` with its CPU filterbank computed by :func:`kaldi_fbank_features`."""
    import soundfile as sf
    from senko.utils import time_method

    class PortableFbankDiarizer(senko_module.Diarizer):
        @time_method("fbank_time", "Fbank feature extraction")
        def _extract_fbank_features(self, audio_source, subsegments, *, sample_offset=0):
            if getattr(self, "use_gpu_fbank", False):
                return self._extract_fbank_features_gpu(
                    audio_source, subsegments, sample_offset=sample_offset
                )
            if isinstance(audio_source, np.ndarray):
                wav = audio_source
            else:
                wav, rate = sf.read(audio_source, dtype="float32", always_2d=False)
                if rate != SENKO_SAMPLE_RATE or wav.ndim != 1:
                    raise ValueError(f"{audio_source}: senko needs 16 kHz mono audio")
            return kaldi_fbank_features(wav, subsegments, sample_offset)

    return PortableFbankDiarizer


def write_rttm(segments: list[dict[str, Any]], file_id: str, target: str) -> None:
    """Write senko's segments as RTTM ``SPEAKER`` lines, atomically (temp name, then rename).

    Args:
        segments: dicts with ``start``, ``end`` (seconds) and ``speaker``; empty for no speech.
        file_id: the RTTM's second field (the input's stem).
        target: the ``.rttm`` path.
    """
    from pipelines.reports.evaluate import rttm_line

    with open(target + ".tmp", "w", encoding="utf-8") as f:
        for seg in segments:
            start, end = float(seg["start"]), float(seg["end"])
            if end > start:
                f.write(rttm_line(file_id, start, end - start, str(seg["speaker"])))
    os.replace(target + ".tmp", target)


def run_senko(paths: list[str], out_dir: str, warmup: bool = True, fbank: str = "auto") -> dict:
    """Diarize every file with one ``senko.Diarizer`` (CPU, silero VAD) and write its RTTM.

    Args:
        paths: audio files; their stems must be distinct (they name the RTTM files).
        out_dir: folder for ``<stem>.rttm``, created if missing.
        warmup: let senko warm up its embedding model and clustering when it loads, and run one
            untimed diarization of the first file before the timed ones (reported apart as
            ``warmup_seconds``).
        fbank: ``native`` (senko's C++ filterbank), ``torchaudio`` (:func:`kaldi_fbank_features`)
            or ``auto`` (native where the CPU has AVX-512, which the C++ library needs).

    Returns:
        ``files``, ``audio_seconds``, ``wall_seconds`` (the diarization calls only, not model
        loading or conversion), ``load_seconds``, ``warmup_seconds``, ``x_real_time`` and
        ``fbank`` (the one that ran).
    """
    if fbank not in FBANK_CHOICES:
        raise ValueError(f"fbank must be one of {FBANK_CHOICES}, not {fbank!r}")
    stems = [Path(p).stem for p in paths]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise ValueError(f"inputs share file stems, their RTTMs would collide: {duplicates[:5]}")
    try:
        import senko
    except ImportError as exc:
        raise ImportError("the senko peer benchmark needs senko: pip install senko") from exc

    if fbank == "auto":
        fbank = "torchaudio" if cpu_has_avx512() is False else "native"
    diarizer_class = portable_diarizer_class(senko) if fbank == "torchaudio" else senko.Diarizer
    os.makedirs(out_dir, exist_ok=True)
    # Anything senko prints goes to stderr so that stdout stays one JSON document.
    with contextlib.redirect_stdout(sys.stderr):
        t0 = time.perf_counter()
        diarizer = diarizer_class(device="cpu", vad="auto", warmup=warmup, quiet=True)
        load_seconds = time.perf_counter() - t0

    audio_seconds = wall_seconds = warmup_seconds = 0.0
    with tempfile.TemporaryDirectory(prefix="senko_peer_") as scratch_dir:
        for index, (path, stem) in enumerate(zip(paths, stems, strict=True)):
            try:
                wav_path, duration = senko_wav(path, scratch_dir)
            except Exception as exc:
                raise RuntimeError(f"could not convert {path} for senko: {exc}") from exc
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    if warmup and index == 0:
                        t0 = time.perf_counter()
                        diarizer.diarize(wav_path)
                        warmup_seconds = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    result = diarizer.diarize(wav_path)
                    wall_seconds += time.perf_counter() - t0
            except Exception as exc:
                raise RuntimeError(f"senko failed on {path}: {exc}") from exc
            audio_seconds += duration
            segments = result["merged_segments"] if result is not None else []
            write_rttm(segments, stem, os.path.join(out_dir, f"{stem}.rttm"))
            if wav_path != path:
                os.remove(wav_path)
    return {
        "files": len(paths),
        "audio_seconds": round(audio_seconds, 3),
        "wall_seconds": round(wall_seconds, 3),
        "load_seconds": round(load_seconds, 3),
        "warmup_seconds": round(warmup_seconds, 3),
        "x_real_time": round(audio_seconds / wall_seconds, 2) if wall_seconds > 0 else None,
        "fbank": fbank,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m benchmarks.senko_peer INPUT... --out DIR``; prints JSON.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files or folders")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for <stem>.rttm")
    parser.add_argument(
        "--no-warmup", action="store_true", help="time the first file cold, as senko loads"
    )
    parser.add_argument(
        "--fbank",
        choices=FBANK_CHOICES,
        default="auto",
        help="senko's C++ filterbank (needs AVX-512), torchaudio's Kaldi filterbank, or auto",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    paths = input_files(args.inputs)
    if not paths:
        parser.error("no audio files found")
    timing = run_senko(paths, args.out, warmup=not args.no_warmup, fbank=args.fbank)
    print(json.dumps(timing, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
