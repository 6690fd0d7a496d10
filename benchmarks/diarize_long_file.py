"""Peak memory of ``voxflow diarize`` on one long file (default 3 hours), per process role.

    python benchmarks/diarize_long_file.py --hours 3 [--config examples/profiles.yaml]

The file is the sample corpus looped (see ``probe_long_file.py``). The job runs in a fresh process
that starts its own local Ray; the RSS of the driver, Ray's core processes and every worker is
sampled every 0.2 s.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, run_measured, save  # noqa: E402
from benchmarks.probe_long_file import long_flac  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hours", type=float, default=3.0)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--config", default=None, help="a voxflow diarize YAML config")
    args = parser.parse_args()
    work, flac = long_flac(args.workdir, args.hours)
    out = work / "diarize_out"
    # --overwrite: a finished run left in the work folder would otherwise be resumed (nothing run).
    result = run_measured(
        [sys.executable, "-m", "pipelines.cli", "diarize", str(flac), "--out", str(out), "-q"]
        + ["--overwrite"]
        + (["--config", str(Path(args.config).resolve())] if args.config else [])
    )
    if result["returncode"] != 0:
        raise SystemExit(result["output_tail"])
    run = json.loads((out / "_run.json").read_text())
    result.update(hours=args.hours, config=args.config, counts=run["counts"], machine=machine())
    path = save(result, f"diarize_long_file_{args.hours:g}h" + ("_config" if args.config else ""))
    print(result["output_tail"])
    print(
        f"diarize of a {args.hours:g} h file: wall {result['wall_seconds']:.1f}s "
        f"({args.hours * 3600 / result['wall_seconds']:.0f}x real time), peak RSS by role (MiB): "
        + ", ".join(f"{k} {v:.0f}" for k, v in sorted(result["peak_rss_mib_by_role"].items()))
        + f"; whole tree {result['peak_rss_total_mib']:.0f} MiB; segments {run['counts']['segments']} -> {path}"
    )


if __name__ == "__main__":
    main()
