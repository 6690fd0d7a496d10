"""Memory of ``voxflow diarize`` as the corpus grows: peak RSS per process role and the object
store's peak, for each corpus given (for example 1 h against 10 h: memory must stay flat).

    python examples/synth_corpus.py bench --out /tmp/bench1h --hours 1 --seed 3
    python examples/synth_corpus.py bench --out /tmp/bench10h --hours 10 --seed 4
    python benchmarks/diarize_memory.py /tmp/bench1h /tmp/bench10h

This process starts a local Ray (``--num-cpus``) and runs ``voxflow diarize --address`` against
it in a subprocess, so the Ray workers (children of the raylet, children of this process) and the
voxflow driver are sampled apart, and the object store's usage is polled from here
(``memory_summary(stats_only=True)``, once a second).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import TreeRSS, machine, save  # noqa: E402


class ObjectStorePeak:
    """Polls the object store's used MiB (Ray's memory summary) until stopped."""

    def __init__(self, address: str, interval: float = 1.0):
        self.address, self.interval = address, interval
        self.peak_mib = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from ray._private.internal_api import memory_summary

        while not self._stop.is_set():
            try:
                text = memory_summary(self.address, stats_only=True)
            except Exception:  # the summary is best effort
                text = ""
            match = re.search(r"Plasma memory usage (\d+) MiB", text)
            if match:
                self.peak_mib = max(self.peak_mib, float(match.group(1)))
                self.samples += 1
            self._stop.wait(self.interval)

    def start(self) -> ObjectStorePeak:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def measure(corpus: Path, out: Path, address: str) -> dict:
    """One ``voxflow diarize`` run against the running Ray; peaks by role."""
    workers = TreeRSS(psutil.Process().pid).start()  # raylet, workers (and the driver, apart below)
    store = ObjectStorePeak(address).start()
    cmd = [sys.executable, "-m", "pipelines.cli", "diarize", str(corpus), "--out", str(out)]
    cmd += ["-q", "--address", address]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    driver = TreeRSS(proc.pid).start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - t0
    for sampler in (driver, workers, store):
        sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(output[-3000:])
    run = json.loads((out / "_run.json").read_text())
    return {
        "corpus": str(corpus),
        "hours": run["counts"]["audio_seconds"] / 3600,
        "files": run["counts"]["inputs"],
        "wall_seconds": wall,
        "x_real_time": run["counts"]["audio_seconds"] / wall,
        "driver_peak_rss_mib": driver.peak_by_role.get("driver", 0) / 2**20,
        "worker_peak_rss_mib": workers.peak_by_role.get("worker", 0) / 2**20,
        "worker_peak_private_mib": workers.peak_private_by_role.get("worker", 0) / 2**20,
        "driver_peak_private_mib": driver.peak_private_by_role.get("driver", 0) / 2**20,
        "ray_core_peak_rss_mib": workers.peak_by_role.get("ray-core", 0) / 2**20,
        "tree_peak_rss_mib": (workers.peak_total) / 2**20,
        "object_store_peak_mib": store.peak_mib,
        "object_store_samples": store.samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("corpora", type=Path, nargs="+")
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()

    import ray

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="ERROR")
    address = ray.get_runtime_context().gcs_address
    work = Path(tempfile.mkdtemp(prefix="voxflow-memory-bench-"))
    results = []
    try:
        for i, corpus in enumerate(args.corpora):
            results.append(measure(corpus, work / f"out{i}", address))
            print(json.dumps(results[-1]), flush=True)
    finally:
        ray.shutdown()
        subprocess.run(["rm", "-rf", str(work)], check=False)
    report = {"machine": machine(), "num_cpus": args.num_cpus, "runs": results}
    if len(results) >= 2:
        first, last = results[0], results[-1]
        report["ratios_last_to_first"] = {
            key: (last[key] / first[key] if first[key] else None)
            for key in (
                "driver_peak_rss_mib",
                "worker_peak_rss_mib",
                "worker_peak_private_mib",
                "driver_peak_private_mib",
                "tree_peak_rss_mib",
                "object_store_peak_mib",
            )
        }
        print(json.dumps(report["ratios_last_to_first"], indent=2))
    print(f"-> {save(report, 'diarize_memory')}")


if __name__ == "__main__":
    main()
