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
    MAX_POSTS,
    DuplicateConfig,
    DuplicateIndex,
    bit_error_rate,
    candidate_pairs,
    fingerprint,
    group_duplicates,
    landmarks,
    minhash,
    partitions_for,
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


@functools.cache
def corpus_with_copies() -> tuple[list[np.ndarray], list[int]]:
    """The 9 utterances, every other one followed by its four :func:`copies`; ``truth``: the
    source utterance of each clip."""
    clips, truth = [], []
    for index, (_, audio) in enumerate(utterances()):
        clips.append(audio)
        truth.append(index)
        if index % 2 == 0:  # every other utterance is in the corpus more than once
            for copy in copies(audio).values():
                clips.append(copy)
                truth.append(index)
    return clips, truth


def grouped_by_index(clips, partitions=16, order=None, config=None, buffer=1 << 21):
    prints = [fingerprint(c, RATE) for c in clips]
    with DuplicateIndex(len(clips), config, partitions=partitions, buffer=buffer) as index:
        for i in order if order is not None else range(len(clips)):
            index.add(int(i), prints[i], landmarks(clips[i], RATE))
        group, keeper, pairs = index.group()
    return prints, list(group), list(keeper), pairs


@pytest.mark.parametrize("method", ["landmarks", "minhash"])
def test_a_corpus_with_copies_is_grouped_exactly(method):
    """The landmark index (on disk) and the MinHash method of older folders, same answer."""
    items = utterances()
    clips, truth = corpus_with_copies()
    prints, group, keeper, pairs = grouped_by_index(clips, config=DuplicateConfig(index=method))
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


def test_the_index_answer_does_not_depend_on_partitions_order_or_buffer(tmp_path):
    """Postings spilled to many partition files in any order give the groups one partition in
    memory gives; the index's files are removed when it closes."""
    clips, truth = corpus_with_copies()
    _, group, keeper, _ = grouped_by_index(clips, partitions=1)
    shuffled = np.random.default_rng(7).permutation(len(clips))
    _, group2, keeper2, _ = grouped_by_index(clips, partitions=8, order=shuffled, buffer=500)
    assert (group2, keeper2) == (group, keeper)
    assert len(set(keeper)) == len(utterances())
    with DuplicateIndex(3, folder=str(tmp_path), partitions=4, buffer=10) as index:
        audio = utterances()[0][1]
        marks = landmarks(audio, RATE)
        assert marks.dtype == np.uint64 and marks.size > 100 * audio.size / RATE
        index.add(0, fingerprint(audio, RATE), marks)
        files = list(next(tmp_path.iterdir()).iterdir())
        assert any(f.name.startswith("posts-") for f in files)  # spilled, not held
    assert list(tmp_path.iterdir()) == []


def test_a_clip_repeated_hundreds_of_times_is_one_group():
    """A jingle in every episode, at its own level each time: each of its keys is held by more
    than MAX_POSTS clips, which then vote with their neighbours only; all copies are found."""
    audio = utterances()[3][1][: 3 * RATE]
    gains = np.random.default_rng(0).uniform(0.3, 1.0, MAX_POSTS + 20)
    _, group, keeper, _ = grouped_by_index([audio * g for g in gains])
    assert set(group) == {0} and len(set(keeper)) == 1


def test_a_chain_of_partial_matches_never_drops_a_clip_for_one_it_does_not_match():
    """x, then x with y 5 dB under it, then y: the mixture matches both (bit error rates about
    0.25 and 0.28), x and y do not match (0.45). The mixture is dropped for x; y is kept, not
    dropped for x through the mixture."""
    items = utterances()
    length = min(a.size for _, a in items)
    x, y = items[0][1][:length], items[3][1][:length]
    y = y * (np.sqrt(np.mean(x**2)) / np.sqrt(np.mean(y**2))) * 10 ** (-5 / 20)
    prints, group, keeper, pairs = grouped_by_index([x, x + y, y])
    shift = int(round(DuplicateConfig().max_shift * FP_RATE / FP_HOP))
    assert bit_error_rate(prints[0], prints[2], shift, 0.5)[0] > DuplicateConfig().max_ber
    assert {(i, j) for i, j, _ in pairs} >= {(1, 2)}  # the mixture matched y too
    assert keeper == [0, 0, 2] and group == [0, 0, -1]


def test_landmarks_ignore_gain_and_follow_the_rate():
    audio = utterances()[1][1]
    marks = landmarks(audio, RATE)
    np.testing.assert_array_equal(landmarks(audio * 0.05, RATE), marks)
    other = landmarks(resample(audio, RATE, 44100), 44100)
    assert np.intersect1d(other >> np.uint64(32), marks >> np.uint64(32)).size > 0.5 * marks.size
    assert landmarks(np.zeros(RATE, np.float32), RATE).size == 0  # digital silence
    assert landmarks(np.ones(100, np.float32), RATE).size == 0  # shorter than a window
    with pytest.raises(ValueError, match="mono"):
        landmarks(np.zeros((2, RATE), np.float32), RATE)


def test_index_input_errors_and_empty_clips():
    with pytest.raises(ValueError, match="power of two"):
        DuplicateIndex(2, partitions=3)
    with DuplicateIndex(2) as index:
        with pytest.raises(IndexError):
            index.add(2, np.zeros(0, np.uint32))
        index.add(0, np.zeros(0, np.uint32), np.zeros(0, np.uint64))
        index.add(1, np.zeros(0, np.uint32), np.zeros(0, np.uint64))
        group, keeper, pairs = index.group()
    assert list(group) == [-1, -1] and list(keeper) == [0, 1] and pairs == []
    with DuplicateIndex(0) as index:
        group, keeper, pairs = index.group()
    assert group.size == 0 and keeper.size == 0
    assert partitions_for(0) == 1 and partitions_for(10_000 * 3600) == 2048


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
        ({"index": "lsh"}, "index"),
        ({"min_votes": 0}, "min_votes"),
    ],
)
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DuplicateConfig(**kwargs)
