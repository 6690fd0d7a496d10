"""``voxflow --version`` and ``voxflow doctor``: what a user checks first on a new machine."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from audio_ops import models
from pipelines.cli import main
from pipelines.doctor import run_doctor


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"voxflow {version('voxflow')}"


def test_doctor_finds_every_default_model_offline(capsys):
    assert main(["doctor"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in models.BUNDLED:
        (line,) = [x for x in lines if f"model {name} " in x]
        assert line.startswith("ok ") and models.BUNDLED[name].package in line
    assert any(x.startswith("ok ") and "DeepFilterNet3" in x for x in lines)
    assert any("gpu (torch)" in x for x in lines) and any(x.startswith("ok   ray:") for x in lines)
    assert lines[-1] == "everything voxflow needs is here"


def test_doctor_fails_on_altered_weights_and_unreachable_storage(tmp_path, monkeypatch):
    entry = models.BUNDLED["silero-vad-sequence"]
    monkeypatch.setitem(
        models.BUNDLED,
        "silero-vad-sequence",
        models.BundledWeights(entry.package, entry.relative_path, "0" * 64, entry.license),
    )
    text, code = run_doctor(storage=str(tmp_path / "no-such-folder"))
    assert code == 1
    failed = [x for x in text.splitlines() if x.startswith("FAIL")]
    assert len(failed) == 2
    assert "silero-vad-sequence" in failed[0] and "SHA-256 mismatch" in failed[0]
    assert failed[1].startswith("FAIL  storage:") and "no-such-folder" in failed[1]
    assert text.splitlines()[-1] == "2 required checks failed"
