"""Single-speaker check of training clips.

Two sources of "who speaks when inside the clip":

- ``embeddings`` (:func:`check_speakers`): the clip's speech is embedded in windows and clustered
  on its own, with the diarization operators;
- ``diarization`` (:func:`check_from_diarization`): the turns of a ``voxflow diarize`` run over the
  same files (the model that gives the clips their ``speaker_global``: segmentation-3.0 and CAM++
  by default), cut to the clip. Its turns may overlap, so speech of two people at once is seen.

A clip with one speaker passes; a clip with more is split at its speaker changes (``split``: each
single-speaker part that still meets the clip bounds becomes a clip of its own, the rest is
accounted as ``multi_speaker``) or dropped whole (``drop``). ``overlap_ratio`` is the share of the
clip's speech in overlapped turns (embeddings) or in frames two speakers share (diarization).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from audio_ops import ADDED_LATER
from audio_ops.clips import ClipConfig
from audio_ops.clustering import ClusteringConfig, cluster_speakers
from audio_ops.embedding import EmbeddingConfig, grid_windows
from audio_ops.io import ANALYSIS_RATE
from audio_ops.turns import TurnConfig, build_turns
from audio_ops.vad import speech_seconds as region_seconds


@dataclass(frozen=True)
class SpeakerCheckConfig:
    """Single-speaker check parameters.

    Args:
        embedding: speaker embedding model and windows.
        clustering: how speakers inside a clip are told apart (a clip is short: at most
            ``max_speakers`` voices are looked for).
        min_windows: clips with fewer embedded windows are taken as single-speaker.
        source: ``auto`` (``diarization`` where the clean run has ``speaker_ids``, else
            ``embeddings``; the clean run's config resolves it), ``embeddings`` or
            ``diarization`` (see the module docstring).
        min_speaker_seconds: with ``diarization``, a speaker with less speech than this inside a
            clip is not counted there (turn edges are imprecise by a few tenths of a second).
    """

    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    # Measured on 103 clips of the sample and a synthetic set (92 truly multi-speaker): spectral
    # clustering flagged 9 of the 11 single-speaker clips as multi-speaker (too few windows for
    # an eigengap); agglomerative at 0.3 found all 92 and no false alarm.
    clustering: ClusteringConfig = field(
        default_factory=lambda: ClusteringConfig(
            method="agglomerative", threshold=0.3, max_speakers=4
        )
    )
    min_windows: int = 4
    # Before this option the check always embedded: folders checked that way keep their hash.
    source: str = field(default="auto", metadata={**ADDED_LATER, "before": "embeddings"})
    min_speaker_seconds: float = field(default=0.5, metadata=ADDED_LATER)

    def __post_init__(self) -> None:
        if self.source not in ("auto", "embeddings", "diarization"):
            raise ValueError("speaker.source must be auto, embeddings or diarization")
        if not self.min_speaker_seconds >= 0:
            raise ValueError("speaker.min_speaker_seconds must be >= 0")


@dataclass
class SpeakerCheck:
    """The check of one clip.

    Args:
        speaker_count: speakers found.
        overlap_ratio: share of speech in turns flagged as overlapped.
        parts: ``(start, end)`` single-speaker spans (clip time, seconds) long enough to keep.
    """

    speaker_count: int
    overlap_ratio: float
    parts: list[tuple[float, float]]


def check_speakers(
    audio: np.ndarray,
    speech: np.ndarray,
    encoder,
    config: SpeakerCheckConfig,
    clip_config: ClipConfig,
) -> SpeakerCheck:
    """Speakers of one 16 kHz clip.

    Args:
        audio: the clip's samples.
        speech: ``(n, 2)`` speech regions in clip time.
        encoder: a loaded :class:`audio_ops.embedding.SpeakerEncoder`.
        config: embedding and clustering parameters.
        clip_config: bounds a split part must meet.
    """
    duration = len(audio) / ANALYSIS_RATE
    speech = np.asarray(speech, dtype=np.float64).reshape(-1, 2)
    starts = grid_windows(speech, 0.0, duration, config.embedding)
    speech_seconds = region_seconds(speech)
    if len(starts) < config.min_windows:
        return SpeakerCheck(1 if speech_seconds else 0, 0.0, [(0.0, duration)])
    window = int(round(config.embedding.window * ANALYSIS_RATE))
    embeddings = encoder.embed(audio, np.round(starts * ANALYSIS_RATE).astype(np.int64), window)
    labels = cluster_speakers(embeddings, config.clustering)
    turns = build_turns(speech, starts, config.embedding.window, labels, duration, TurnConfig())
    count = len({t.speaker for t in turns})
    overlapped = sum(t.end - t.start for t in turns if t.overlap)
    overlap_ratio = overlapped / speech_seconds if speech_seconds else 0.0
    if count <= 1:
        return SpeakerCheck(count, overlap_ratio, [(0.0, duration)])
    # Runs of one speaker, joined across pauses.
    runs: list[list[float]] = []
    for t in turns:
        if runs and runs[-1][2] == t.speaker:
            runs[-1][1] = t.end
        else:
            runs.append([t.start, t.end, t.speaker])
    # Each change of speaker is cut in a pause: the middle of the nearest gap between speech
    # regions (window votes place a change up to a window late), when one lies within 1 s. Where
    # none does (voices that overlap or follow without a pause), the part before ends at its last
    # pause and the part after starts at its first one; the speech between is not kept (it is
    # accounted as multi_speaker), so no kept clip starts or ends inside a word.
    gaps = (
        [(a[1] + b[0]) / 2 for a, b in zip(speech[:-1], speech[1:], strict=True)]
        if len(speech) > 1
        else []
    )
    starts_at: list[float | None] = [max(0.0, runs[0][0] - clip_config.margin)]
    ends_at: list[float | None] = []
    for previous, following in zip(runs[:-1], runs[1:], strict=True):
        change = (previous[1] + following[0]) / 2
        nearest = min(gaps, key=lambda g: abs(g - change), default=None)
        if nearest is not None and abs(nearest - change) <= 1.0:
            ends_at.append(nearest)
            starts_at.append(nearest)
            continue
        lo = starts_at[-1]
        before = [g for g in gaps if g < change and (lo is None or g > lo)]
        after = [g for g in gaps if change < g < following[1]]
        ends_at.append(max(before) if before else None)
        starts_at.append(min(after) if after else None)
    ends_at.append(min(duration, runs[-1][1] + clip_config.margin))
    parts = []
    for lo, hi in zip(starts_at, ends_at, strict=True):
        if lo is None or hi is None:
            continue
        if clip_config.min_seconds <= hi - lo <= clip_config.max_seconds:
            parts.append((float(lo), float(hi)))
    return SpeakerCheck(count, overlap_ratio, parts)


#: Frame step of :func:`check_from_diarization` (seconds).
FRAME = 0.01
#: How far a pause may lie inside the other speaker's diarized turn and still be taken as the
#: change of speaker (turn edges of the segmentation model are imprecise by about this much).
EDGE_TOLERANCE = 0.25


def check_from_diarization(
    turns,
    speech: np.ndarray,
    duration: float,
    config: SpeakerCheckConfig,
    clip_config: ClipConfig,
) -> SpeakerCheck:
    """Speakers of one clip from a diarization's turns.

    Args:
        turns: ``(start, end, speaker)`` of the diarized turns that meet the clip, in clip time
            (seconds; they may overlap one another and reach past the clip).
        speech: ``(n, 2)`` speech regions in clip time (the pauses a part may be cut in).
        duration: the clip's length (seconds).
        config: ``min_speaker_seconds``.
        clip_config: bounds a part must meet, and the margin kept at a clip's ends.

    Each 10 ms frame is given the speakers whose turns cover it; speakers with less than
    ``min_speaker_seconds`` in the clip are left out. A part is a run of frames that one speaker
    holds alone (pauses inside it kept), cut in a pause: the pause between the previous speaker's
    last turn and this one's first (within :data:`EDGE_TOLERANCE`), or else the first pause inside
    the run, the speech before it being left out (so no part starts inside a word or carries
    another voice). Frames two speakers share count in ``overlap_ratio`` and are in no part.
    """
    speech = np.asarray(speech, dtype=np.float64).reshape(-1, 2)
    n = max(int(np.ceil(duration / FRAME)), 1)
    held: dict[str, np.ndarray] = {}
    for start, end, speaker in turns:
        a = int(np.clip(np.floor(float(start) / FRAME), 0, n))
        b = int(np.clip(np.ceil(float(end) / FRAME), 0, n))
        if b > a:
            held.setdefault(str(speaker), np.zeros(n, dtype=bool))[a:b] = True
    counted = {s: f for s, f in held.items() if f.sum() * FRAME >= config.min_speaker_seconds}
    speakers = sorted(counted, key=lambda s: (-int(counted[s].sum()), s))
    if not speakers:
        return SpeakerCheck(0, 0.0, [(0.0, duration)])
    active = np.stack([counted[s] for s in speakers])  # (speakers, frames)
    voices = active.sum(axis=0)
    talking = int((voices > 0).sum())
    overlap_ratio = float((voices > 1).sum() / talking) if talking else 0.0
    if len(speakers) == 1:
        return SpeakerCheck(1, overlap_ratio, [(0.0, duration)])
    # Label per frame: -1 silence, -2 shared, else the one speaker's index.
    label = np.where(voices == 1, active.argmax(axis=0), np.where(voices > 1, -2, -1))
    # Runs of one speaker across silences, broken by another speaker or a shared frame.
    runs: list[list[int]] = []  # [speaker, first frame, last frame]
    for i in np.flatnonzero(label != -1):
        who = int(label[i])
        if runs and runs[-1][0] == who:
            runs[-1][2] = int(i)
        else:
            runs.append([who, int(i), int(i)])
    gaps = [
        (float(a[1]), float(b[0]))
        for a, b in zip(speech[:-1], speech[1:], strict=True)
        if b[0] > a[1]
    ]
    parts = []
    for k, (who, first, last) in enumerate(runs):
        if who < 0:
            continue
        lo_t, hi_t = first * FRAME, (last + 1) * FRAME
        if k == 0:
            lo: float | None = 0.0
        else:
            before = runs[k - 1][2] * FRAME + FRAME
            lo = _pause_between(gaps, before - EDGE_TOLERANCE, lo_t + EDGE_TOLERANCE, near=lo_t)
            if lo is None:  # no pause at the change: start at the run's first pause
                lo = next((_mid(g) for g in gaps if lo_t < _mid(g) < hi_t), None)
        if k == len(runs) - 1:
            hi: float | None = duration
        else:
            after = runs[k + 1][1] * FRAME
            hi = _pause_between(gaps, hi_t - EDGE_TOLERANCE, after + EDGE_TOLERANCE, near=hi_t)
            if hi is None:
                hi = next((_mid(g) for g in reversed(gaps) if lo_t < _mid(g) < hi_t), None)
        if lo is None or hi is None:
            continue
        if clip_config.min_seconds <= hi - lo <= clip_config.max_seconds:
            parts.append((float(lo), float(hi)))
    return SpeakerCheck(len(speakers), overlap_ratio, parts)


def _mid(gap: tuple[float, float]) -> float:
    return (gap[0] + gap[1]) / 2


def _pause_between(
    gaps: list[tuple[float, float]], lo: float, hi: float, near: float
) -> float | None:
    """The middle of the pause in ``[lo, hi]`` nearest to ``near`` (None if there is none)."""
    inside = [_mid(g) for g in gaps if lo <= _mid(g) <= hi]
    return min(inside, key=lambda m: abs(m - near)) if inside else None


@dataclass
class ClipPart:
    """A single-speaker part of a clip, cut out by :func:`split_clip`.

    Args:
        start: where it starts in the clip (seconds).
        end: where it ends in the clip (seconds).
        audio: its samples.
        speech: its speech regions (seconds, relative to the part's start).
    """

    start: float
    end: float
    audio: np.ndarray
    speech: np.ndarray

    @property
    def speech_seconds(self) -> float:
        """Seconds of speech in the part."""
        return region_seconds(self.speech)


def split_clip(
    audio: np.ndarray, sample_rate: int, speech: np.ndarray, check: SpeakerCheck, policy: str
) -> list[ClipPart]:
    """The parts of a multi-speaker clip that become clips of their own: its single-speaker
    spans under the ``split`` policy, none under ``drop``.

    Args:
        audio: the clip's samples.
        sample_rate: their rate.
        speech: the clip's speech regions (seconds, clip time), shape (n, 2).
        check: the clip's :func:`check_speakers` result.
        policy: ``clips.single_speaker`` (``split`` or ``drop``).
    """
    if policy != "split":
        return []
    parts = []
    for lo, hi in check.parts:
        a, b = int(round(lo * sample_rate)), int(round(hi * sample_rate))
        inside = speech[(speech[:, 1] > lo) & (speech[:, 0] < hi)] if speech.size else speech
        parts.append(ClipPart(lo, hi, audio[a:b], np.clip(inside, lo, hi) - lo))
    return parts
