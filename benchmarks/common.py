"""Shared benchmark helpers: machine facts, package versions, a process-tree RSS sampler."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psutil


def own_memory(field: str) -> int:
    """A memory figure of this process from ``/proc/self/status`` in bytes (``VmRSS``: resident
    now, ``VmHWM``: its peak so far); 0 where there is none."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory, Python and package versions of this machine."""
    from pipelines.engine.sinks import package_versions

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "versions": package_versions(),
    }


class TreeRSS:
    """Samples the RSS of a process and all its descendants (Ray's raylet and workers included
    when the process started a local Ray) every ``interval`` seconds.

    Attributes after ``stop()``: ``peak_total`` (bytes, all processes at one instant),
    ``peak_by_role`` (bytes, the largest single process of each role: driver, worker, ray-core),
    ``peak_private_by_role`` (the same for RSS less shared pages: a Ray worker's RSS also counts
    the object-store pages it has mapped, which every reader of an object counts again).
    """

    def __init__(self, pid: int, interval: float = 0.2):
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_total = 0
        self.peak_by_role: dict[str, int] = {}
        self.peak_private_by_role: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _role(proc: psutil.Process, root_pid: int) -> str:
        if proc.pid == root_pid:
            return "driver"
        try:  # a process may exit between listing and reading it
            name = " ".join(proc.cmdline()[:3])
            short = proc.name()
        except psutil.Error:
            return "other"
        if "default_worker.py" in name or "ray::" in short:
            return "worker"
        return "ray-core"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                break
            total = 0
            for proc in procs:
                try:
                    info = proc.memory_info()
                except psutil.Error:
                    continue
                rss, private = info.rss, info.rss - getattr(info, "shared", 0)
                total += rss
                role = self._role(proc, self.root.pid)
                self.peak_by_role[role] = max(self.peak_by_role.get(role, 0), rss)
                self.peak_private_by_role[role] = max(
                    self.peak_private_by_role.get(role, 0), private
                )
            self.peak_total = max(self.peak_total, total)
            time.sleep(self.interval)

    def start(self) -> TreeRSS:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class TreeCPU:
    """CPU seconds (user + system) used by a process and all its descendants (Ray's processes
    included), sampled every ``interval`` seconds: the last moments of a process that exits
    between two samples are missed, so this slightly undercounts."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.root = psutil.Process(pid)
        self.interval = interval
        self.by_pid: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                break
            for proc in procs:
                try:
                    times = proc.cpu_times()
                except psutil.Error:
                    continue
                self.by_pid[proc.pid] = max(
                    self.by_pid.get(proc.pid, 0.0), times.user + times.system
                )
            time.sleep(self.interval)

    def start(self) -> TreeCPU:
        self._thread.start()
        return self

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return sum(self.by_pid.values())


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd``, sampling its process tree's RSS and CPU time; returns wall time, exit code,
    CPU seconds, peaks (MiB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    sampler, cpu = TreeRSS(proc.pid).start(), TreeCPU(proc.pid).start()
    output, _ = proc.communicate()
    sampler.stop()
    return {
        "cmd": cmd,
        "returncode": proc.returncode,
        "wall_seconds": time.perf_counter() - t0,
        "cpu_seconds": cpu.stop(),
        "peak_rss_total_mib": sampler.peak_total / 2**20,
        "peak_rss_mib_by_role": {k: v / 2**20 for k, v in sampler.peak_by_role.items()},
        "output_tail": output[-2000:],
    }


def save(results: dict[str, Any], name: str) -> Path:
    """Write results to ``benchmarks/results/NAME.json`` and return the path."""
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    return path
