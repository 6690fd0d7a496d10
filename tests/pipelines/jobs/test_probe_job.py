"""``voxflow probe`` through a real local Ray: every input exactly once, S3 for real, no leftovers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from helpers import REPO, SAMPLE, make_hostile_corpus

from pipelines.cli import main
from pipelines.engine.sources import list_corpus

pytestmark = pytest.mark.integration

MEASURED = [
    "format",
    "codec",
    "sample_rate",
    "channels",
    "num_frames",
    "duration",
    "bytes",
    "peak",
    "rms_dbfs",
    "loudness_lufs",
    "clipping_ratio",
    "silence_ratio",
    "status",
    "error_kind",
]


def _sample_audio_files() -> list:
    return sorted(p for p in (SAMPLE / "audio").rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def mixed_corpus(tmp_path_factory):
    """examples/sample's audio plus a folder of hostile files."""
    root = tmp_path_factory.mktemp("mixed")
    for path in _sample_audio_files():
        shutil.copy(path, root / path.name)
    expected = make_hostile_corpus(root / "hostile")
    return root, {f"hostile/{k}": v for k, v in expected.items()}


def _read(out, table):
    return pd.read_parquet(os.path.join(out, table))


def test_probe_writes_one_row_per_input(ray_local, mixed_corpus, tmp_path, capsys):
    root, expected = mixed_corpus
    out = tmp_path / "out"
    listing = list_corpus([str(root), str(root / "not_there.wav")])
    code = main(["probe", str(root), str(root / "not_there.wav"), "--out", str(out), "--quiet"])
    assert code == 0
    files, errors = _read(out, "files"), _read(out, "errors")
    assert sorted(files["file_id"]) == sorted(r["file_id"] for r in listing)  # each exactly once
    assert (files["status"] == "ok").sum() + len(errors) == len(listing)
    by_rel = files.set_index("rel_path")
    for rel, outcome in expected.items():
        if outcome == "ok":
            assert by_rel.loc[rel, "status"] == "ok", (rel, by_rel.loc[rel, "error"])
        else:
            assert by_rel.loc[rel, "error_kind"] == outcome, rel
    assert by_rel.loc["not_there.wav", "error_kind"] == "not_found"
    assert by_rel.loc["hostile/digital_silence.flac", "is_silent"]
    for path in _sample_audio_files():
        row = by_rel.loc[path.name]
        assert row["status"] == "ok" and row["duration"] > 1 and np.isfinite(row["loudness_lufs"])
    assert set(errors["stage"]) == {"probe"} and errors["error"].str.len().min() > 0
    run = json.loads((out / "_run.json").read_text())
    assert run["counts"]["inputs"] == len(listing)
    assert run["counts"]["ok"] + run["counts"]["errors"] == len(listing)
    assert run["versions"]["ray"] and run["config_hash"] and run["ended_at"] >= run["started_at"]
    printed = capsys.readouterr().out
    assert f"{len(listing)} files" in printed and "decode_error" in printed

    # A re-run replaces the tables instead of adding to them.
    assert (
        main(["probe", str(root), str(root / "not_there.wav"), "--out", str(out), "--quiet"]) == 0
    )
    again = _read(out, "files")
    assert len(again) == len(files)
    pd.testing.assert_frame_equal(
        again.drop(columns=["probe_seconds"]).reset_index(drop=True),
        files.drop(columns=["probe_seconds"]).reset_index(drop=True),
    )


def test_probe_reads_and_writes_s3(ray_local, s3_server, mixed_corpus, tmp_path):
    import s3fs

    root, _ = mixed_corpus
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})
    fs.mkdir("corpus-bucket")
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and "loop" not in path.parts:
            fs.put_file(str(path), f"corpus-bucket/in/{path.relative_to(root).as_posix()}")
    local_out = tmp_path / "local"
    assert main(["probe", "s3://corpus-bucket/in", "--out", "s3://corpus-bucket/out", "-q"]) == 0
    remote = pd.read_parquet(
        "s3://corpus-bucket/out/files",
        storage_options={"client_kwargs": {"endpoint_url": s3_server}},
    )
    assert fs.exists("corpus-bucket/out/_run.json") and fs.ls("corpus-bucket/out/errors")
    local_inputs = [
        str(p) for p in sorted(root.rglob("*")) if p.is_file() and "loop" not in p.parts
    ]
    assert main(["probe", *local_inputs, "--out", str(local_out), "-q"]) == 0
    local = pd.read_parquet(local_out / "files")
    remote = (
        remote.assign(name=remote["rel_path"].str.split("/").str[-1]).set_index("name").sort_index()
    )
    local = local.assign(name=local["rel_path"]).set_index("name").sort_index()
    assert list(remote.index) == list(local.index)
    assert remote["path"].str.startswith("s3://corpus-bucket/in/").all()
    pd.testing.assert_frame_equal(remote[MEASURED], local[MEASURED], check_index_type=False)


class _ToyModel:
    """Stands in for a model operator: an actor with state, loaded once."""

    uses_model = True
    batch_size = 2

    def __init__(self):
        self.loaded_at = time.time()

    def __call__(self, batch):
        if any("bad" in str(p) for p in batch["path"]):
            raise RuntimeError("model failed on this input")
        return {**batch, "score": np.array([len(str(p)) for p in batch["path"]])}


def test_two_actor_pool_with_tasks_does_not_starve_on_two_cpus(ray_local):
    """The default resource plan on a 2-CPU Ray: an actor pool of 2 next to task stages runs to
    the end (two actors at num_cpus=1 each would hold both CPUs and starve the tasks)."""
    import ray.data

    from audio_ops.probe import ProbeOperator
    from pipelines.engine.stages import apply_operator

    assert ray_local.cluster_resources()["CPU"] == 2
    real = [{"path": str(p)} for p in _sample_audio_files()] * 4
    rows = [{"path": f"/nonexistent/{i}.wav"} for i in range(20)] + real + [{"path": "/x/bad.wav"}]
    ds = ray.data.from_items(rows, override_num_blocks=8)
    ds = apply_operator(ds, ProbeOperator, stage="probe")
    ds = apply_operator(ds, _ToyModel, stage="toy")  # batches mix failed and live rows
    ds = ds.map_batches(lambda b: b, num_cpus=0.25)
    out = ds.take_all()
    assert len(out) == len(rows)
    # The probe already failed the missing files: the model stage let them pass untouched and
    # scored the live rows.
    failed = [r for r in out if r["status"] == "error"]
    assert {r["error_stage"] for r in failed} == {"probe"} and len(failed) == 21
    assert all(r["score"] == len(r["path"]) for r in out if r["status"] == "ok")


def test_actor_stage_turns_a_failing_row_into_an_error_row(ray_local):
    import ray.data

    from pipelines.engine.stages import apply_operator

    rows = [{"path": f"/ok/{i}.wav"} for i in range(9)] + [{"path": "/x/bad.wav"}]
    out = apply_operator(ray.data.from_items(rows), _ToyModel, stage="toy").take_all()
    assert len(out) == 10
    bad = [r for r in out if r["status"] == "error"]
    assert [r["path"] for r in bad] == ["/x/bad.wav"]
    assert bad[0]["error_stage"] == "toy" and "model failed" in bad[0]["error"]
    assert all(r["score"] == len(r["path"]) for r in out if r["status"] == "ok")


def _ray_sessions() -> set[str]:
    import psutil

    sessions = set()
    for proc in psutil.process_iter(["cmdline"]):
        for arg in proc.info["cmdline"] or []:
            if "session_" in arg and "/tmp/ray" in arg:
                sessions.add(arg.split("session_", 1)[1].split("/", 1)[0])
    return sessions


def test_cli_in_a_fresh_process_starts_and_stops_its_own_ray(tmp_path):
    before = _ray_sessions()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "probe",
            str(SAMPLE / "audio"),
            "--out",
            str(tmp_path / "o"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "voxflow probe:" in result.stdout and "0 errors" in result.stdout
    assert "probe:" in result.stderr  # the progress line
    time.sleep(1.0)
    assert _ray_sessions() - before == set()


def test_cli_rejects_bad_input_clearly(tmp_path, capsys):
    assert main(["probe", str(tmp_path), "--out", str(tmp_path / "o"), "-q"]) == 2
    assert "no audio files found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("probe:\n  min_duraton: 1\n")
    assert main(["probe", str(tmp_path), "--out", str(tmp_path / "o"), "--config", str(bad)]) == 2
    assert "unknown key probe.min_duraton" in capsys.readouterr().err


def test_error_policy_aborts_systemic_failures(ray_local, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(30):
        (bad / f"{i:02d}.flac").write_bytes(b"not audio at all" * 10)
    assert (
        main(["probe", str(bad), "--out", str(tmp_path / "o1"), "-q", "--max-error-rate", "0.5"])
        == 1
    )
    assert "above --max-error-rate 50 %" in capsys.readouterr().err
    assert main(["probe", str(bad), "--out", str(tmp_path / "o2"), "-q", "--fail-fast"]) == 1
    assert "first failure (--fail-fast)" in capsys.readouterr().err
    assert (
        main(["probe", str(bad), "--out", str(tmp_path / "o3"), "-q", "--max-error-rate", "1.0"])
        == 0
    )
    assert len(pd.read_parquet(tmp_path / "o3" / "errors")) == 30


def test_error_policy_counts():
    from pipelines.engine.runtime import ErrorPolicy, JobAborted

    policy = ErrorPolicy(max_error_rate=0.1, min_files=10)
    for i in range(9):
        policy.record(i < 5)  # 5 of 9 failed, but fewer than 10 are done: not judged yet
    with pytest.raises(JobAborted, match="6 of the first 10"):
        policy.record(True)
    tolerant = ErrorPolicy(max_error_rate=0.2, min_files=10)
    for i in range(100):
        tolerant.record(i % 10 == 0)  # 10 % failures stay under 20 %
