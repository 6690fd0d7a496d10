"""The inventory operator without Ray: levels, loudness, flags, and one row per hostile file."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import make_hostile_corpus, tone, write_audio

from audio_ops.levels import LevelMeter
from audio_ops.probe import PROBE_COLUMNS, ProbeConfig, ProbeOperator, probe_file


@pytest.mark.parametrize("rate,channels", [(8000, 1), (16000, 1), (44100, 2), (48000, 2)])
def test_loudness_matches_pyloudnorm_when_fed_in_blocks(rate, channels):
    pyln = pytest.importorskip("pyloudnorm")
    rng = np.random.default_rng(rate)
    ramp = np.linspace(0.01, 1.0, rate * 6)[:, None]
    x = (0.1 * rng.standard_normal((rate * 6, channels)) * ramp).astype(np.float32)
    x[rate : 2 * rate] = 0.0
    meter = LevelMeter(rate, channels)
    for i in range(0, len(x), 7919):  # odd block size: state must carry across blocks
        meter.update(x[i : i + 7919])
    reference = pyln.Meter(rate).integrated_loudness(
        x.astype(np.float64) if channels > 1 else x[:, 0].astype(np.float64)
    )
    assert meter.result().loudness_lufs == pytest.approx(reference, abs=1e-6)


def test_level_statistics_of_known_signals():
    meter = LevelMeter(16000, 1)
    sine = tone(1.0, 16000, amplitude=0.5)
    meter.update(sine)
    meter.update(np.zeros((16000, 1), np.float32))
    clipped = np.clip(tone(1.0, 16000, amplitude=2.0), -1.0, 1.0)
    meter.update(clipped)
    stats = meter.result()
    assert stats.peak == pytest.approx(1.0)
    assert 0.3 < stats.silence_ratio < 0.36  # the second of zeros (and sine zero crossings)
    assert 0.2 < stats.clipping_ratio < 0.3  # about 2/3 of the clipped second sits at +-1
    assert math.isfinite(stats.rms_dbfs) and stats.rms_dbfs < 0


def test_probe_rows_for_hostile_files(tmp_path):
    expected = make_hostile_corpus(tmp_path)
    for rel, outcome in expected.items():
        row = probe_file(str(tmp_path / rel))
        assert set(PROBE_COLUMNS) <= set(row)
        if outcome == "ok":
            assert row["status"] == "ok", (rel, row["error"])
            assert row["error"] == ""
        else:
            assert row["status"] == "error", rel
            assert row["error_kind"] == outcome, (rel, row["error"])
            assert row["error"], rel


def test_digital_silence_is_flagged_not_an_error(tmp_path):
    path = write_audio(tmp_path / "silence.flac", np.zeros((16000 * 30, 1), np.float32), 16000)
    row = probe_file(str(path))
    assert row["status"] == "ok" and row["is_silent"] and row["silence_ratio"] == 1.0
    assert row["loudness_lufs"] == -math.inf and row["duration"] == 30.0


def test_probe_measures_a_stereo_mp3(tmp_path):
    path = write_audio(tmp_path / "x.mp3", tone(3.0, 44100, channels=2, amplitude=0.5), 44100)
    row = probe_file(str(path))
    assert row["status"] == "ok"
    assert (row["format"], row["codec"], row["sample_rate"], row["channels"]) == (
        "mp3",
        "mp3",
        44100,
        2,
    )
    assert abs(row["duration"] - 3.0) < 0.1
    assert -7.5 < row["peak_dbfs"] < -5.0
    assert -14 < row["loudness_lufs"] < -4


def test_operator_keeps_other_columns_and_row_count(tmp_path):
    make_hostile_corpus(tmp_path)
    paths = sorted(str(p) for p in tmp_path.rglob("*.wav"))
    batch = {"path": np.array(paths, dtype=object), "speaker": np.arange(len(paths))}
    out = ProbeOperator(ProbeConfig())(batch)
    assert len(out["status"]) == len(paths)
    np.testing.assert_array_equal(out["speaker"], batch["speaker"])


def test_config_validates():
    with pytest.raises(ValueError):
        ProbeConfig(min_duration=-1)
    with pytest.raises(ValueError):
        ProbeConfig(silent_ratio=0)
