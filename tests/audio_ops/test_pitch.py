"""Pitch and band cues of speakers (audio_ops.pitch)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import synthetic_voices, telephone_band, voice_samples

from audio_ops.diarization import DiarizationConfig, diarize_audio
from audio_ops.embedding import (
    EmbeddingConfig,
)
from audio_ops.linking import LinkingConfig, link_speakers
from audio_ops.pitch import band_energy, hz_to_semitones, is_wideband, window_pitch
from audio_ops.vad import SileroVAD


def _harmonic(f0: float, seconds: float = 1.5, rate: int = 16000) -> np.ndarray:
    """A voiced-like signal: 20 harmonics of ``f0`` with a 1/k spectrum and slight vibrato."""
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * f0 * (t + 0.0003 * np.sin(2 * np.pi * 5 * t))  # about 1 % vibrato
    return sum(np.sin(k * phase) / k for k in range(1, 21)).astype(np.float32) * 0.1


@pytest.mark.parametrize("f0", [85.0, 120.0, 210.0])
def test_pitch_of_wideband_and_telephone_voices(f0):
    wide = _harmonic(f0)
    narrow = telephone_band(wide)  # the fundamental (and, below 150 Hz, the 2nd harmonic) is gone
    for audio in (wide, narrow):
        measured = window_pitch(audio, np.array([0]), len(audio))[0]
        assert abs(measured - hz_to_semitones(f0)) < 0.3, (f0, measured)
    silence = np.zeros(24000, np.float32)
    assert np.isnan(window_pitch(silence, np.array([0]), 24000)[0])


def test_band_energy_tells_telephone_audio_from_wideband():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(16000 * 5).astype(np.float32) * 0.1
    assert is_wideband(band_energy(noise))
    assert not is_wideband(band_energy(telephone_band(noise)))
    assert is_wideband(band_energy(np.zeros(16000, np.float32)))


def test_pitch_keeps_apart_voices_the_embedding_confuses():
    """Two voices with the same embedding but 4 semitones apart, over 8 files: the pitch cue
    gives them two ids; a voice whose pitch wanders half a semitone keeps one."""
    voices, rng = synthetic_voices(1)
    who = np.tile([0, 1], 8)  # voice A and voice B in each of 8 files
    centroids = voice_samples(voices[[0, 0]], rng, who, spread=0.03)
    files = np.repeat(np.arange(8), 2)
    pitch = np.where(who == 0, 40.0, 44.0) + rng.uniform(-0.5, 0.5, len(who))
    seconds = np.full(len(who), 30.0)
    without = link_speakers(centroids, seconds, files, LinkingConfig(pitch_weight=0))
    assert len(np.unique(without)) > 2  # cannot-link makes them split arbitrarily
    labels = link_speakers(centroids, seconds, files, pitch=pitch)
    assert len(np.unique(labels)) == 2
    assert all(len(np.unique(labels[who == v])) == 1 for v in (0, 1))


def test_pitch_without_narrowband_embeddings(conv, campplus):
    """``narrowband: false`` keeps the pitch cue and embeds no band-limited windows; the
    file's narrowband centroids are then its full-band ones (linking compares full-band)."""
    from audio_ops.diarization import chunk_cues, cue_mask

    audio, _ = conv
    starts = np.arange(0.0, 20.0, 0.75)
    on = EmbeddingConfig(model="campplus", device="cpu")
    off = EmbeddingConfig(model="campplus", device="cpu", narrowband=False)
    assert cue_mask(starts, on).sum() == int(np.ceil(len(starts) / 4))
    assert not cue_mask(starts, off).any()
    narrow, pitch, _ = chunk_cues(campplus, audio[: 22 * 16000], starts, 0.0, off)
    assert narrow.shape == (0, 192)
    assert np.isfinite(pitch).mean() > 0.5  # most windows of the speech are voiced

    config = DiarizationConfig(embedding=off)
    result = diarize_audio(audio, config, SileroVAD(), campplus)
    assert np.isfinite(result.pitch).all()
    np.testing.assert_allclose(result.narrowband_centroids, result.centroids)
