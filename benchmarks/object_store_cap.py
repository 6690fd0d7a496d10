"""``voxflow diarize`` on one long file (default 3 hours) with Ray's object store capped (default
1 GB): does it complete, how fast, how full the store got, what spilled, peak RSS per role.

    python benchmarks/object_store_cap.py --hours 3 --object-store-gb 1

This process starts the local Ray (``object_store_memory`` capped) and is the job's driver
(``run_diarize`` finds Ray initialised and uses it). The store's use is polled from Ray's memory
summary once a second; RSS of this process and its descendants (raylet, workers) every 0.2 s.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import TreeRSS, machine, save  # noqa: E402
from benchmarks.diarize_memory import ObjectStorePeak  # noqa: E402
from benchmarks.probe_long_file import long_flac  # noqa: E402


def spilled_mib(address: str) -> float:
    """MiB the object store has spilled to disk so far, from Ray's memory summary."""
    from ray._private.internal_api import memory_summary

    match = re.search(r"Spilled (\d+) MiB", memory_summary(address, stats_only=True))
    return float(match.group(1)) if match else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hours", type=float, default=3.0)
    parser.add_argument("--object-store-gb", type=float, default=1.0)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work, flac = long_flac(args.workdir, args.hours)
    out = work / f"diarize_out_{args.object_store_gb:g}gb"
    shutil.rmtree(out, ignore_errors=True)  # a finished run there would be resumed, not re-run

    import pyarrow.parquet as pq
    import ray

    from pipelines.jobs.diarize import run_diarize

    ray.init(
        address="local",
        num_cpus=args.num_cpus,
        object_store_memory=int(args.object_store_gb * 1e9),
        include_dashboard=False,
        logging_level="ERROR",
    )
    try:
        address = ray.get_runtime_context().gcs_address
        capacity = ray.cluster_resources()["object_store_memory"]
        rss, store = TreeRSS(os.getpid()).start(), ObjectStorePeak(address).start()
        t0 = time.perf_counter()
        error = ""
        try:
            summary = run_diarize([str(flac)], str(out), quiet=True)
        except Exception as exc:  # the result to record is that it did not complete
            summary, error = None, f"{type(exc).__name__}: {exc}"[:2000]
        wall = time.perf_counter() - t0
        rss.stop()
        store.stop()
        spilled = spilled_mib(address)
    finally:
        ray.shutdown()
    segments = pq.read_table(out / "segments", columns=["end"]) if summary else None
    seconds = summary.audio_seconds if summary else 0.0
    result = {
        "hours": args.hours,
        "num_cpus": args.num_cpus,
        "object_store_capacity_mib": capacity / 2**20,
        "completed": bool(summary and summary.ok == 1 and summary.errors == 0),
        "error": error,
        "audio_seconds": seconds,
        "segments": segments.num_rows if segments is not None else 0,
        "last_segment_end": max(segments.column("end").to_pylist(), default=0.0)
        if segments is not None
        else 0.0,
        "wall_seconds": wall,
        "x_real_time": seconds / wall,
        "object_store_peak_used_mib": store.peak_mib,
        "object_store_spilled_mib": spilled,
        "object_store_samples": store.samples,
        "peak_rss_mib_by_role": {k: v / 2**20 for k, v in rss.peak_by_role.items()},
        "peak_rss_total_mib": rss.peak_total / 2**20,
        "machine": machine(),
    }
    path = save(result, f"object_store_cap_{args.hours:g}h_{args.object_store_gb:g}gb")
    roles = ", ".join(f"{k} {v:.0f}" for k, v in sorted(result["peak_rss_mib_by_role"].items()))
    print(
        f"diarize, {args.hours:g} h file, object store {capacity / 2**20:.0f} MiB: "
        f"{'completed' if result['completed'] else 'FAILED ' + error} in {wall:.1f}s "
        f"({result['x_real_time']:.0f}x real time); store peak {result['object_store_peak_used_mib']:.0f} MiB, "
        f"spilled {result['object_store_spilled_mib']:.0f} MiB ({store.samples} samples); "
        f"peak RSS (MiB) {roles}, whole tree {result['peak_rss_total_mib']:.0f} -> {path}"
    )


if __name__ == "__main__":
    main()
