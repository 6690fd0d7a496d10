"""What a user sees on the terminal during a run: the progress line and the summary only; Ray's
and the libraries' messages go to ``OUT/_run.log``, which ``_run.json`` names (``--verbose``
leaves them on the terminal)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import REPO, SAMPLE


def _voxflow(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.integration
def test_a_run_prints_progress_and_summary_only(tmp_path):
    out = tmp_path / "vad"
    done = _voxflow("vad", str(SAMPLE / "audio"), "--out", str(out), "--num-cpus", "2")
    assert done.returncode == 0, done.stderr
    stderr = done.stderr.splitlines()
    assert stderr and all(line.startswith("vad: ") for line in stderr), done.stderr
    assert done.stdout.startswith("voxflow vad: 5 files (5 ok, 0 errors)")
    run = json.loads((out / "_run.json").read_text())
    assert run["log"] == str(out / "_run.log")
    log = (out / "_run.log").read_text()
    assert log.strip()  # Ray had things to say; they are kept, not lost
    assert not any(line.startswith("vad: ") for line in log.splitlines())

    verbose = tmp_path / "verbose"
    done = _voxflow("--verbose", "vad", str(SAMPLE / "audio"), "--out", str(verbose))
    assert done.returncode == 0, done.stderr
    assert "log" not in json.loads((verbose / "_run.json").read_text())
    assert not (verbose / "_run.log").exists()
    assert any(not line.startswith("vad: ") for line in done.stderr.splitlines())
