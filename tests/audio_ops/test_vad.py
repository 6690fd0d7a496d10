"""Voice activity detection (audio_ops.vad) on the sample corpus."""

from __future__ import annotations

import numpy as np
import pytest

from audio_ops.vad import SileroVAD, VadConfig, detect_speech, probs_to_regions
from pipelines.reports.evaluate import RttmTurn


def _speech_mask(turns, duration, step=0.01):
    mask = np.zeros(int(duration / step) + 1, dtype=bool)
    for t in turns:
        mask[int(t.start / step) : int((t.start + t.duration) / step)] = True
    return mask


def test_hysteresis_binarisation():
    frame = 0.032
    probs = np.zeros(200, np.float32)
    probs[10:40] = 0.9  # speech
    probs[40:43] = 0.4  # between offset and onset: still speech (hysteresis)
    probs[43:45] = 0.1  # a 64 ms pause: bridged (min_silence 0.1)
    probs[45:60] = 0.9
    probs[100:103] = 0.9  # 96 ms burst: shorter than min_speech, dropped
    regions = probs_to_regions(probs, VadConfig(pad=0.0), frame_seconds=frame)
    np.testing.assert_allclose(regions, [[10 * frame, 60 * frame]])
    padded = probs_to_regions(probs, VadConfig(pad=0.5), frame_seconds=frame)
    np.testing.assert_allclose(padded, [[0.0, 60 * frame + 0.5]])  # clamped at the start


@pytest.mark.parametrize("backend", ["silero", "energy"])
def test_vad_finds_the_reference_speech(conv, backend):
    audio, turns = conv
    config = VadConfig(backend=backend)
    regions = detect_speech(audio, config)
    duration = len(audio) / 16000
    ref = _speech_mask(turns, duration)
    hyp = _speech_mask([RttmTurn("", s, e - s, "") for s, e in regions], duration)
    n = min(len(ref), len(hyp))
    recall = (ref[:n] & hyp[:n]).sum() / ref[:n].sum()
    precision = (ref[:n] & hyp[:n]).sum() / hyp[:n].sum()
    assert recall > 0.95 and precision > 0.9, (recall, precision)


def test_vad_on_silence_and_noise():
    silence = np.zeros(16000 * 5, np.float32)
    assert len(detect_speech(silence, VadConfig())) == 0
    assert len(detect_speech(silence, VadConfig(backend="energy"))) == 0
    rng = np.random.default_rng(0)
    noise = (0.05 * rng.standard_normal(16000 * 5)).astype(np.float32)
    assert len(detect_speech(noise, VadConfig())) == 0  # Silero: steady noise is not speech


def test_silero_probabilities_equal_the_packages_own_sequence_path(conv):
    from silero_vad import load_silero_vad

    audio, _ = conv
    ours = SileroVAD().speech_probs(audio[: 16000 * 20])
    theirs = load_silero_vad(sequence=True).audio_forward(audio[: 16000 * 20])
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
