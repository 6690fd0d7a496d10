"""The Python API (``pipelines.api``) and voxflow operators inside a user's own Ray Data pipeline
(``examples/ray_data_operators.py``), on the sample corpus."""

from __future__ import annotations

import importlib.util
import os
import tempfile

import numpy as np
import pytest
from helpers import REPO, SAMPLE

from pipelines import api
from pipelines.engine.config import ConfigError

AUDIO = SAMPLE / "audio"


def test_diarize_returns_its_tables_and_its_run_folder_resumes(ray_local, tmp_path):
    result = api.diarize(str(AUDIO), max_speakers=4)  # no out: a temporary run folder
    assert os.path.isdir(result.out) and result.out.startswith(tempfile.gettempdir())
    assert (result.summary.inputs, result.summary.ok, result.summary.errors) == (5, 5, 0)
    assert set(result.table_names) == {"files", "errors", "segments", "speakers"}
    segments = result.table("segments")
    assert segments["speaker_global"].notna().all() and len(segments) > 20
    assert set(segments["file_id"]) == set(result.table("files")["file_id"])
    assert result.tables()["speakers"]["file_count"].max() >= 2  # a voice found in several files
    with pytest.raises(KeyError, match="writes no table 'clips'"):
        result.table("clips")
    # The CLI's run folder: the same call into it again resumes and does nothing.
    again = api.diarize([str(AUDIO)], out=result.out, max_speakers=4)
    assert again.summary.skipped == 5 and again.table("segments").equals(segments)


def test_config_as_a_mapping_with_keyword_overrides(ray_local, tmp_path):
    # The keyword (files shorter than 100 s fail) wins over the mapping (0.5 s).
    result = api.probe(
        AUDIO,
        tmp_path / "probe",
        config={"probe": {"min_duration": 0.5}},
        probe__min_duration=100.0,
    )
    files = result.table("files")
    assert len(files) == 5 and (files["status"] == "error").all()
    assert result.summary.errors == 5 and set(result.table("errors")["error_kind"]) == {"too_short"}


def test_a_bad_option_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="vad.onsett"):
        api.vad(AUDIO, tmp_path / "vad", vad__onsett=0.6)
    with pytest.raises(ConfigError, match="expected a YAML path, a mapping or a VadRunConfig"):
        api.vad(AUDIO, tmp_path / "vad", config=3)
    with pytest.raises(ValueError, match="unknown job 'diarise'"):
        api.run("diarise", AUDIO)
    assert not (tmp_path / "vad").exists()


def _example():
    spec = importlib.util.spec_from_file_location(
        "ray_data_operators", REPO / "examples" / "ray_data_operators.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_voxflow_operators_in_a_users_ray_data_pipeline(ray_local):
    """The example's pipeline keeps the files whose first 20 s score at least 15 dB, with the
    scores the operator gives when called directly; unreadable inputs are dropped after the
    probe, and no audio comes back."""
    from audio_ops.io import load_audio
    from audio_ops.quality import QualityConfig, QualityOperator

    example = _example()
    paths = sorted(str(p) for p in AUDIO.iterdir() if p.suffix != ".md")
    rows = example.clean_files([*paths, str(AUDIO / "not_there.wav")], min_snr_db=15.0)
    scorer = QualityOperator(QualityConfig(squim=None))
    expected = {}
    for path in paths:
        audio = load_audio(path, 16000, end=20.0)[0]
        batch = {
            "audio": np.array([audio.tobytes()], dtype=object),
            "sample_rate": np.array([16000]),
        }
        expected[path] = float(scorer(batch)["snr_db"][0])
    kept = {p for p, snr in expected.items() if snr >= 15.0}
    assert {os.path.basename(p) for p in set(paths) - kept} == {"conv02_noisy_2spk.flac"}
    assert {r["path"] for r in rows} == kept
    for row in rows:
        assert row["snr_db"] == pytest.approx(expected[row["path"]])
        assert "audio" not in row and row["status"] == "ok" and row["sample_rate"] == 16000


@pytest.mark.parametrize(
    "job", ["probe", "diarize", "clean", "transcribe", "vad", "enhance", "separate"]
)
def test_every_table_a_job_returns_is_one_it_owns(job, tmp_path):
    """The tables ``Result`` reads are the job's own declaration, and each lies among what the
    job owns under ``out`` (so ``--overwrite`` clears it)."""
    from pipelines.api import _job_class

    cls = _job_class(job)
    instance = cls(str(tmp_path), cls.config_class())
    assert set(cls.table_locations().values()) <= {"files", "errors", *instance.outputs}
