"""Quality scores against known truths (speech mixed with noise at set SNRs, band-limited speech,
hard clipping, the sample's RTTM), TorchSquim plumbing with a random model of the real class, and
loudness standardisation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SAMPLE

from audio_ops.io import load_audio, resample
from audio_ops.levels import CLIP_LEVEL, LevelMeter
from audio_ops.models import sha256_of
from audio_ops.packing import pack
from audio_ops.quality import (
    QUALITY_COLUMNS,
    QualityConfig,
    QualityOperator,
    QualityScorer,
    _cached_squim,
    clip_quality,
    effective_bandwidth,
    enhancement_delta,
    wada_snr,
)
from audio_ops.standardize import (
    StandardizeConfig,
    apply_gain,
    loudness_gain_db,
    measure_loudness,
    standardize,
)
from audio_ops.vad import VadConfig

STEM = "conv01_clean_3spk"
RATE = 16000
NO_SQUIM = QualityConfig(squim=None)


#: torch on one thread in these tests (see conftest), as a pipeline actor runs it.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    audio, rate = load_audio(str(SAMPLE / "audio" / f"{STEM}.flac"))
    assert rate == RATE
    return audio


@pytest.fixture(scope="module")
def rttm_regions() -> np.ndarray:
    rows = []
    for line in (SAMPLE / "rttm" / f"{STEM}.rttm").read_text().splitlines():
        fields = line.split()
        start, length = float(fields[3]), float(fields[4])
        rows.append((start, start + length))
    return np.array(sorted(rows))


def regions_mask(regions: np.ndarray, frames: int) -> np.ndarray:
    mask = np.zeros(frames, bool)
    for start, end in regions:
        mask[int(round(start * RATE)) : int(round(end * RATE))] = True
    return mask


def with_noise(clean: np.ndarray, snr_db: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``clean`` plus white noise scaled so the whole-clip SNR is exactly ``snr_db``."""
    noise = np.random.default_rng(seed).standard_normal(clean.size)
    noise *= math.sqrt(
        np.sum(clean.astype(np.float64) ** 2) / np.sum(noise**2) / 10 ** (snr_db / 10)
    )
    return (clean + noise).astype(np.float32), noise


# Measured on the sample (seeds 0 and 1): WADA -0.6/+0.4/+3.0 dB at 0/10/20 dB; vad_snr within
# 0.3 dB (Silero regions) and 0.05 dB (RTTM regions) of the active-speech SNR.
@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_snr_estimates_track_the_true_snr(speech, rttm_regions, snr_db):
    mixed, noise = with_noise(speech, snr_db, seed=int(snr_db))
    mask = regions_mask(rttm_regions, speech.size)
    active_snr = 10 * math.log10(np.mean(speech[mask] ** 2) / np.mean(noise[mask] ** 2))

    detected = clip_quality(mixed, RATE, config=NO_SQUIM)
    given = clip_quality(mixed, RATE, rttm_regions, config=NO_SQUIM)
    wada_error = detected["snr_db"] - snr_db
    print(
        f"true {snr_db:.0f} dB (active {active_snr:.2f}): wada {detected['snr_db']:.2f}, "
        f"vad_snr silero {detected['vad_snr_db']:.2f}, rttm {given['vad_snr_db']:.2f}"
    )
    assert abs(wada_error) < 4.0
    assert abs(given["vad_snr_db"] - active_snr) < 0.5
    assert abs(detected["vad_snr_db"] - active_snr) < 1.0
    assert given["snr_db"] == detected["snr_db"]  # WADA ignores the regions


def test_wada_edge_cases(speech):
    assert wada_snr(speech) == 100.0  # digital silence between turns: the top of the table
    assert math.isnan(wada_snr(np.zeros(100)))
    noise = np.random.default_rng(0).standard_normal(RATE * 10)
    assert wada_snr(noise) < -15  # pure Gaussian noise sits at the table's floor


def test_energy_vad_is_selectable_and_fine_on_clean_speech(speech, rttm_regions):
    scores = clip_quality(speech, RATE, config=QualityConfig(squim=None, vad=VadConfig("energy")))
    truth = regions_mask(rttm_regions, speech.size).mean()
    assert abs(scores["speech_ratio"] - truth) < 0.05


def test_speech_ratio_against_the_rttm(speech, rttm_regions):
    truth = regions_mask(rttm_regions, speech.size).mean()
    given = clip_quality(speech, RATE, rttm_regions, config=NO_SQUIM)
    assert given["speech_ratio"] == pytest.approx(truth, abs=1e-4)
    detected = clip_quality(speech, RATE, config=NO_SQUIM)
    assert abs(detected["speech_ratio"] - truth) < 0.05  # Silero with padding: 0.78 vs 0.76
    assert detected["duration"] == pytest.approx(45.0)


def test_bandwidth_of_band_limited_and_full_band_speech(speech):
    narrow = resample(resample(speech, RATE, 8000), 8000, RATE)
    narrow_hz = effective_bandwidth(narrow, RATE)
    full_hz = effective_bandwidth(speech, RATE)
    print(f"bandwidth: 8k round trip {narrow_hz:.0f} Hz, full band {full_hz:.0f} Hz")
    assert 3600 < narrow_hz < 4100
    assert full_hz > 6000
    assert clip_quality(narrow, RATE, config=NO_SQUIM)["bandwidth_hz"] == narrow_hz
    # Level does not matter; silence has none.
    assert effective_bandwidth(0.01 * narrow, RATE) == pytest.approx(narrow_hz, abs=1)
    assert math.isnan(effective_bandwidth(np.zeros(RATE), RATE))


def test_clipping_ratio_of_hard_clipped_audio(speech):
    driven = speech.astype(np.float64) * 4.0
    clipped = np.clip(driven, -1.0, 1.0).astype(np.float32)
    truth = np.mean(np.abs(driven) >= CLIP_LEVEL)
    ratio = clip_quality(clipped, RATE, config=NO_SQUIM)["clipping_ratio"]
    assert ratio == pytest.approx(truth, rel=1e-9)
    assert ratio > 0.001
    assert clip_quality(speech, RATE, config=NO_SQUIM)["clipping_ratio"] == 0.0


def test_loudness_equals_the_level_meter(speech):
    meter = LevelMeter(RATE, 1)
    for i in range(0, speech.size, 12345):  # streamed in blocks: same filter state, same value
        meter.update(speech[i : i + 12345, None])
    scores = clip_quality(speech, RATE, config=NO_SQUIM)
    assert scores["loudness_lufs"] == pytest.approx(meter.result().loudness_lufs, abs=1e-9)
    stereo = np.stack([speech, 0.5 * speech], axis=1)
    meter = LevelMeter(RATE, 2)
    meter.update(stereo)
    assert clip_quality(stereo, RATE, config=NO_SQUIM)["loudness_lufs"] == pytest.approx(
        meter.result().loudness_lufs, abs=1e-9
    )


def test_enhancement_delta():
    before = {"snr_db": 5.0, "vad_snr_db": 8.0, "squim_pesq": math.nan, "duration": 3.0}
    after = {"snr_db": 15.5, "vad_snr_db": 100.0, "squim_pesq": 2.0, "duration": 3.0}
    delta = enhancement_delta(before, after)
    assert delta["snr_db"] == 10.5 and delta["vad_snr_db"] == 92.0
    assert math.isnan(delta["squim_pesq"])
    assert "duration" not in delta


@pytest.fixture(scope="module")
def squim_weights(tmp_path_factory) -> Path:
    from torchaudio.models import squim_objective_base

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("squim") / "squim_random.pt"
    torch.save(squim_objective_base().state_dict(), path)
    return path


def test_squim_plumbing_with_a_random_model(squim_weights, speech):
    config = QualityConfig(
        squim=str(squim_weights), squim_sha256=sha256_of(squim_weights), squim_segment_seconds=1.0
    )
    scorer = QualityScorer(config)
    assert scorer.squim_error == ""
    scores = scorer.score(resample(speech[: int(2.5 * RATE)], RATE, 24000), 24000)
    assert scores["squim_error"] == ""
    assert all(math.isfinite(scores[k]) for k in ("squim_stoi", "squim_pesq", "squim_si_sdr"))


def test_squim_pin_mismatch_leaves_nan_with_the_reason(squim_weights, speech):
    config = QualityConfig(squim=str(squim_weights), squim_sha256="ab" * 32)
    scores = QualityScorer(config).score(speech[:RATE], RATE)
    assert "SHA-256 mismatch" in scores["squim_error"]
    assert math.isnan(scores["squim_stoi"]) and math.isfinite(scores["snr_db"])


def test_unavailable_squim_weights_give_nan_and_a_reason(tmp_path, monkeypatch, speech):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("VOXFLOW_CACHE", str(tmp_path / "cache"))
    _cached_squim.cache_clear()  # one load attempt per process: forget any earlier one
    scores = clip_quality(speech[: 2 * RATE], RATE, config=QualityConfig())
    _cached_squim.cache_clear()
    assert "squim_objective_dns2020.pth" in scores["squim_error"]
    assert all(math.isnan(scores[k]) for k in ("squim_stoi", "squim_pesq", "squim_si_sdr"))
    assert math.isfinite(scores["loudness_lufs"])


def test_quality_operator(speech, rttm_regions):
    operator = QualityOperator(NO_SQUIM)
    clips = [speech[: 10 * RATE], speech[10 * RATE : 20 * RATE]]
    regions = rttm_regions[rttm_regions[:, 1] <= 10.0]
    batch = {
        "audio": np.array([c.tobytes() for c in clips], dtype=object),
        "sample_rate": np.array([RATE, RATE]),
        "speech": np.array([pack(regions), b""], dtype=object),
        "clip_id": np.array(["a", "b"], dtype=object),
    }
    out = operator(batch)
    assert set(QUALITY_COLUMNS) <= set(out) and list(out["clip_id"]) == ["a", "b"]
    assert out["audio"] is batch["audio"]
    first = clip_quality(clips[0], RATE, regions, config=NO_SQUIM)
    second = clip_quality(clips[1], RATE, config=NO_SQUIM)
    for name, kind in QUALITY_COLUMNS.items():
        if kind is float:
            np.testing.assert_allclose(out[name], [first[name], second[name]], equal_nan=True)
    assert list(out["squim_error"]) == ["disabled", "disabled"]
    # Rows without a speech column at all: regions are detected.
    out = operator({k: v for k, v in batch.items() if k != "speech"})
    assert out["speech_ratio"][1] == pytest.approx(second["speech_ratio"])


def test_quality_config_validation():
    with pytest.raises(ValueError, match="clip_level"):
        QualityConfig(clip_level=1.5)
    with pytest.raises(ValueError, match="bandwidth"):
        QualityConfig(bandwidth_floor_db=0)
    with pytest.raises(ValueError, match="Squim"):
        QualityConfig(squim="torchaudio:SQUIM_SUBJECTIVE")


# ----------------------------------------------------------------------------------------------
# Standardisation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.3, 1.0])
@pytest.mark.parametrize("rate", [16000, 24000])
def test_standardize_hits_the_target_loudness(speech, scale, rate):
    stereo_44k = resample(np.stack([speech, 0.8 * speech], axis=1) * scale, RATE, 44100)
    config = StandardizeConfig(sample_rate=rate, target_lufs=-23.0)
    out, info = standardize(stereo_44k, 44100, config)
    assert out.ndim == 1 and out.dtype == np.float32
    assert out.size == pytest.approx(speech.size * rate / RATE, abs=2)
    assert abs(info["loudness_after_lufs"] - config.target_lufs) < 0.5
    assert info["loudness_after_lufs"] == pytest.approx(measure_loudness(out, rate), abs=1e-9)
    assert not info["silent"] and not info["peak_limited"]
    assert info["gain_db"] == pytest.approx(-23.0 - info["loudness_before_lufs"], abs=1e-9)


def test_standardize_clamps_the_gain_both_ways(speech):
    config = StandardizeConfig(max_gain_db=6.0, peak_limit_dbfs=0.0)
    quiet, info = standardize(speech * 0.01, RATE, config)  # about -61 LUFS: +38 dB wanted
    assert info["gain_db"] == 6.0
    assert info["loudness_after_lufs"] == pytest.approx(info["loudness_before_lufs"] + 6, abs=0.1)
    hot, info = standardize(speech * 4.0, RATE, StandardizeConfig(target_lufs=-40.0, max_gain_db=6))
    assert info["gain_db"] == -6.0


def test_standardize_respects_the_peak_limit(speech):
    config = StandardizeConfig(target_lufs=-10.0, peak_limit_dbfs=-1.0)
    out, info = standardize(speech, RATE, config)
    assert info["peak_limited"]
    assert 20 * math.log10(np.abs(out).max()) <= -1.0 + 1e-4
    assert info["loudness_after_lufs"] < -10.0


def test_silence_gets_no_gain_and_is_flagged():
    out, info = standardize(np.zeros(RATE * 2, np.float32), RATE, StandardizeConfig())
    assert info["silent"] and info["gain_db"] == 0.0 and not np.any(out)
    assert loudness_gain_db(-math.inf, StandardizeConfig()) == 0.0
    assert loudness_gain_db(math.nan, StandardizeConfig()) == 0.0


def test_two_pass_gain_matches_the_one_shot_path(speech):
    """A long file's path: stream the level meter, compute the gain, apply it block by block."""
    config = StandardizeConfig(target_lufs=-20.0)
    meter = LevelMeter(RATE, 1)
    for i in range(0, speech.size, 40000):
        meter.update(speech[i : i + 40000, None])
    stats = meter.result()
    gain = loudness_gain_db(stats.loudness_lufs, config, peak=stats.peak)
    blocks = [apply_gain(speech[i : i + 40000], gain) for i in range(0, speech.size, 40000)]
    one_shot, info = standardize(speech, RATE, config)
    assert gain == pytest.approx(info["gain_db"], abs=1e-9)
    np.testing.assert_allclose(np.concatenate(blocks), one_shot, rtol=1e-6, atol=1e-9)


def test_standardize_config_validation():
    with pytest.raises(ValueError, match="sample_rate"):
        StandardizeConfig(sample_rate=0)
    with pytest.raises(ValueError, match="max_gain_db"):
        StandardizeConfig(max_gain_db=-1)
    with pytest.raises(ValueError, match="peak_limit_dbfs"):
        StandardizeConfig(peak_limit_dbfs=1.0)
    with pytest.raises(ValueError, match="target_lufs"):
        StandardizeConfig(target_lufs=5.0)
