"""Linking file speakers across a corpus and matching known speakers (audio_ops.linking)."""

from __future__ import annotations

import tracemalloc

import numpy as np
from helpers import synthetic_voices, voice_samples

from audio_ops.linking import LinkingConfig, link_speakers, match_enrolled


def test_linking_respects_files_and_scales():
    from sklearn.metrics import adjusted_rand_score

    voices, rng = synthetic_voices(60)
    files = np.repeat(np.arange(400), 3)
    who = np.concatenate([rng.choice(60, 3, replace=False) for _ in range(400)])
    x = voice_samples(voices, rng, who, spread=0.1)
    exact = link_speakers(x, np.ones(len(x)), files, LinkingConfig(block_size=5000))
    blocked = link_speakers(x, np.ones(len(x)), files, LinkingConfig(block_size=200))
    for labels in (exact, blocked):
        assert adjusted_rand_score(who, labels) > 0.95
        for f in range(400):  # speakers of one file never share a global id
            assert len(set(labels[files == f])) == 3
    np.testing.assert_array_equal(
        exact, link_speakers(x, np.ones(len(x)), files, LinkingConfig(block_size=5000))
    )


def test_blocked_linking_carries_the_cues():
    """The k-means blocks and their second pass use the narrowband view and pitch as exact
    linking does: a fifth of the files are narrowband, whose full-band centroids a channel
    shifts (plain linking splits those voices), and their band-limited centroids do not."""
    from sklearn.metrics import adjusted_rand_score

    voices, rng = synthetic_voices(60)
    narrow_voices = synthetic_voices(60, seed=1)[0]
    files = np.repeat(np.arange(400), 3)
    who = np.concatenate([rng.choice(60, 3, replace=False) for _ in range(400)])
    wide = np.repeat(rng.random(400) >= 0.2, 3)
    channel = rng.standard_normal(voices.shape[1])
    shifted = voices[who] + np.where(wide, 0.0, 1.0)[:, None] * channel / np.linalg.norm(channel)
    x = voice_samples(
        shifted / np.linalg.norm(shifted, axis=1, keepdims=True), rng, np.arange(len(who)), 0.1
    )
    narrow = voice_samples(narrow_voices, rng, who, spread=0.1)
    pitch = rng.uniform(30, 50, 60)[who] + rng.uniform(-0.3, 0.3, len(who))
    cues = {"narrowband": narrow, "wideband": wide, "pitch": pitch}
    plain = link_speakers(x, np.ones(len(x)), files, LinkingConfig(block_size=5000))
    exact = link_speakers(x, np.ones(len(x)), files, LinkingConfig(block_size=5000), **cues)
    blocked = link_speakers(x, np.ones(len(x)), files, LinkingConfig(block_size=200), **cues)
    assert adjusted_rand_score(who, plain) < 0.9
    for labels in (exact, blocked):
        assert adjusted_rand_score(who, labels) > 0.95
        for f in range(400):
            assert len(set(labels[files == f])) == 3


def test_linking_memory_is_bounded_by_the_block():
    voices, rng = synthetic_voices(300, dim=32)
    n = 20000
    x = voice_samples(voices, rng, rng.integers(0, 300, n), spread=0.1)
    tracemalloc.start()
    labels = link_speakers(x, np.ones(n), np.arange(n) // 4, LinkingConfig(block_size=1000))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < n * n * 8 / 20  # far below the O(N^2) distance matrix (3.2 GB)
    assert 250 <= len(np.unique(labels)) <= 400


def test_enrollment_matches_one_to_one():
    voices, rng = synthetic_voices(5)
    centroids = voice_samples(voices, rng, np.arange(5), spread=0.05)
    known = np.stack([voices[3], voices[1], -voices[0]])
    match = match_enrolled(centroids, known, threshold=0.3)
    assert match.tolist() == [-1, 1, -1, 0, -1]
