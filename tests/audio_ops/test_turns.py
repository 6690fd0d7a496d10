"""Speaker turns from window labels (audio_ops.turns)."""

from __future__ import annotations

import tracemalloc

import numpy as np

from audio_ops.turns import TurnConfig, build_turns


def test_turns_from_window_labels():
    regions = np.array([[0.0, 6.0], [7.0, 9.0]])
    starts = np.arange(0, 8.5, 0.75)
    labels = np.array([0 if s < 3.0 else (1 if s < 6.5 else 0) for s in starts])
    labels[2] = 1  # one flicker inside speaker 0's speech
    turns = build_turns(regions, starts, 1.5, labels, 10.0, TurnConfig(min_duration=0.8))
    assert [t.speaker for t in turns] == [0, 1, 0]
    assert turns[0].start == 0.0 and 3.5 < turns[0].end < 4.5
    assert turns[1].end == 6.0 and turns[2].start == 7.0 and turns[2].end == 9.0
    assert all(0 <= t.confidence <= 1 for t in turns)


def test_turns_of_a_three_hour_file_in_bounded_memory():
    duration = 3 * 3600.0
    regions = np.stack([np.arange(0, duration, 10.0), np.arange(0, duration, 10.0) + 6.0], axis=1)
    starts = np.concatenate([np.arange(s, e - 1.5, 0.75) for s, e in regions])
    labels = (starts // 600).astype(np.int64) % 3
    tracemalloc.start()
    turns = build_turns(regions, starts, 1.5, labels, duration)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(turns) >= len(regions)
    assert peak < 400 * 2**20  # a frames x windows matrix would be tens of GB
