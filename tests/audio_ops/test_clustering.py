"""Per-file speaker clustering (audio_ops.clustering)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from helpers import synthetic_voices, voice_samples

from audio_ops.clustering import ClusteringConfig, cluster_speakers


@pytest.mark.parametrize("method", ["spectral", "agglomerative"])
def test_clustering_recovers_speakers(method):
    from sklearn.metrics import adjusted_rand_score

    voices, rng = synthetic_voices(4)
    who = np.repeat([0, 1, 2, 3, 1, 0], 30)
    x = voice_samples(voices, rng, who)
    labels = cluster_speakers(x, ClusteringConfig(method=method))
    assert len(np.unique(labels)) == 4 and adjusted_rand_score(who, labels) > 0.95
    assert labels[0] == 0  # numbered by first appearance
    two = cluster_speakers(x, ClusteringConfig(method=method, num_speakers=2))
    assert len(np.unique(two)) == 2
    at_most = cluster_speakers(x, ClusteringConfig(method=method, max_speakers=3))
    assert len(np.unique(at_most)) <= 3
    at_least = cluster_speakers(
        voice_samples(voices, rng, np.zeros(40, int)),
        ClusteringConfig(method=method, min_speakers=2),
    )
    assert len(np.unique(at_least)) >= 2


def test_small_spurious_clusters_are_dissolved():
    voices, rng = synthetic_voices(3)
    who = np.array([0] * 60 + [1] * 60 + [2] * 3)  # three stray windows of a third voice
    labels = cluster_speakers(
        voice_samples(voices, rng, who), ClusteringConfig(method="agglomerative")
    )
    assert len(np.unique(labels)) == 2


def test_long_files_cluster_in_bounded_memory():
    voices, rng = synthetic_voices(3)
    who = np.repeat([0, 1, 2, 0], 3000)  # 12,000 windows: 2.5 h at a 0.75 s hop
    x = voice_samples(voices, rng, who)
    tracemalloc.start()
    labels = cluster_speakers(x, ClusteringConfig(max_windows=2000))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(np.unique(labels)) == 3 and (labels[:3000] == labels[0]).all()
    assert peak < 12000**2 * 8 / 4  # well under one n x n float64 matrix
