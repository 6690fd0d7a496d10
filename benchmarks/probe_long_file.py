"""Peak memory of ``voxflow probe`` on one long FLAC (default 3 hours), against the file's size.

    python benchmarks/probe_long_file.py --hours 3

Builds the file from the sample corpus's conversations, looped (written block by block, so this
script itself stays small), then runs ``voxflow probe`` in a fresh process that starts its own
local Ray, sampling the RSS of the driver, Ray's core processes and every worker.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, run_measured, save  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sample" / "audio"


def make_long_flac(path: Path, hours: float, rate: int = 16000) -> float:
    """Write ``hours`` of looped sample speech to ``path``; returns its duration in seconds."""
    from audio_ops.io import load_audio

    clips = [load_audio(str(p), rate)[0] for p in sorted(SAMPLE.glob("*.flac"))]
    target = int(hours * 3600 * rate)
    written = 0
    with sf.SoundFile(str(path), "w", rate, 1, format="FLAC", subtype="PCM_16") as f:
        i = 0
        while written < target:
            clip = clips[i % len(clips)][: target - written]
            f.write(clip * np.float32(0.8 + 0.05 * (i % 5)))  # no two loops bit-identical
            written += len(clip)
            i += 1
    return written / rate


def long_flac(workdir: str | None, hours: float) -> tuple[Path, Path]:
    """The work folder (``workdir``, or a new temporary one) and the ``hours``-long FLAC in it,
    made on first use and reused after."""
    work = Path(workdir or tempfile.mkdtemp(prefix="voxflow-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    flac = work / f"long_{hours:g}h.flac"
    if not flac.exists():
        make_long_flac(flac, hours)
    return work, flac


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hours", type=float, default=3.0)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work, flac = long_flac(args.workdir, args.hours)
    short = work / "short_10s.flac"
    if not short.exists():
        make_long_flac(short, 10 / 3600)
    # Ray's own processes cost the same whatever the input: a 10-second file gives that baseline.
    baseline = run_measured(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "probe",
            str(short),
            "--out",
            str(work / "out10s"),
            "-q",
        ]
    )
    cmd = [
        sys.executable,
        "-m",
        "pipelines.cli",
        "probe",
        str(flac),
        "--out",
        str(work / "out"),
        "-q",
    ]
    result = run_measured(cmd)
    result["baseline_10s_file"] = {
        k: baseline[k] for k in ("peak_rss_total_mib", "peak_rss_mib_by_role", "wall_seconds")
    }
    result.update(
        hours=args.hours,
        file_mib=flac.stat().st_size / 2**20,
        decoded_float32_mib=args.hours * 3600 * 16000 * 4 / 2**20,
        machine=machine(),
    )
    path = save(result, f"probe_long_file_{args.hours:g}h")
    print(result["output_tail"])
    print(
        f"probe of a {args.hours:g} h FLAC ({result['file_mib']:.0f} MiB on disk, "
        f"{result['decoded_float32_mib']:.0f} MiB decoded): wall {result['wall_seconds']:.1f}s, "
        f"peak RSS by process role (MiB): "
        + ", ".join(f"{k} {v:.0f}" for k, v in sorted(result["peak_rss_mib_by_role"].items()))
        + f"; whole tree {result['peak_rss_total_mib']:.0f} MiB "
        f"(same job on a 10 s file: whole tree {baseline['peak_rss_total_mib']:.0f} MiB, worker "
        f"{baseline['peak_rss_mib_by_role'].get('worker', 0):.0f} MiB) -> {path}"
    )


if __name__ == "__main__":
    main()
