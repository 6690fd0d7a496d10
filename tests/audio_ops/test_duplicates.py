"""Near-duplicate audio on real voices: re-encoded, gain-changed and shifted copies of LibriSpeech
utterances are grouped with their originals; different utterances of one speaker never are."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from helpers import REPO

from audio_ops.duplicates import (
    FP_HOP,
    FP_RATE,
    DuplicateConfig,
    bit_error_rate,
    candidate_pairs,
    fingerprint,
    group_duplicates,
    minhash,
)
from audio_ops.io import load_audio, resample
from benchmarks.duplicates import mp3

VOICES = REPO / "examples" / "real" / "voices" / "speakers"
RATE = 16000


@functools.cache
def utterances() -> tuple[tuple[str, np.ndarray], ...]:
    """(speaker, audio) of the 9 real LibriSpeech utterances (3 speakers x 3)."""
    out = []
    for path in sorted(VOICES.glob("libri_*/*.flac")):
        out.append((path.parent.name, load_audio(str(path), RATE)[0]))
    return tuple(out)


def copies(audio: np.ndarray) -> dict[str, np.ndarray]:
    """What a corpus holds twice: re-encoded at another rate, gain changed, shifted by 0.5 s."""
    half = RATE // 2
    return {
        "mp3_22k_32kbps": mp3(audio, 22050, 32),
        "gain_-10dB": audio * 10 ** (-10 / 20),
        "later_0.5s_mp3_24k": np.concatenate([np.zeros(half, np.float32), mp3(audio, 24000, 48)]),
        "cut_0.5s_gain_+6dB_mp3_16k": mp3(audio[half:], 16000, 24) * 2.0,
    }


def test_fingerprint_shape_and_gain_invariance():
    _, audio = utterances()[0]
    prints = fingerprint(audio, RATE)
    assert prints.dtype == np.uint32
    assert prints.size == pytest.approx(audio.size / FP_HOP, abs=20)
    np.testing.assert_array_equal(fingerprint(audio * 0.1, RATE), prints)
    # Another rate of the same audio: resampled to 16 kHz first, nearly the same bits.
    ber, offset = bit_error_rate(prints, fingerprint(resample(audio, RATE, 44100), 44100), 4, 0.9)
    assert ber < 0.05 and offset == 0
    assert fingerprint(np.zeros(100, np.float32), RATE).size == 0
    with pytest.raises(ValueError, match="mono"):
        fingerprint(np.zeros((2, RATE), np.float32), RATE)


def test_copies_match_and_different_utterances_of_one_speaker_do_not():
    """Measured: copies 0.00-0.10 bit error rate, different utterances of one speaker >= 0.44;
    the threshold is 0.35."""
    config = DuplicateConfig()
    shift = int(round(config.max_shift * FP_RATE / FP_HOP))
    items = utterances()
    for _, audio in items[::4]:
        original = fingerprint(audio, RATE)
        for name, copy in copies(audio).items():
            ber, offset = bit_error_rate(original, fingerprint(copy, RATE), shift, 0.5)
            assert ber < 0.2, name
            if "0.5s" in name:
                assert abs(abs(offset) - 31) <= 1, (name, offset)  # 0.5 s = 31.25 frames
    for i, (speaker_i, a) in enumerate(items):
        for speaker_j, b in items[i + 1 :]:
            if speaker_i == speaker_j:
                ber, _ = bit_error_rate(fingerprint(a, RATE), fingerprint(b, RATE), shift, 0.5)
                assert ber > 0.4


def test_a_corpus_with_copies_is_grouped_exactly():
    items = utterances()
    clips, truth = [], []
    for index, (_, audio) in enumerate(items):
        clips.append(audio)
        truth.append(index)
        if index % 2 == 0:  # every other utterance is in the corpus more than once
            for copy in copies(audio).values():
                clips.append(copy)
                truth.append(index)
    prints = [fingerprint(c, RATE) for c in clips]
    group, keeper, pairs = group_duplicates(prints)
    # Same group exactly when the same utterance: precision and recall 1.0 on this set.
    for i in range(len(clips)):
        for j in range(i + 1, len(clips)):
            same = truth[i] == truth[j]
            assert (group[i] >= 0 and group[i] == group[j]) == same, (i, j)
    kept = sorted(set(keeper))
    assert sorted(truth[k] for k in kept) == list(range(len(items)))  # one clip per utterance
    for i, k in enumerate(keeper):  # the longest copy is the one kept
        assert len(prints[k]) >= len(prints[i])
    assert all(ber <= DuplicateConfig().max_ber for _, _, ber in pairs)


def test_minhash_candidates_and_degenerate_input():
    a = fingerprint(utterances()[0][1], RATE)
    hashes = np.stack([minhash(a), minhash(a.copy()), minhash(np.zeros(0, np.uint32))])
    assert hashes.dtype == np.uint32 and hashes.shape == (3, 24)
    assert (hashes[2] == 0).all()  # an empty clip is not indexed
    assert set(candidate_pairs(hashes)) == {(0, 1)}
    assert group_duplicates([]) == ([], [], [])
    group, keeper, _ = group_duplicates([np.zeros(0, np.uint32)] * 3)
    assert group == [-1, -1, -1] and keeper == [0, 1, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_ber": 0.6}, "max_ber"),
        ({"max_shift": -1.0}, "max_shift"),
        ({"min_overlap": 0.0}, "min_overlap"),
        ({"keys": 0}, "keys"),
    ],
)
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DuplicateConfig(**kwargs)
