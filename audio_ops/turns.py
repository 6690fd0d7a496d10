"""Window labels -> speaker turns.

Every embedded window votes for its speaker over the 10 ms frames it covers; a speech frame takes
the label with the most votes (frames no window covers take the nearest window's label); runs of
one label become turns, inside the VAD's speech regions only. Then smoothing: same-speaker turns
separated by a pause shorter than ``fill_gap`` are joined, and a turn shorter than
``min_duration`` that touches a neighbour is absorbed by it.

Each turn gets a ``confidence`` — the mean share of votes its label won over its frames — and an
``overlap`` flag when windows of two speakers disagree over at least ``overlap_share`` of it (where
two voices overlap, or a fast exchange happens inside one window).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESOLUTION = 0.01  # seconds per frame of the vote grid


@dataclass(frozen=True)
class TurnConfig:
    """Turn building parameters.

    Args:
        fill_gap: join same-speaker turns across pauses shorter than this (seconds).
        min_duration: absorb touching turns shorter than this into a neighbour (seconds).
        overlap_share: share of contested frames that flags a turn ``overlap``.
    """

    fill_gap: float = 0.2
    min_duration: float = 0.3
    overlap_share: float = 0.3

    def __post_init__(self) -> None:
        if min(self.fill_gap, self.min_duration) < 0 or not 0 < self.overlap_share <= 1:
            raise ValueError("turns: fill_gap and min_duration >= 0, overlap_share in (0, 1]")


@dataclass
class Turn:
    """One speaker turn.

    Args:
        start: seconds.
        end: seconds.
        speaker: file-local speaker index.
        confidence: mean vote share of the label over the turn, in [0, 1].
        overlap: windows of two speakers disagree over much of the turn.
    """

    start: float
    end: float
    speaker: int
    confidence: float
    overlap: bool


def build_turns(
    regions: np.ndarray,
    window_starts: np.ndarray,
    window_length: float,
    labels: np.ndarray,
    duration: float,
    config: TurnConfig | None = None,
) -> list[Turn]:
    """Turns of one file from its speech regions and labelled windows.

    Args:
        regions: ``(n, 2)`` speech regions, seconds.
        window_starts: ``(m,)`` window start times, seconds.
        window_length: window length, seconds.
        labels: ``(m,)`` speaker labels of the windows.
        duration: file length, seconds.
        config: smoothing parameters.
    """
    config = config or TurnConfig()
    regions = np.asarray(regions, dtype=np.float64).reshape(-1, 2)
    window_starts = np.asarray(window_starts, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if regions.size == 0 or window_starts.size == 0:
        return []
    n_frames = int(np.ceil(duration / RESOLUTION)) + 1
    n_labels = int(labels.max()) + 1
    first = np.clip((window_starts / RESOLUTION).astype(np.int64), 0, n_frames)
    last = np.clip(((window_starts + window_length) / RESOLUTION).astype(np.int64), 0, n_frames)
    # Difference arrays: add each window's vote over its span in O(windows + frames).
    delta = np.zeros((n_frames + 1, n_labels), dtype=np.float32)
    np.add.at(delta, (first, labels), 1.0)
    np.add.at(delta, (last, labels), -1.0)
    votes = np.cumsum(delta, axis=0)[:n_frames]
    total = votes.sum(axis=1)
    frame_label = votes.argmax(axis=1)
    uncovered = np.flatnonzero(total <= 0)
    if uncovered.size:
        # Nearest window centre by binary search: O(frames log windows), never a
        # frames x windows matrix (that is 37 GB for a 3-hour file).
        order = np.argsort(window_starts + window_length / 2, kind="stable")
        centres = (window_starts + window_length / 2)[order]
        times = uncovered * RESOLUTION
        right = np.clip(np.searchsorted(centres, times), 0, len(centres) - 1)
        left = np.clip(right - 1, 0, len(centres) - 1)
        nearest = np.where(
            np.abs(times - centres[left]) <= np.abs(centres[right] - times), left, right
        )
        frame_label[uncovered] = labels[order[nearest]]
    share = np.where(total > 0, votes.max(axis=1) / np.maximum(total, 1e-9), 0.5)
    second = np.sort(votes, axis=1)[:, -2] if n_labels > 1 else np.zeros(n_frames)
    contested = (total > 0) & (second >= 0.4 * np.maximum(total, 1e-9))

    turns: list[Turn] = []
    for start, end in regions:
        lo, hi = int(round(start / RESOLUTION)), min(int(round(end / RESOLUTION)), n_frames)
        i = lo
        while i < hi:
            j = i
            while j < hi and frame_label[j] == frame_label[i]:
                j += 1
            turns.append(
                Turn(
                    start=i * RESOLUTION,
                    end=min(j * RESOLUTION, duration),
                    speaker=int(frame_label[i]),
                    confidence=float(share[i:j].mean()),
                    overlap=bool(contested[i:j].mean() >= config.overlap_share),
                )
            )
            i = j
    return _smooth(turns, config)


def _merge(a: Turn, b: Turn) -> Turn:
    la, lb = a.end - a.start, b.end - b.start
    w = la + lb if la + lb > 0 else 1.0
    return Turn(
        start=a.start,
        end=max(a.end, b.end),
        speaker=a.speaker,
        confidence=(a.confidence * la + b.confidence * lb) / w,
        overlap=a.overlap or b.overlap,
    )


def _smooth(turns: list[Turn], config: TurnConfig) -> list[Turn]:
    # Absorb short turns that touch a neighbour (a label flicker inside continuous speech).
    changed = True
    while changed and len(turns) > 1:
        changed = False
        for k, turn in enumerate(turns):
            if turn.end - turn.start >= config.min_duration:
                continue
            prev = turns[k - 1] if k > 0 and abs(turns[k - 1].end - turn.start) < 1e-6 else None
            nxt = (
                turns[k + 1]
                if k + 1 < len(turns) and abs(turns[k + 1].start - turn.end) < 1e-6
                else None
            )
            target = max(
                (t for t in (prev, nxt) if t is not None),
                key=lambda t: t.end - t.start,
                default=None,
            )
            if target is None:
                continue
            turn.speaker = target.speaker
            changed = True
        merged: list[Turn] = []
        for turn in turns:
            if merged and merged[-1].speaker == turn.speaker and turn.start - merged[-1].end < 1e-6:
                merged[-1] = _merge(merged[-1], turn)
            else:
                merged.append(turn)
        turns = merged
    # Join same-speaker turns across short pauses.
    joined: list[Turn] = []
    for turn in turns:
        if (
            joined
            and joined[-1].speaker == turn.speaker
            and turn.start - joined[-1].end < config.fill_gap
        ):
            joined[-1] = _merge(joined[-1], turn)
        else:
            joined.append(turn)
    return joined
