"""Speech enhancement quality and speed: SI-SDR improvement per noise type, input SNR and method.

    python benchmarks/enhancement_quality.py            # about 5 minutes on 2 cores
    python benchmarks/enhancement_quality.py --seconds 8 --files conv01_clean_3spk.flac

The clean speech is the sample corpus's clean files (16 kHz mono, ``--seconds`` from 2 s in);
each is mixed, at each input SNR, with white noise, pink noise, a synthetic music-like tone mix,
50 Hz mains hum with harmonics, and babble (three voices from the other sample files, each at
unit RMS, random offsets). Every mixture goes through each method — ``none``, ``dfn3``
(DeepFilterNet3, unlimited attenuation), ``spectral_gating`` and ``auto`` (the default
:class:`audio_ops.enhancement.EnhancementConfig`) — and is scored by SI-SDR against the clean
speech. The real-time factor is wall time over audio time for each method on one thread,
resampling and (for DFN3) the native state's creation included.

Prints a Markdown table and writes ``benchmarks/results/enhancement_quality.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, save  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sample" / "audio"
CLEAN_FILES = (
    "conv01_clean_3spk.flac",
    "conv03_overlap_4spk.flac",
    "conv04_mp3_2spk.mp3",
    "conv05_stereo44k_3spk.ogg",
)
NOISES = ("white", "pink", "music", "hum", "babble")
SNRS = (0.0, 5.0, 10.0, 15.0, 20.0)
METHODS = ("none", "dfn3", "spectral_gating", "auto")
RATE = 16000


def load_clean(name: str, seconds: float) -> np.ndarray:
    from audio_ops.io import load_audio

    samples, _ = load_audio(str(SAMPLE / name), RATE, start=2.0, end=2.0 + seconds)
    return samples


def babble(target: str, num_samples: int, rng: np.random.Generator, talkers: int = 3):
    """Voices from the other sample files, each at unit RMS, summed."""
    from audio_ops.io import load_audio

    others = [n for n in CLEAN_FILES if n != target]
    out = np.zeros(num_samples)
    for k in range(talkers):
        voice, _ = load_audio(str(SAMPLE / others[k % len(others)]), RATE)
        start = int(rng.integers(0, max(1, voice.size - num_samples)))
        part = voice[start : start + num_samples]
        part = np.pad(part, (0, num_samples - part.size))
        out += part / max(float(np.sqrt(np.mean(part.astype(np.float64) ** 2))), 1e-9)
    return out.astype(np.float32)


def make_noise(kind: str, target: str, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    from audio_ops.evaluation import synthetic_noise

    if kind == "babble":
        return babble(target, num_samples, rng)
    return synthetic_noise("hum50" if kind == "hum" else kind, num_samples, RATE, rng)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="speech per clean file")
    parser.add_argument("--files", nargs="+", default=list(CLEAN_FILES))
    parser.add_argument("--noises", nargs="+", default=list(NOISES), choices=NOISES)
    parser.add_argument("--snrs", nargs="+", type=float, default=list(SNRS))
    parser.add_argument("--seed", type=int, default=20240611)
    args = parser.parse_args()

    from audio_ops.enhancement import (
        EnhancementConfig,
        Enhancer,
        enhance,
        estimate_snr_db,
        spectral_gate,
    )
    from audio_ops.evaluation import mix_at_snr, si_sdr

    auto = Enhancer(EnhancementConfig())
    methods = {
        "none": lambda x: x.copy(),
        "dfn3": lambda x: enhance(x, RATE),
        "spectral_gating": lambda x: spectral_gate(x, RATE),
        "auto": lambda x: auto.enhance(x, RATE),
    }
    rng = np.random.default_rng(args.seed)
    rows: list[dict] = []
    busy = dict.fromkeys(METHODS, 0.0)
    audio_seconds = 0.0
    t_start = time.perf_counter()
    for name in args.files:
        clean = load_clean(name, args.seconds)
        for kind in args.noises:
            noise = make_noise(kind, name, clean.size, rng)
            for snr in args.snrs:
                mixture = mix_at_snr(clean, noise, snr)
                before = si_sdr(clean, mixture)
                row = {
                    "file": name,
                    "noise": kind,
                    "snr_db": snr,
                    "si_sdr_in_db": before,
                    "snr_estimate_db": estimate_snr_db(mixture, RATE),
                }
                for method in METHODS:
                    t0 = time.perf_counter()
                    out = methods[method](mixture)
                    busy[method] += time.perf_counter() - t0
                    if method == "auto":
                        out, info = out
                        row["auto_choice"] = info["enhancement"]
                    row[f"delta_{method}_db"] = si_sdr(clean, out) - before
                audio_seconds += clean.size / RATE
                rows.append(row)
                print(
                    f"{name} {kind:6s} {snr:4.0f} dB  est {row['snr_estimate_db']:5.1f}  "
                    + "  ".join(f"{m} {row[f'delta_{m}_db']:+5.1f}" for m in METHODS)
                    + f"  auto->{row['auto_choice']}",
                    file=sys.stderr,
                    flush=True,
                )

    table = []
    for kind in args.noises:
        for snr in args.snrs:
            group = [r for r in rows if r["noise"] == kind and r["snr_db"] == snr]
            choices = Counter(r["auto_choice"] for r in group)
            table.append(
                {
                    "noise": kind,
                    "snr_db": snr,
                    "snr_estimate_db": float(np.mean([r["snr_estimate_db"] for r in group])),
                    **{
                        f"delta_{m}_db": float(np.mean([r[f"delta_{m}_db"] for r in group]))
                        for m in METHODS
                    },
                    "auto_choices": dict(choices),
                }
            )
    rtf = {m: busy[m] / audio_seconds for m in METHODS}
    lines = [
        "| noise | input SNR | est. SNR | none | dfn3 | spectral_gating | auto | auto chose |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for t in table:
        chose = ", ".join(f"{k} {v}" for k, v in sorted(t["auto_choices"].items()))
        lines.append(
            f"| {t['noise']} | {t['snr_db']:.0f} dB | {t['snr_estimate_db']:.1f} | "
            + " | ".join(f"{t[f'delta_{m}_db']:+.1f}" for m in METHODS)
            + f" | {chose} |"
        )
    lines += [
        "",
        "| method | real-time factor (1 thread) |",
        "|---|---:|",
        *(f"| {m} | {rtf[m]:.4f} |" for m in METHODS),
    ]
    markdown = "\n".join(lines)
    report = {
        "description": "mean SI-SDR improvement (dB) over the clean files, per noise and SNR",
        "files": args.files,
        "seconds_per_file": args.seconds,
        "sample_rate": RATE,
        "seed": args.seed,
        "config": asdict(EnhancementConfig()),
        "audio_seconds_per_method": audio_seconds,
        "real_time_factor": rtf,
        "table": table,
        "rows": rows,
        "wall_seconds": time.perf_counter() - t_start,
        "machine": machine(),
        "markdown": markdown,
    }
    path = save(report, "enhancement_quality")
    print(markdown)
    print(f"-> {path}")
    print(json.dumps({"real_time_factor": rtf}))


if __name__ == "__main__":
    main()
