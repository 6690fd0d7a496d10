"""Fault injection for ``tests/pipelines/engine/test_fault_tolerance.py``: operators that crash or cannot start,
diarization operators that trace (and can crash in) their batches, and the node-loss scenario.

The node-loss scenario starts its own multi-node cluster (``ray.cluster_utils.Cluster``), so it
runs in a process of its own, never beside the test session's Ray::

    python tests/fault_scenarios.py node-loss --corpus DIR --out DIR --report FILE

Workers import this module by name: ``tests/`` must be on their ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from audio_ops.diarization import (
    ChunkAnalysisOperator,
    ChunkConfig,
    DiarizationConfig,
    EmbeddingOperator,
)
from audio_ops.models import ModelError
from audio_ops.neural_diarization import SegmentationOperator

#: Chunks of 10 s: the five sample files (35-50 s) make 22 chunks, so a fault lands mid-file.
CHUNK = ChunkConfig(seconds=10.0)
#: Name of the fault plan a test writes beside a corpus folder (see :class:`FaultPlan`).
PLAN = "fault_plan.json"


def claim_once(marker: str) -> bool:
    """True for the first caller only, across processes and restarts (an exclusive create)."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


class CrashOnce:
    """Doubles ``id``; the process running its ``crash_at``-th batch exits (``os._exit``), once
    in the whole job (``marker``), as a native crash or an OOM kill would.

    Args:
        marker: file whose exclusive creation decides which process crashes.
        crash_at: the batch, counted per actor process, that crashes.
    """

    uses_model = True
    num_cpus = 0.25
    batch_size = 4
    max_actors = 2

    def __init__(self, marker: str, crash_at: int = 3):
        self.marker, self.crash_at, self.calls = marker, crash_at, 0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        if self.calls == self.crash_at and claim_once(self.marker):
            os._exit(1)
        time.sleep(0.05)  # several batches in flight when the crash comes
        ids = batch["id"]
        return {"id": ids, "doubled": ids * 2}


class CannotStart:
    """An operator whose constructor fails: it raises, as a model whose pinned hash does not
    match does, or (``exit_process``) it kills its process, as a native crash or an OOM kill
    while loading weights does.

    Args:
        marker: file that gets one line per constructor attempt.
        exit_process: exit the process instead of raising.
    """

    uses_model = True
    num_cpus = 0.25
    batch_size = 4
    max_actors = 1

    def __init__(self, marker: str, exit_process: bool = False):
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")
        if exit_process:
            os._exit(3)
        raise ModelError("SHA-256 mismatch for toy.pt: expected 00, got 39; refusing to load")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return batch


class FaultPlan:
    """Fault injection around an operator's ``__call__``, under a plan read from
    ``fault_plan.json`` in the parent folder of the corpus folder (workers of an already running
    Ray cannot be handed settings through their environment; chunk rows carry their file's path).

    The plan's keys, all optional: ``trace`` (a folder: one JSON line per batch start and end,
    with node, pid, time and the batch's ``file_id:chunk_index`` keys), ``slow`` (seconds slept
    in every batch, so that a fault finds work in flight), ``crash_marker`` and ``crash_at`` (the
    process running its ``crash_at``-th batch exits, once in the whole job).
    """

    calls = 0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        plan_path = Path(str(batch["path"][0])).parent.parent / PLAN
        plan = json.loads(plan_path.read_text()) if plan_path.exists() else {}
        self.calls += 1
        keys = [
            f"{f}:{int(c)}" for f, c in zip(batch["file_id"], batch["chunk_index"], strict=True)
        ]
        self._trace(plan, "start", keys)
        if plan.get("crash_marker") and self.calls == plan.get("crash_at"):
            if claim_once(plan["crash_marker"]):
                os._exit(1)
        out = super().__call__(batch)
        time.sleep(float(plan.get("slow", 0.0)))
        self._trace(plan, "end", keys)
        return out

    @staticmethod
    def _trace(plan: dict[str, Any], event: str, keys: list[str]) -> None:
        if not plan.get("trace"):
            return
        import ray

        record = {
            "event": event,
            "node": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "time": time.time(),
            "keys": keys,
        }
        with open(os.path.join(plan["trace"], f"{os.getpid()}.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")


class TracedEmbedding(FaultPlan, EmbeddingOperator):
    """The embedding stage of the split pipeline (a GPU pool), under a :class:`FaultPlan`."""


class TracedAnalysis(FaultPlan, ChunkAnalysisOperator):
    """The windows method's fused VAD + embedding stage (its default on CPUs), under a
    :class:`FaultPlan`."""


class TracedSegmentation(FaultPlan, SegmentationOperator):
    """The segmentation method's model stage (segmentation and local embeddings), under a
    :class:`FaultPlan`."""


def read_trace(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of a trace folder (complete lines only: writers may be mid-line)."""
    records = []
    for path in sorted(Path(folder).glob("*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return records


def in_flight(records: list[dict[str, Any]]) -> dict[tuple[str, tuple[str, ...]], float]:
    """(node, batch keys) -> start time of batches that started and have not ended there."""
    open_batches: dict[tuple[str, tuple[str, ...]], float] = {}
    for record in sorted(records, key=lambda r: r["time"]):
        key = (record["node"], tuple(record["keys"]))
        if record["event"] == "start":
            open_batches[key] = record["time"]
        else:
            open_batches.pop(key, None)
    return open_batches


@contextlib.contextmanager
def patch_embedding():
    """Route the diarization pipeline's model work, of either method, fused or split, through
    the traced operators (the pipeline imports them from their modules when it runs)."""
    from unittest import mock

    with (
        mock.patch("audio_ops.diarization.EmbeddingOperator", TracedEmbedding),
        mock.patch("audio_ops.diarization.ChunkAnalysisOperator", TracedAnalysis),
        mock.patch("audio_ops.neural_diarization.SegmentationOperator", TracedSegmentation),
    ):
        yield


def run_config(method: str = "windows", **resources: Any):
    """The diarize config of these tests: 10 s chunks, the given method (the windows method by
    default: its stages can be split into a CPU and a GPU pool), optional stage resources."""
    from pipelines.jobs.diarize import DiarizeRunConfig

    return DiarizeRunConfig(
        diarization=DiarizationConfig(method=method, chunk=CHUNK), resources=resources
    )


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def node_loss(corpus: str, out: str, report_path: str, timeout: float = 240.0) -> None:
    """Diarize ``corpus`` on a head (no CPUs: it only holds the driver) and two worker nodes
    (2 CPUs, 1 fake GPU each; the embedding stage needs a GPU). When a traced embedding batch is
    in flight on a worker, that node is removed without grace and its worker processes killed,
    as when a machine is lost. Writes what happened to ``report_path`` as JSON."""
    import psutil
    import ray
    from ray.cluster_utils import Cluster

    from pipelines.engine.config import StageResources
    from pipelines.jobs.diarize import run_diarize

    trace = Path(out).parent / "trace"
    trace.mkdir(parents=True, exist_ok=True)
    (Path(corpus).parent / PLAN).write_text(json.dumps({"trace": str(trace), "slow": 0.5}))
    t0 = time.time()
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )
    workers = [cluster.add_node(num_cpus=2, num_gpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    report: dict[str, Any] = {"cluster_seconds": time.time() - t0, "killed": False}

    def kill_when_busy() -> None:
        deadline = time.time() + timeout
        by_id = {node.node_id: node for node in workers}
        while time.time() < deadline:
            records = read_trace(trace)
            busy = [(n, k) for (n, k) in in_flight(records) if n in by_id]
            # Mid-run: batches have finished already (files are half assembled in the driver)
            # and one is running on the node that is about to go.
            if busy and any(r["event"] == "end" for r in records):
                node_id, keys = busy[0]
                victim = by_id[node_id]
                raylet = victim.all_processes["raylet"][0].process.pid
                children = [p.pid for p in psutil.Process(raylet).children(recursive=True)]
                report.update(
                    victim=node_id, raylet_pid=raylet, worker_pids=children, in_flight=list(keys)
                )
                cluster.remove_node(victim, allow_graceful=False)
                for pid in children:  # the machine is gone: its workers go with it
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                report.update(killed=True, kill_time=time.time())
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_busy, daemon=True)
    killer.start()
    config = run_config(
        embedding=StageResources(num_cpus=0.5, num_gpus=1, batch_size=2, max_actors=2)
    )
    report["run_start"] = time.time()
    try:
        with patch_embedding():
            summary = run_diarize([corpus], out, config, address=cluster.address, quiet=True)
        report.update(ok=summary.ok, errors=summary.errors, inputs=summary.inputs)
    finally:
        report["run_end"] = time.time()
        killer.join(timeout=1)
        if report["killed"]:
            ray.init(address=cluster.address, logging_level="WARNING")
            deadline = time.time() + 60
            while time.time() < deadline:  # the GCS marks a node dead after missed health checks
                nodes = {n["NodeID"]: n["Alive"] for n in ray.nodes()}
                if not nodes.get(report["victim"], True):
                    break
                time.sleep(1)
            report["nodes_alive"] = nodes
            report["alive_pids"] = [
                pid for pid in [report["raylet_pid"], *report["worker_pids"]] if _alive(pid)
            ]
            ray.shutdown()
        report["trace"] = read_trace(trace)
        Path(report_path).write_text(json.dumps(report))
        (Path(corpus).parent / PLAN).unlink()
        cluster.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario", choices=["node-loss"])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--report", required=True)
    args = parser.parse_args(argv)
    node_loss(args.corpus, args.out, args.report)


if __name__ == "__main__":
    # Run through the module's own name, so that workers unpickle its classes by reference
    # (classes of ``__main__`` would travel by value).
    import fault_scenarios

    sys.exit(fault_scenarios.main())
