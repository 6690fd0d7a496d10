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

from audio_ops.io import ANALYSIS_RATE


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


#: Seconds per frame of the energy profile that pause-less speech is split on.
ENERGY_FRAME = 0.05


def frame_energy(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mean square per 50 ms frame: the profile :func:`cut_clips` splits pause-less speech on
    (a 3-hour file is 216,000 numbers, so it is kept while streaming instead of the audio)."""
    frame = max(1, int(ENERGY_FRAME * sample_rate))
    n = len(audio) // frame
    return (
        np.square(np.asarray(audio[: n * frame], np.float64)).reshape(n, frame).mean(axis=1)
        if n
        else np.zeros(0)
    )


def _split_long(
    region: np.ndarray, energy: np.ndarray | None, max_seconds: float
) -> list[np.ndarray]:
    """Split one over-long region at its quietest frames (evenly without an energy profile)."""
    start, end = float(region[0]), float(region[1])
    pieces = int(np.ceil((end - start) / max_seconds))
    if energy is None or energy.size == 0 or pieces <= 1:
        edges = np.linspace(start, end, pieces + 1)
    else:
        edges = [start]
        for k in range(1, pieces):
            target = start + k * (end - start) / pieces
            # The quietest frame within +-20 % of a piece around the even cut.
            reach = 0.2 * (end - start) / pieces
            a = max(0, int((target - reach) / ENERGY_FRAME))
            b = min(len(energy), int((target + reach) / ENERGY_FRAME) + 1)
            best = a + int(np.argmin(energy[a:b])) if b > a else int(target / ENERGY_FRAME)
            edges.append(min(max((best + 0.5) * ENERGY_FRAME, edges[-1] + 1e-3), end))
        edges.append(end)
        edges = np.asarray(edges)
    return [np.array([edges[i], edges[i + 1]]) for i in range(len(edges) - 1)]


def _group_at_longest_pauses(
    pieces: list[np.ndarray], config: ClipConfig
) -> list[list[np.ndarray]]:
    """Group consecutive speech pieces into clips. When the next piece would make the clip too
    long, the clip is closed at its *longest* inner pause that leaves at least ``min_seconds``
    before it (a pause between turns, not the short gap between two words), and the pieces after
    that pause start the next clip."""
    groups: list[list[np.ndarray]] = []
    current: list[np.ndarray] = []
    for piece in pieces:
        if not current or piece[1] - current[0][0] + 2 * config.margin <= config.max_seconds:
            current.append(piece)
            continue
        best, best_gap = len(current), -1.0
        for k in range(1, len(current)):
            gap = current[k][0] - current[k - 1][1]
            if (
                current[k - 1][1] - current[0][0] + 2 * config.margin >= config.min_seconds
                and gap > best_gap
            ):
                best, best_gap = k, gap
        # Cutting before the new piece is as good when that pause is at least as long.
        if piece[0] - current[-1][1] >= best_gap:
            best = len(current)
        groups.append(current[:best])
        current = current[best:] + [piece]
        while current and current[-1][1] - current[0][0] + 2 * config.margin > config.max_seconds:
            groups.append([current.pop(0)])
    if current:
        groups.append(current)
    return groups


def cut_clips(
    regions: np.ndarray,
    duration: float,
    config: ClipConfig | None = None,
    energy: np.ndarray | None = None,
) -> list[Clip]:
    """Clips of a file from its speech regions.

    Args:
        regions: ``(n, 2)`` speech regions, seconds, sorted.
        duration: file length, seconds.
        config: bounds and margins.
        energy: the file's :func:`frame_energy` profile, to split pause-less speech at its
            quietest points (even splits without it).

    Returns:
        Clips in time order: candidates (``reason == ""``) and rejected ones with their reason.
    """
    config = config or ClipConfig()
    regions = np.asarray(regions, dtype=np.float64).reshape(-1, 2)
    pieces: list[np.ndarray] = []
    for region in regions:
        if region[1] - region[0] > config.max_seconds - 2 * config.margin:
            pieces.extend(_split_long(region, energy, config.max_seconds - 2 * config.margin))
        else:
            pieces.append(region)
    groups = _group_at_longest_pauses(pieces, config)
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


@dataclass
class FileSegmentation:
    """One file, scanned once: its length, speech, loudness and clips.

    Args:
        duration: seconds.
        regions: ``(n, 2)`` speech regions.
        loudness_lufs: integrated loudness of the 16 kHz mono stream.
        clips: candidate and rejected clips.
    """

    duration: float
    regions: np.ndarray
    loudness_lufs: float
    clips: list[Clip]


def segment_file(
    url: str, vad, vad_config, clip_config: ClipConfig, chunk_seconds: float = 60.0
) -> FileSegmentation:
    """Stream a file once at 16 kHz: VAD per chunk, loudness, the energy profile; then cut clips.

    Memory holds one chunk of audio plus one number per 50 ms, whatever the file's length.

    Args:
        url: a local path or fsspec URL.
        vad: a loaded VAD backend (``audio_ops.vad.make_vad``).
        vad_config: VAD thresholds.
        clip_config: clip bounds.
        chunk_seconds: audio decoded and scanned per step.
    """
    from audio_ops.diarization import ChunkConfig, chunk_regions, iter_chunks, merge_regions
    from audio_ops.levels import LoudnessMeter

    meter = LoudnessMeter(ANALYSIS_RATE, 1)
    regions, energies = [], []
    duration = 0.0
    for _, start, owned, samples, _ in iter_chunks(
        url, ChunkConfig(seconds=chunk_seconds, overlap=2.0)
    ):
        owned_samples = samples[: int(round(owned * ANALYSIS_RATE))]
        meter.update(owned_samples[:, None])
        energies.append(frame_energy(owned_samples, ANALYSIS_RATE))
        probs = vad.speech_probs(samples)
        regions.append(chunk_regions(probs, start, owned, vad_config, len(samples) / ANALYSIS_RATE))
        duration = start + len(owned_samples) / ANALYSIS_RATE
    merged = merge_regions(np.concatenate(regions)) if regions else np.zeros((0, 2))
    energy = np.concatenate(energies) if energies else np.zeros(0)
    clips = cut_clips(merged, duration, clip_config, energy=energy)
    return FileSegmentation(duration, merged, meter.result(), clips)


def clip_id(file_id: str, start: float) -> str:
    """Deterministic clip id: the file's id and the clip's start in milliseconds."""
    return f"{file_id}_{int(round(start * 1000)):09d}"
