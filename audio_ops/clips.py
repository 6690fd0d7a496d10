"""Cutting speech into training clips that start and end in pauses.

Given a file's speech regions (from the VAD), clips are built greedily: consecutive regions join
while the clip stays under ``max_seconds``; a clip is closed in the middle of the pause that ends
it (never inside speech when a pause exists), and one shorter than ``min_seconds`` is kept only if
joining a neighbour would break ``max_seconds`` — it is then dropped with reason ``too_short``.
A single region longer than ``max_seconds`` (speech without a pause) is split at its quietest
moments, so even then the cut lands where the signal is lowest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClipConfig:
    """Clip cutting parameters.

    Args:
        min_seconds: shortest clip kept.
        max_seconds: longest clip.
        margin: silence kept on each side of the speech, at most half the pause (seconds).
        single_speaker: ``split`` a clip at a change of speaker, ``drop`` it with reason
            ``multi_speaker``, or ``off``.
    """

    min_seconds: float = 3.0
    max_seconds: float = 30.0
    margin: float = 0.2
    single_speaker: str = "split"

    def __post_init__(self) -> None:
        if not 0 < self.min_seconds < self.max_seconds:
            raise ValueError("need 0 < clips.min_seconds < clips.max_seconds")
        if self.margin < 0:
            raise ValueError("clips.margin must be >= 0")
        if self.single_speaker not in ("split", "drop", "off"):
            raise ValueError("clips.single_speaker must be split, drop or off")


@dataclass
class Clip:
    """A span of a file.

    Args:
        start: seconds.
        end: seconds.
        speech: ``(n, 2)`` speech regions inside the clip (file time).
        reason: empty when the clip is a candidate, else why it was not kept (``too_short``).
    """

    start: float
    end: float
    speech: np.ndarray
    reason: str = ""

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.end - self.start


def _split_long(
    region: np.ndarray, audio: np.ndarray | None, rate: int, max_seconds: float
) -> list[np.ndarray]:
    """Split one over-long region at its quietest 50 ms frames (or evenly without audio)."""
    start, end = float(region[0]), float(region[1])
    pieces = int(np.ceil((end - start) / max_seconds))
    if audio is None or pieces <= 1:
        edges = np.linspace(start, end, pieces + 1)
    else:
        frame = int(0.05 * rate)
        lo, hi = int(start * rate), int(end * rate)
        segment = audio[lo:hi]
        n = len(segment) // frame
        energy = (
            np.square(segment[: n * frame].reshape(n, frame)).mean(axis=1) if n else np.zeros(0)
        )
        edges = [start]
        for k in range(1, pieces):
            target = start + k * (end - start) / pieces
            # Search the quietest frame within +-20 % of a piece around the even cut.
            window = 0.2 * (end - start) / pieces
            a = max(0, int((target - window - start) / 0.05))
            b = min(n, int((target + window - start) / 0.05) + 1)
            best = a + int(np.argmin(energy[a:b])) if b > a else int((target - start) / 0.05)
            edges.append(start + (best + 0.5) * 0.05)
        edges.append(end)
        edges = np.asarray(edges)
    return [np.array([edges[i], edges[i + 1]]) for i in range(len(edges) - 1)]


def cut_clips(
    regions: np.ndarray,
    duration: float,
    config: ClipConfig | None = None,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
) -> list[Clip]:
    """Clips of a file from its speech regions.

    Args:
        regions: ``(n, 2)`` speech regions, seconds, sorted.
        duration: file length, seconds.
        config: bounds and margins.
        audio: the file's samples, to split pause-less speech at its quietest points.
        sample_rate: rate of ``audio``.

    Returns:
        Clips in time order: candidates (``reason == ""``) and rejected ones with their reason.
    """
    config = config or ClipConfig()
    regions = np.asarray(regions, dtype=np.float64).reshape(-1, 2)
    pieces: list[np.ndarray] = []
    for region in regions:
        if region[1] - region[0] > config.max_seconds - 2 * config.margin:
            pieces.extend(
                _split_long(region, audio, sample_rate, config.max_seconds - 2 * config.margin)
            )
        else:
            pieces.append(region)
    groups: list[list[np.ndarray]] = []
    for piece in pieces:
        if groups and piece[1] - groups[-1][0][0] + 2 * config.margin <= config.max_seconds:
            groups[-1].append(piece)
        else:
            groups.append([piece])
    clips = []
    for i, group in enumerate(groups):
        first, last = group[0][0], group[-1][1]
        prev_end = groups[i - 1][-1][1] if i > 0 else 0.0
        next_start = groups[i + 1][0][0] if i + 1 < len(groups) else duration
        # The cut goes at most `margin` into the pause, and never past its middle.
        start = max(first - config.margin, (prev_end + first) / 2 if i > 0 else 0.0, 0.0)
        end = min(
            last + config.margin,
            (last + next_start) / 2 if i + 1 < len(groups) else duration,
            duration,
        )
        clip = Clip(start=float(start), end=float(end), speech=np.stack(group))
        if clip.duration < config.min_seconds:
            clip.reason = "too_short"
        clips.append(clip)
    return clips


def boundaries_in_silence(clips: list[Clip], regions: np.ndarray) -> float:
    """Share of clip boundaries that fall outside every speech region (a quality check)."""
    regions = np.asarray(regions, dtype=np.float64).reshape(-1, 2)
    points = [p for c in clips for p in (c.start, c.end)]
    if not points:
        return 1.0
    inside = [np.any((regions[:, 0] < p) & (p < regions[:, 1])) for p in points]
    return 1.0 - float(np.mean(inside))
