"""Resume: shards committed atomically, a driver killed mid-run resumes to a clean run's outputs, a
finished run is left alone, and a changed config refuses to mix with old outputs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import soundfile as sf
from helpers import REPO, SAMPLE

from audio_ops.io import load_audio
from pipelines.cli import main
from pipelines.engine.config import ConfigError
from pipelines.engine.resume import SHARDS_DIR, ShardStore, open_run, shard_name
from pipelines.engine.sinks import write_run_json
from pipelines.jobs import clean

SCHEMAS = {
    "files": pa.schema([("file_id", pa.string()), ("status", pa.string())]),
    "segments": pa.schema([("file_id", pa.string()), ("start", pa.float64())]),
}


def _rows(file_id: str, n: int) -> dict[str, list[dict]]:
    return {
        "files": [{"file_id": file_id, "status": "ok"}],
        "segments": [{"file_id": file_id, "start": float(i)} for i in range(n)],
    }


def test_shards_commit_whole_inputs_and_leftovers_are_cleaned(tmp_path):
    store = ShardStore(str(tmp_path), SCHEMAS, files_per_shard=2, seconds_per_shard=1e9)
    assert not store.add("a", _rows("a", 3))
    assert store.add("b", _rows("b", 1))  # the second file fills the shard
    store.add("c", _rows("c", 2))  # buffered, not committed: "cut off" here
    assert store.committed_ids() == {"a", "b"}
    assert shard_name(["b", "a"]) == shard_name(["a", "b"])  # deterministic names
    # A shard cut off between its tables: segments written, marker (files) not; plus a temp file.
    orphan = tmp_path / SHARDS_DIR / "segments" / shard_name(["c"])
    shutil.copy(next((tmp_path / SHARDS_DIR / "segments").iterdir()), orphan)
    (tmp_path / SHARDS_DIR / "files" / "x.parquet.tmp-1234abcd").write_bytes(b"partial")
    fresh = ShardStore(str(tmp_path), SCHEMAS)
    assert fresh.committed_ids() == {"a", "b"}
    assert not orphan.exists()
    assert not any(".tmp-" in p.name for p in (tmp_path / SHARDS_DIR).rglob("*"))
    segments = pa.concat_tables(list(fresh.read("segments"))).to_pylist()
    assert sorted((r["file_id"], r["start"]) for r in segments) == [
        ("a", 0.0),
        ("a", 1.0),
        ("a", 2.0),
        ("b", 0.0),
    ]


def test_a_changed_config_is_refused_unless_overwrite(tmp_path):
    store = ShardStore(str(tmp_path), SCHEMAS)
    store.add("a", _rows("a", 1))
    store.flush()
    state = open_run(str(tmp_path), "diarize", {"x": 1}, store)
    state.mark_running()
    (tmp_path / "notes.txt").write_text("the user's own file")
    with pytest.raises(ConfigError, match="--overwrite"):
        open_run(str(tmp_path), "diarize", {"x": 2}, store)
    with pytest.raises(ConfigError, match="probe run"):
        write_run_json(str(tmp_path), {"job": "probe", "config_hash": state.config_hash})
        open_run(str(tmp_path), "diarize", {"x": 1}, store)
    again = open_run(str(tmp_path), "diarize", {"x": 2}, store, overwrite=True, owned=("files",))
    assert again.committed == set() and store.committed_ids() == set()
    assert (tmp_path / "notes.txt").exists()  # only what the job owns is deleted


def test_a_change_outside_the_shard_config_reuses_committed_inputs(tmp_path):
    store = ShardStore(str(tmp_path), SCHEMAS)
    first = open_run(str(tmp_path), "diarize", {"x": 1, "link": 1}, store, shard_config={"x": 1})
    store.add("a", _rows("a", 1))
    store.flush()
    first.complete({"job": "diarize", "config_hash": first.config_hash})
    same = open_run(str(tmp_path), "diarize", {"x": 1, "link": 1}, store, shard_config={"x": 1})
    assert same.finished(["a"])
    # Same shard config, another final step: committed inputs reused, and the run is not
    # "finished" (its final step must run again with the new config).
    relink = open_run(str(tmp_path), "diarize", {"x": 1, "link": 2}, store, shard_config={"x": 1})
    assert relink.committed == {"a"} and not relink.finished(["a"])
    assert store.committed_ids() == {"a"}
    # A change the shards depend on is still refused, and so is a job that states no shard config.
    with pytest.raises(ConfigError, match="--overwrite"):
        open_run(str(tmp_path), "diarize", {"x": 2, "link": 1}, store, shard_config={"x": 2})
    with pytest.raises(ConfigError, match="--overwrite"):
        open_run(str(tmp_path), "diarize", {"x": 1, "link": 2}, store)


def _corpus(root: Path, copies: int) -> Path:
    for c in range(copies):
        for path in sorted((SAMPLE / "audio").iterdir()):
            target = root / f"set{c}" / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    return root


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", *args]


def _snapshot(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def _tables(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    files = pd.read_parquet(out / "files")[["file_id", "status", "num_speakers", "num_segments"]]
    segments = pd.read_parquet(out / "segments")[
        ["file_id", "start", "end", "speaker", "speaker_global"]
    ]
    return (
        files.sort_values("file_id").reset_index(drop=True),
        segments.sort_values(["file_id", "start"]).reset_index(drop=True),
    )


@pytest.mark.integration
def test_driver_killed_mid_run_resumes_to_a_clean_runs_outputs(ray_local, tmp_path):
    corpus = _corpus(tmp_path / "corpus", copies=3)  # 15 files
    config = tmp_path / "run.yaml"
    config.write_text("commit_files: 1\n")
    clean_out, out = tmp_path / "clean", tmp_path / "out"
    assert (
        main(["diarize", str(corpus), "--out", str(clean_out), "--config", str(config), "-q"]) == 0
    )

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = _cli(
        "diarize", str(corpus), "--out", str(out), "--config", str(config), "--num-cpus", "2"
    )
    driver = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    marker = out / SHARDS_DIR / "files"
    deadline = time.monotonic() + 240
    committed = 0
    while time.monotonic() < deadline and driver.poll() is None:
        committed = len(list(marker.glob("shard-*.parquet"))) if marker.exists() else 0
        if committed >= 4:
            break
        time.sleep(0.05)
    assert driver.poll() is None, "the driver finished before it could be killed"
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    assert driver.returncode == -signal.SIGKILL
    committed = len(list(marker.glob("shard-*.parquet")))
    assert 4 <= committed < 15, committed  # killed mid-run: some, not all, inputs committed
    assert not (out / "segments").exists()  # the final tables are only written at the end

    resumed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {committed} of 15 inputs" in resumed.stderr
    assert f"resumed: {committed} inputs" in resumed.stdout
    assert "15 files (15 ok, 0 errors)" in resumed.stdout
    got_files, got_segments = _tables(out)
    want_files, want_segments = _tables(clean_out)
    pd.testing.assert_frame_equal(got_files, want_files)
    pd.testing.assert_frame_equal(got_segments, want_segments)
    assert not got_segments.duplicated(["file_id", "start"]).any()
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]

    # A finished job run again writes nothing.
    before = _snapshot(out)
    assert main(["diarize", str(corpus), "--out", str(out), "--config", str(config), "-q"]) == 0
    assert _snapshot(out) == before


@pytest.mark.integration
def test_changed_config_refuses_then_overwrite_replaces(ray_local, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(SAMPLE / "audio" / sorted(os.listdir(SAMPLE / "audio"))[0], corpus)
    out = tmp_path / "out"
    assert main(["diarize", str(corpus), "--out", str(out), "-q"]) == 0
    before = _snapshot(out)
    assert main(["diarize", str(corpus), "--out", str(out), "--num-speakers", "3", "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _snapshot(out) == before  # nothing touched
    assert (
        main(
            ["diarize", str(corpus), "--out", str(out), "--num-speakers", "3", "--overwrite", "-q"]
        )
        == 0
    )
    files = pd.read_parquet(out / "files")
    assert list(files["num_speakers"]) == [3]


@pytest.mark.integration
def test_a_new_linking_config_relinks_without_diarizing_again(ray_local, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in sorted(os.listdir(SAMPLE / "audio"))[:3]:
        shutil.copy(SAMPLE / "audio" / name, corpus)
    out = tmp_path / "out"
    assert main(["diarize", str(corpus), "--out", str(out), "-q"]) == 0
    files_before, segments_before = _tables(out)
    shards = {k: v for k, v in _snapshot(out).items() if k.startswith(SHARDS_DIR)}
    speakers_before = pd.read_parquet(out / "speakers")
    assert len(speakers_before) < len(segments_before.groupby(["file_id", "speaker"]))

    # A linking threshold so strict that no two file-speakers link: every one is its own voice.
    config = tmp_path / "strict.yaml"
    config.write_text("linking: {threshold: 0.000001, pitch_weight: 0}\n")
    capsys.readouterr()
    assert main(["diarize", str(corpus), "--out", str(out), "--config", str(config)]) == 0
    assert "reusing them" in capsys.readouterr().err
    after = _snapshot(out)
    assert {k: v for k, v in after.items() if k.startswith(SHARDS_DIR)} == shards  # no re-run
    files_after, segments_after = _tables(out)
    pd.testing.assert_frame_equal(files_after, files_before)
    pd.testing.assert_frame_equal(
        segments_after.drop(columns="speaker_global"),
        segments_before.drop(columns="speaker_global"),
    )
    pairs = segments_after.groupby(["file_id", "speaker"])["speaker_global"].agg(set)
    assert all(len(g) == 1 for g in pairs)
    assert len({next(iter(g)) for g in pairs}) == len(pairs)  # one global id per file-speaker
    assert len(pd.read_parquet(out / "speakers")) == len(pairs)
    run = json.loads((out / "_run.json").read_text())
    assert run["config"]["linking"]["threshold"] == 0.000001 and run["status"] == "complete"

    # The same again is a finished run: nothing written. Back to the defaults: the first ids.
    assert main(["diarize", str(corpus), "--out", str(out), "--config", str(config), "-q"]) == 0
    assert _snapshot(out) == after
    assert main(["diarize", str(corpus), "--out", str(out), "-q"]) == 0
    pd.testing.assert_frame_equal(_tables(out)[1], segments_before)
    # A change to what the files' rows depend on is still refused.
    assert main(["diarize", str(corpus), "--out", str(out), "--num-speakers", "2", "-q"]) == 2


@pytest.mark.integration
def test_clean_resumes_a_cut_off_run_to_the_same_clips_and_funnel(ray_local, tmp_path, monkeypatch):
    corpus = _corpus(tmp_path / "corpus", copies=1)
    (corpus / "set0" / "broken.wav").write_bytes(b"RIFF....WAVEfmt ")  # an error row, too
    # A quieter copy at another rate: its clips are dropped as duplicates in the final step,
    # which must come out the same after a resume.
    audio, rate = load_audio(str(SAMPLE / "audio" / "conv01_clean_3spk.flac"), 22050)
    sf.write(corpus / "set0" / "copy.wav", audio * 0.5, rate)
    config = tmp_path / "clean.yaml"
    config.write_text(
        "steps: [speaker, quality]\ncommit_files: 1\n"
        "clips: {min_seconds: 2.0, max_seconds: 12.0, single_speaker: split}\n"
        'filters: {snr: "snr_db >= 15"}\n'
    )
    out = tmp_path / "out"
    args = ["clean", str(corpus), "--out", str(out), "--config", str(config), "-q"]
    assert main(args) == 0
    want = {
        "clips": pd.read_parquet(out / "clips.parquet").sort_values("clip_id"),
        "rejected": pd.read_parquet(out / "rejected").sort_values("clip_id"),
        "funnel": pd.read_parquet(out / "funnel.parquet").sort_values("stage"),
        "files": pd.read_parquet(out / "files").sort_values("file_id"),
    }
    clips_before = sorted(p.name for p in (out / "clips").iterdir())
    assert (want["rejected"]["reason"] == "duplicate").sum() >= 2

    # Cut the run off: three of its seven input shards never committed, the run never finished.
    markers = sorted((out / SHARDS_DIR / "files").glob("shard-*.parquet"))
    assert len(markers) == 7
    for marker in markers[:3]:
        marker.unlink()
    for table in ("files", "rejected", "clips.parquet", "funnel.parquet"):
        target = out / table
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    run = json.loads((out / "_run.json").read_text())
    (out / "_run.json").write_text(json.dumps({**run, "status": "running"}))

    # The resumed run writes clips.parquet through parts of 4 clips spilled to disk (what a corpus
    # of more than clean.CLIPS_PER_PART clips does): the same file, in the same order.
    monkeypatch.setattr(clean, "CLIPS_PER_PART", 4)
    assert main(args) == 0
    in_file = pd.read_parquet(out / "clips.parquet")
    assert list(in_file["clip_id"]) == sorted(in_file["clip_id"]) and len(in_file) > 8
    assert list(in_file.columns) == list(want["clips"].columns)
    got = {
        "clips": pd.read_parquet(out / "clips.parquet").sort_values("clip_id"),
        "rejected": pd.read_parquet(out / "rejected").sort_values("clip_id"),
        "funnel": pd.read_parquet(out / "funnel.parquet").sort_values("stage"),
        "files": pd.read_parquet(out / "files").sort_values("file_id"),
    }
    for name, frame in want.items():
        pd.testing.assert_frame_equal(
            got[name].reset_index(drop=True), frame.reset_index(drop=True), check_like=True
        )
    assert sorted(p.name for p in (out / "clips").iterdir()) == clips_before
    record = json.loads((out / "_run.json").read_text())
    assert record["status"] == "complete" and record["counts"]["skipped_committed"] == 4
    assert record["counts"]["errors"] == 1

    before = _snapshot(out)  # finished: running it again writes nothing
    assert main(args) == 0
    assert _snapshot(out) == before


@pytest.mark.integration
def test_per_file_jobs_resume_too(ray_local, tmp_path, capsys, monkeypatch):
    from pipelines.jobs.vad import VadJob

    monkeypatch.setattr(VadJob, "commit_files", 1)  # one shard per file
    corpus = _corpus(tmp_path / "corpus", copies=1)
    out = tmp_path / "vad"
    args = ["vad", str(corpus), "--out", str(out), "-q"]
    assert main(args) == 0
    want = (
        pd.read_parquet(out / "segments").sort_values(["file_id", "start"]).reset_index(drop=True)
    )
    markers = sorted((out / SHARDS_DIR / "files").glob("shard-*.parquet"))
    assert len(markers) == 5
    for marker in markers[:2]:
        marker.unlink()  # those inputs were never committed
    run = json.loads((out / "_run.json").read_text())
    (out / "_run.json").write_text(json.dumps({**run, "status": "running"}))
    assert main(args) == 0
    got = pd.read_parquet(out / "segments").sort_values(["file_id", "start"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)
    record = json.loads((out / "_run.json").read_text())
    assert record["status"] == "complete" and record["counts"]["skipped_committed"] == 3
    before = _snapshot(out)
    assert main(args) == 0  # finished: nothing written
    assert _snapshot(out) == before
    assert main([*args, "--method", "energy"]) == 2  # another config
    assert "--overwrite" in capsys.readouterr().err
