"""Speakers in a training set: each clip's corpus-wide speaker from a diarization, and hours
balanced per speaker.

A TTS or ASR set in which one narrator holds half the hours teaches that narrator. Two pure
steps, run by ``voxflow clean`` over every kept clip once the corpus is done:

- :func:`assign_speakers`: each clip gets the global speaker (``speaker_global`` of a
  ``voxflow diarize`` run over the same files) who speaks most inside it, and the share of the
  clip's diarized speech that speaker holds (``speaker_share``: 1.0 for a clip one person speaks).
  The corpus's turns are held in a :class:`TurnIndex` (28 bytes a turn, each clip's turns found
  by binary search).
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


class TurnIndex:
    """Speaker turns of many files in flat arrays, for "which turns overlap this span" queries.

    A corpus of 10,000 hours has about 12 million diarized turns: as Python tuples that is well
    over a gigabyte in every process that holds them; here it is 28 bytes a turn (two float64
    times, a running maximum of the ends, an int32 speaker code) plus one dict entry per file.

    Within a file the turns are sorted by start; ``reach[i]``, the largest end among a file's
    turns up to ``i``, never decreases, so the turns that may overlap ``[start, end)`` are one
    slice found by two binary searches. Turns without a speaker (empty or null) are left out.

    Args:
        file_ids: file id of each turn (a sequence of str, or a pyarrow string or dictionary
            array / chunked array).
        starts, ends: the turn's times in its file, seconds.
        speakers: its speaker (same kinds as ``file_ids``).
    """

    def __init__(self, file_ids: Any, starts: Any, ends: Any, speakers: Any):
        files: dict[str, int] = {}
        speaker_names: dict[str, int] = {}
        self._build(
            _codes(file_ids, files),
            list(files),
            np.asarray(starts, dtype=np.float64),
            np.asarray(ends, dtype=np.float64),
            _codes(speakers, speaker_names),
            list(speaker_names),
        )

    @classmethod
    def from_batches(
        cls, batches: Iterable[Any], speaker: str, rows: int | None = None
    ) -> TurnIndex:
        """From pyarrow record batches (or tables) with ``file_id``, ``start``, ``end`` and the
        ``speaker`` column, read one at a time: only the compact arrays are kept, never a whole
        table or a string per turn (read the id columns dictionary-encoded).

        Args:
            batches: the batches.
            speaker: the column that names each turn's speaker.
            rows: how many rows the batches hold, if known (a parquet footer says): the arrays
                are then filled in place instead of gathered and joined (half the peak).
        """
        files: dict[str, int] = {}
        speaker_names: dict[str, int] = {}
        if rows is None:
            batches = list(batches)  # pyarrow batches: their buffers, no Python object per row
            rows = sum(len(batch) for batch in batches)
        cols = (
            np.empty(rows, dtype=np.int32),
            np.empty(rows, dtype=np.float64),
            np.empty(rows, dtype=np.float64),
            np.empty(rows, dtype=np.int32),
        )
        at = 0
        for batch in batches:
            n = len(batch)
            if at + n > rows:
                raise ValueError(f"TurnIndex: the batches hold more than the {rows} rows given")
            cols[0][at : at + n] = _codes(batch["file_id"], files)
            cols[1][at : at + n] = _floats(batch["start"])
            cols[2][at : at + n] = _floats(batch["end"])
            cols[3][at : at + n] = _codes(batch[speaker], speaker_names)
            at += n
        if at != rows:
            raise ValueError(f"TurnIndex: the batches hold {at} rows, not the {rows} given")
        index = cls.__new__(cls)
        index._build(cols[0], list(files), cols[1], cols[2], cols[3], list(speaker_names))
        return index

    def _build(
        self,
        files: np.ndarray,
        file_names: list[str],
        starts: np.ndarray,
        ends: np.ndarray,
        speakers: np.ndarray,
        speaker_names: list[str],
    ) -> None:
        if not len(files) == len(starts) == len(ends) == len(speakers):
            raise ValueError("TurnIndex: file_ids, starts, ends and speakers differ in length")
        self.speakers = speaker_names
        named = np.array([bool(name) for name in speaker_names] + [False], dtype=bool)
        keep = named[speakers] & (files >= 0)  # code -1 (null) picks the False at the end
        if not keep.all():
            files, starts, ends, speakers = files[keep], starts[keep], ends[keep], speakers[keep]
        del keep
        # A diarize run writes each file's turns together and in time order: then no sort (and
        # none of its copies) is needed.
        if not _grouped_in_order(files, starts):
            order = np.lexsort((starts, files))
            files, starts, ends, speakers = (
                files[order],
                starts[order],
                ends[order],
                speakers[order],
            )
            del order
        self.starts = np.ascontiguousarray(starts, dtype=np.float64)
        self.ends = np.ascontiguousarray(ends, dtype=np.float64)
        self.speaker_codes = np.ascontiguousarray(speakers, dtype=np.int32)
        edges = [0, *(np.flatnonzero(np.diff(files)) + 1).tolist(), len(files)]
        self.reach = np.empty_like(self.ends)
        self.files: dict[str, tuple[int, int]] = {}
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            if lo < hi:
                np.maximum.accumulate(self.ends[lo:hi], out=self.reach[lo:hi])
                self.files[file_names[int(files[lo])]] = (lo, hi)

    @classmethod
    def from_tuples(cls, turns: Iterable[tuple[str, float, float, str]]) -> TurnIndex:
        """From ``(file_id, start, end, speaker)`` tuples."""
        cols: tuple[list, ...] = ([], [], [], [])
        for turn in turns:
            for col, value in zip(cols, turn, strict=True):
                col.append(value)
        return cls(*cols)

    def __len__(self) -> int:
        return len(self.starts)

    def __contains__(self, file_id: object) -> bool:
        return file_id in self.files

    def nbytes(self) -> int:
        """Bytes of the per-turn arrays."""
        arrays = (self.starts, self.ends, self.reach, self.speaker_codes)
        return int(sum(a.nbytes for a in arrays))

    def _slice(self, file_id: str, start: float, end: float) -> np.ndarray:
        """Indices of the file's turns that overlap ``[start, end)`` (positive overlap)."""
        a, b = self.files.get(file_id, (0, 0))
        if a == b:
            return np.zeros(0, dtype=np.int64)
        lo = a + int(np.searchsorted(self.reach[a:b], start, side="right"))
        hi = a + int(np.searchsorted(self.starts[a:b], end, side="left"))
        if lo >= hi:
            return np.zeros(0, dtype=np.int64)
        idx = np.arange(lo, hi)
        return idx[self.ends[lo:hi] > start]

    def overlapping(self, file_id: str, start: float, end: float) -> list[tuple[float, float, str]]:
        """``(start, end, speaker)`` of the file's turns that overlap ``[start, end)``, in order
        of start."""
        idx = self._slice(file_id, start, end)
        return [
            (float(self.starts[i]), float(self.ends[i]), self.speakers[self.speaker_codes[i]])
            for i in idx
        ]

    def assign(self, file_id: str, start: float, end: float) -> tuple[str | None, float]:
        """The speaker with the most seconds inside ``[start, end)`` and that speaker's share of
        the span's diarized speech; ``(None, 0.0)`` where no turn overlaps it. Ties go to the
        lower speaker id."""
        idx = self._slice(file_id, start, end)
        if not len(idx):
            return None, 0.0
        seconds = np.minimum(self.ends[idx], end) - np.maximum(self.starts[idx], start)
        per: dict[str, float] = defaultdict(float)
        for code, s in zip(self.speaker_codes[idx].tolist(), seconds.tolist(), strict=True):
            per[self.speakers[code]] += s
        total = sum(per.values())
        if total <= 0:
            return None, 0.0
        speaker = min(per, key=lambda s: (-per[s], s))
        return speaker, per[speaker] / total


def _codes(values: Any, names: dict[str, int]) -> np.ndarray:
    """int32 codes of ``values`` (-1: null) in ``names``, which grows with names not seen yet:
    a sequence of str, or a pyarrow string or dictionary array or chunked array (a dictionary
    array is mapped through its dictionary, so no string per value is made)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(values, pa.ChunkedArray):
        chunks = [_codes(chunk, names) for chunk in values.chunks]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int32)
    if isinstance(values, pa.Array):
        if not pa.types.is_dictionary(values.type):
            values = pc.dictionary_encode(values)
        lookup = np.array(
            [names.setdefault(str(v), len(names)) for v in values.dictionary.to_pylist()] + [-1],
            dtype=np.int32,
        )
        indices = values.indices.fill_null(-1).to_numpy(zero_copy_only=False)
        return lookup[indices]  # index -1 (null) picks the -1 at the end
    return np.fromiter(
        (-1 if v is None else names.setdefault(str(v), len(names)) for v in values),
        dtype=np.int32,
    )


def _grouped_in_order(files: np.ndarray, starts: np.ndarray) -> bool:
    """Whether each file's turns are together and in order of start. File codes are given in
    order of first appearance, so a file seen again after another has a lower code than its
    predecessor."""
    if len(files) < 2:
        return True
    same = files[1:] == files[:-1]
    if not np.all(same <= (starts[1:] >= starts[:-1])):
        return False
    return bool(np.all(np.diff(files[np.concatenate([[True], ~same])]) > 0))


def _floats(values: Any) -> np.ndarray:
    import pyarrow as pa

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)


def assign_speakers(
    clips: Sequence[tuple[str, float, float]] | Iterable[tuple[str, float, float]],
    turns: Iterable[tuple[str, float, float, str]] | TurnIndex,
) -> list[tuple[str | None, float]]:
    """The global speaker of each clip, and that speaker's share of the clip's diarized speech.

    Args:
        clips: ``(file_id, start, end)`` per clip, in file time.
        turns: ``(file_id, start, end, speaker_global)`` of the diarization, or a
            :class:`TurnIndex` of them.

    Returns:
        ``(speaker_global, share)`` per clip; ``(None, 0.0)`` where no turn overlaps the clip.
        Ties go to the lower speaker id.
    """
    index = turns if isinstance(turns, TurnIndex) else TurnIndex.from_tuples(turns)
    return [index.assign(str(f), float(a), float(b)) for f, a, b in clips]


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
