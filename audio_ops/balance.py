"""Speakers in a training set: each clip's corpus-wide speaker from a diarization, and hours
balanced per speaker.

A TTS or ASR set in which one narrator holds half the hours teaches that narrator. Two pure
steps, run by ``voxflow clean`` over every kept clip once the corpus is done:

- :func:`assign_speakers`: each clip gets the global speaker (``speaker_global`` of a
  ``voxflow diarize`` run over the same files) who speaks most inside it, and the share of the
  clip's diarized speech that speaker holds (``speaker_share``: 1.0 for a clip one person speaks).
- :func:`balance`: per speaker, clips in a fixed pseudo-random order (SHA-1 of the clip id, so
  the kept ones are spread over the speaker's files, and the choice does not depend on the order
  files finished in) are kept until ``max_hours_per_speaker``; the rest are dropped with reason
  ``speaker_cap``. A speaker left with fewer than ``min_clips_per_speaker`` clips loses them all
  (reason ``speaker_min_clips``). Clips without a speaker are left alone.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class BalanceConfig:
    """Hours per speaker.

    Args:
        by: the clip column that names the speaker (``speaker_global`` needs ``speaker_ids``).
        max_hours_per_speaker: most hours kept per speaker (None: no cap).
        min_clips_per_speaker: fewest clips a speaker keeps (fewer: all dropped; 0: no floor).
    """

    by: str = "speaker_global"
    max_hours_per_speaker: float | None = None
    min_clips_per_speaker: int = 0

    def __post_init__(self) -> None:
        cap = self.max_hours_per_speaker
        if cap is not None and not (math.isfinite(cap) and cap > 0):
            raise ValueError("balance.max_hours_per_speaker must be a number > 0 (or null)")
        if self.min_clips_per_speaker < 0:
            raise ValueError("balance.min_clips_per_speaker must be >= 0")
        if not self.by:
            raise ValueError("balance.by must name a clip column")

    @property
    def active(self) -> bool:
        return self.max_hours_per_speaker is not None or self.min_clips_per_speaker > 0


def assign_speakers(
    clips: Sequence[tuple[str, float, float]],
    turns: Iterable[tuple[str, float, float, str]],
) -> list[tuple[str | None, float]]:
    """The global speaker of each clip, and that speaker's share of the clip's diarized speech.

    Args:
        clips: ``(file_id, start, end)`` per clip, in file time.
        turns: ``(file_id, start, end, speaker_global)`` of the diarization.

    Returns:
        ``(speaker_global, share)`` per clip; ``(None, 0.0)`` where no turn overlaps the clip.
        Ties go to the lower speaker id.
    """
    by_file: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for file_id, start, end, speaker in turns:
        if speaker:
            by_file[file_id].append((float(start), float(end), str(speaker)))
    out: list[tuple[str | None, float]] = []
    for file_id, start, end in clips:
        seconds: dict[str, float] = defaultdict(float)
        for t_start, t_end, speaker in by_file.get(file_id, ()):
            overlap = min(end, t_end) - max(start, t_start)
            if overlap > 0:
                seconds[speaker] += overlap
        total = sum(seconds.values())
        if total <= 0:
            out.append((None, 0.0))
            continue
        speaker = min(seconds, key=lambda s: (-seconds[s], s))
        out.append((speaker, seconds[speaker] / total))
    return out


def _order_key(clip_id: str) -> str:
    return hashlib.sha1(clip_id.encode("utf-8")).hexdigest()


def balance(rows: Sequence[dict[str, Any]], config: BalanceConfig) -> list[str]:
    """The reason each clip is dropped by the balance (``""``: kept).

    Args:
        rows: kept clips, each with ``clip_id``, ``duration`` (seconds) and ``config.by``.
        config: the caps.
    """
    return balance_columns(
        [r["clip_id"] for r in rows],
        [r.get("duration") for r in rows],
        [r.get(config.by) for r in rows],
        config,
    )


def balance_columns(
    clip_ids: Sequence[str],
    durations: Sequence[float | None],
    speakers: Sequence[Any],
    config: BalanceConfig,
) -> list[str]:
    """:func:`balance` on columns (what a corpus-wide pass holds: no row dictionaries).

    Args:
        clip_ids: each clip's id.
        durations: each clip's seconds (None: 0).
        speakers: each clip's ``config.by`` value (None, NaN or empty: no speaker, left alone).
        config: the caps.
    """
    if not len(clip_ids) == len(durations) == len(speakers):
        raise ValueError("clip_ids, durations and speakers differ in length")
    reasons = [""] * len(clip_ids)
    if not config.active:
        return reasons
    members_of: dict[Any, list[int]] = defaultdict(list)
    for i, speaker in enumerate(speakers):
        if speaker is None or (isinstance(speaker, float) and np.isnan(speaker)) or speaker == "":
            continue
        members_of[speaker].append(i)
    cap = config.max_hours_per_speaker
    for members in members_of.values():
        members.sort(key=lambda i: _order_key(str(clip_ids[i])))
        kept = []
        if cap is None:
            kept = members
        else:
            hours = 0.0
            for i in members:
                clip_hours = float(durations[i] or 0.0) / 3600
                if hours + clip_hours <= cap + 1e-12:
                    hours += clip_hours
                    kept.append(i)
                else:
                    reasons[i] = "speaker_cap"
        if len(kept) < config.min_clips_per_speaker:
            for i in kept:
                reasons[i] = "speaker_min_clips"
    return reasons
