"""Fault tolerance on real Ray: a worker node lost mid-run, actor processes that die, operators
that cannot start. Every job either completes with exactly the output of a clean run, or fails
within a bounded time naming the cause.

The node-loss test starts its own multi-node cluster in a separate process
(``tests/fault_scenarios.py``), so the session's ``ray_local`` is never disturbed; the other
tests run on ``ray_local``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from fault_scenarios import (
    PLAN,
    CannotStart,
    CrashOnce,
    patch_embedding,
    run_config,
)
from helpers import REPO, SAMPLE

from audio_ops.diarization import DiarizationConfig
from audio_ops.embedding import EmbeddingConfig
from pipelines.engine.stages import ACTOR_MAX_RESTARTS, apply_operator
from pipelines.jobs.diarize import DiarizeRunConfig, _FileAssembler, run_diarize

pytestmark = pytest.mark.integration

#: Seconds within which a job whose operator cannot start must fail (measured: 4-22 s on a
#: loaded 2-core machine; an unbounded restart loop never fails).
FAIL_WITHIN = 90


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    audio = tmp_path_factory.mktemp("fault") / "audio"
    shutil.copytree(SAMPLE / "audio", audio)
    return audio


@pytest.fixture(scope="module")
def clean_run(ray_local, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("fault_clean") / "run"
    summary = run_diarize([str(corpus)], str(out), run_config(), quiet=True)
    assert summary.ok == 5 and summary.errors == 0
    return out


def assert_same_as_clean(out, clean) -> None:
    """Each input once with status ok, no segment twice, and the clean run's segments."""
    files, ref_files = pd.read_parquet(out / "files"), pd.read_parquet(clean / "files")
    assert files["file_id"].is_unique
    assert sorted(files["file_id"]) == sorted(ref_files["file_id"])
    assert (files["status"] == "ok").all(), files[["path", "error"]]
    key = ["file_id", "start"]
    segments = pd.read_parquet(out / "segments").sort_values(key, ignore_index=True)
    reference = pd.read_parquet(clean / "segments").sort_values(key, ignore_index=True)
    assert not segments.duplicated(key).any()
    assert list(segments["file_id"]) == list(reference["file_id"])
    np.testing.assert_allclose(segments[["start", "end"]], reference[["start", "end"]], atol=1e-6)
    assert list(segments["speaker"]) == list(reference["speaker"])


def test_worker_node_lost_mid_run_completes_exactly_once(clean_run, corpus, tmp_path):
    report_path, out = tmp_path / "report.json", tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "tests"), str(REPO), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    )
    command = [sys.executable, str(REPO / "tests" / "fault_scenarios.py"), "node-loss"]
    command += ["--corpus", str(corpus), "--out", str(out), "--report", str(report_path)]
    # A session of its own: on a timeout the whole group (driver and cluster) is killed.
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        log, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail("node-loss scenario timed out:\n" + log.decode(errors="replace")[-5000:])
    tail = log.decode(errors="replace")[-5000:]
    assert proc.returncode == 0, tail
    report = json.loads(report_path.read_text())
    assert report["killed"], tail
    assert report["ok"] == 5 and report["errors"] == 0

    # The node really died: the GCS marks it dead, its raylet and workers are gone.
    victim = report["victim"]
    assert report["nodes_alive"][victim] is False
    assert sum(report["nodes_alive"].values()) == 2  # the head and the other worker
    assert report["worker_pids"] and report["alive_pids"] == []

    # It died mid-run with work in flight: batches had finished before the kill and others
    # after it; a batch had started on the node and never ended there, and was embedded again
    # on the other node after the kill.
    kill, trace = report["kill_time"], report["trace"]
    assert report["run_start"] < kill < report["run_end"]
    assert any(r["event"] == "end" and r["time"] < kill for r in trace)
    assert any(r["event"] == "end" and r["time"] > kill for r in trace)
    lost = report["in_flight"]
    assert any(r["event"] == "start" and r["node"] == victim and r["keys"] == lost for r in trace)
    assert not any(r["event"] == "end" and r["node"] == victim and r["keys"] == lost for r in trace)
    redone = {
        key
        for r in trace
        if r["event"] == "end" and r["node"] != victim and r["time"] > kill
        for key in r["keys"]
    }
    assert set(lost) <= redone

    assert_same_as_clean(out, clean_run)


def test_actor_process_exit_retries_its_batches_exactly_once(ray_local, tmp_path):
    marker = tmp_path / "crashed"
    import ray.data

    ds = ray.data.range(64, override_num_blocks=16)
    ds = apply_operator(ds, CrashOnce, stage="crash", kwargs={"marker": str(marker), "crash_at": 3})
    rows = ds.take_all()
    assert marker.exists()  # an actor did exit mid-run
    assert sorted(r["id"] for r in rows) == list(range(64))
    assert all(r["doubled"] == 2 * r["id"] and r["status"] == "ok" for r in rows)


def test_embedding_actor_exit_mid_diarization(clean_run, corpus, tmp_path):
    marker = tmp_path / "crashed"
    plan = corpus.parent / PLAN
    plan.write_text(json.dumps({"crash_marker": str(marker), "crash_at": 2}))
    try:
        with patch_embedding():
            summary = run_diarize([str(corpus)], str(tmp_path / "run"), run_config(), quiet=True)
    finally:
        plan.unlink()
    assert marker.exists()
    assert summary.ok == 5 and summary.errors == 0
    assert_same_as_clean(tmp_path / "run", clean_run)


def test_segmentation_actor_exit_mid_diarization(ray_local, corpus, tmp_path):
    """The segmentation method's model stage dies mid-run: its batches are redone, and the
    output equals a clean run's."""
    config = run_config("segmentation")
    clean = tmp_path / "clean"
    summary = run_diarize([str(corpus)], str(clean), config, quiet=True)
    assert summary.ok == 5 and summary.errors == 0
    marker = tmp_path / "crashed"
    plan = corpus.parent / PLAN
    plan.write_text(json.dumps({"crash_marker": str(marker), "crash_at": 2}))
    try:
        with patch_embedding():
            summary = run_diarize([str(corpus)], str(tmp_path / "run"), config, quiet=True)
    finally:
        plan.unlink()
    assert marker.exists()
    assert summary.ok == 5 and summary.errors == 0
    assert_same_as_clean(tmp_path / "run", clean)


@pytest.mark.timeout(2 * FAIL_WITHIN)
@pytest.mark.parametrize(
    ("exit_process", "attempts", "message"),
    [
        # Raised: never restarted, and the error names the stage and the cause.
        (False, 1, "stage 'toy': CannotStart could not start: ModelError: SHA-256 mismatch"),
        # The process exits: restarted a bounded number of times (unbounded, it never failed).
        (True, 1 + ACTOR_MAX_RESTARTS, "actor died"),
    ],
)
def test_operator_that_cannot_start_fails_the_job_in_bounded_time(
    ray_local, tmp_path, exit_process, attempts, message
):
    import ray.data

    marker = tmp_path / "starts"
    kwargs = {"marker": str(marker), "exit_process": exit_process}
    ds = apply_operator(ray.data.range(8), CannotStart, stage="toy", kwargs=kwargs)
    started = time.monotonic()
    with pytest.raises(Exception, match=message):
        ds.take_all()
    assert time.monotonic() - started < FAIL_WITHIN
    assert len(marker.read_text().split()) == attempts


@pytest.mark.timeout(2 * FAIL_WITHIN)
def test_diarize_with_a_mismatched_model_hash_fails_naming_it(ray_local, corpus, tmp_path):
    config = DiarizeRunConfig(
        diarization=DiarizationConfig(method="windows", embedding=EmbeddingConfig(sha256="0" * 64))
    )
    started = time.monotonic()
    # The model loads in the fused "analyse" stage on CPUs, in "embedding" when split.
    cause = r"stage '(analyse|embedding)': \w+ could not start: ModelError: SHA-256 mismatch"
    with pytest.raises(Exception, match=cause):
        run_diarize([str(corpus)], str(tmp_path / "run"), config, quiet=True)
    assert time.monotonic() - started < FAIL_WITHIN


def test_a_segmentation_checkpoint_of_another_hash_fails_before_any_file(
    ray_local, corpus, tmp_path, capsys
):
    from pipelines.cli import main

    config = tmp_path / "pinned.yaml"
    config.write_text("diarization:\n  segmentation:\n    sha256: '" + "0" * 64 + "'\n")
    out = tmp_path / "run"
    assert main(["diarize", str(corpus), "--out", str(out), "--config", str(config)]) == 2
    assert "SHA-256 mismatch" in capsys.readouterr().err
    assert not out.exists()


def _chunk(file_id: str, index: int, last: bool) -> dict:
    return {"file_id": file_id, "chunk_index": index, "is_last": last, "status": "ok"}


def test_file_assembler_keeps_a_retried_chunk_once():
    assembler = _FileAssembler()
    arrivals = [
        _chunk("a", 0, False),
        _chunk("a", 0, False),  # re-emitted by a retried task: must not stand in for chunk 1
        _chunk("b", 0, True),
        _chunk("a", 2, True),
        _chunk("a", 1, False),
        _chunk("b", 0, True),  # after b was handed out: must not diarize b again
        _chunk("a", 2, True),
    ]
    complete = [done for row in arrivals if (done := assembler.add(row)) is not None]
    assert [[(r["file_id"], r["chunk_index"]) for r in c] for c in complete] == [
        [("b", 0)],
        [("a", 0), ("a", 1), ("a", 2)],
    ]
    assert assembler.duplicates == 3


@pytest.mark.timeout(2 * FAIL_WITHIN)
def test_cli_names_the_stage_that_cannot_start_in_one_line(ray_local, corpus, tmp_path, capsys):
    from pipelines.cli import main

    config = tmp_path / "bad.yaml"
    config.write_text(
        "diarization:\n  method: windows\n  embedding:\n    sha256: '" + "0" * 64 + "'\n"
    )
    code = main(["diarize", str(corpus), "--out", str(tmp_path / "run"), "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert re.match(
        r"voxflow diarize: failed: stage '(analyse|embedding)': .*SHA-256 mismatch", last
    )
