"""Realistic multi-speaker conversations built from real voices, with exact ground truth.

Turns are pieces of real LibriSpeech utterances (10 speakers, ``shared/realdata/speakers``),
laid out as a conversation with pauses and overlapping turn changes, each speaker at its own
level, over real recorded noise (VoiceBank-DEMAND: noise = noisy - clean, ``shared/realdata/enh``).
Speaker labels are ``libri_<id>`` in every file, so cross-file speaker identity can be scored.

    python benchmarks/real_conversations.py --out /tmp/conv_dev --split dev --n 20 --seed 1
    python benchmarks/real_conversations.py --out /tmp/conv_test --split test --n 20 --seed 2

Writes ``DIR/audio/<split>_<NNN>.flac`` (16 kHz mono PCM_16), ``DIR/rttm/<file>.rttm`` (one
SPEAKER line per stretch of speech: a turn is split at its pauses of 0.3 s or more), ``DIR/uem/<file>.uem`` and ``DIR/manifest.csv`` (:data:`MANIFEST_FIELDS`),
then re-reads what it wrote, checks it and prints each file's speech seconds per speaker.

Held-out discipline: ``dev`` uses utterances 0-5 (sorted file names) of every speaker and the
``p232_*`` noise recordings, ``test`` utterances 6-9 and the ``p257_*`` recordings, so the two
splits share no utterance and no noise recording while all 10 speakers appear in both.

Output is a pure function of (split, index, seed): file ``k`` is the same bytes whatever ``n``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]

SAMPLE_RATE = 16000
FRAME = 320  # 20 ms energy frames
MS = (
    SAMPLE_RATE // 1000
)  # every boundary sits on a whole millisecond, so RTTM's 3 decimals are exact

SPLIT_CODES = {"dev": 0, "test": 1}
UTTERANCES_OF_SPLIT = {"dev": slice(0, 6), "test": slice(6, 10)}
NOISE_PREFIX = {"dev": "p232_", "test": "p257_"}

SPEAKERS_PER_FILE = (2, 5)
MIN_TURNS_PER_SPEAKER = 2
PIECE_S = (1.5, 12.0)
TRIM_MARGIN_S = 0.05
# Reference labels follow the speech inside a turn: a pause of at least this long (read speech
# pauses between phrases) ends one RTTM segment, as in hand-made diarization references.
MIN_PAUSE_S = 0.3
FADE_S = 0.01
OPTIONAL_CUT_P = 0.35  # share of short utterances also split in two, so turn lengths vary more
DURATION_S = (60.0, 120.0)
EDGE_S = (0.2, 1.0)  # noise-only lead-in and tail, as a recording never starts on a word
GAP_S = (0.1, 1.2)
OVERLAP_S = (0.3, 2.0)
OVERLAP_RATIO = (0.05, 0.20)
GAIN_DB = (-6.0, 3.0)
SNR_DB = (5.0, 20.0)
CROSSFADE_S = 0.02
REFERENCE_DBFS = -30.0  # every utterance's active level before the speaker's gain
PEAK_DBFS = -1.0
MAX_ATTEMPTS = 50

MANIFEST_FIELDS = [
    "file",
    "split",
    "duration",
    "num_speakers",
    "speakers",
    "num_turns",
    "reused_turns",
    "overlap_ratio",
    "snr_db",
    "speaker_gains_db",
    "noise_sources",
    "sources",
]


@dataclass(frozen=True)
class Utterance:
    """One source utterance, level-normalised, with its 20 ms frame energies.

    Attributes:
        name: file name (``1688-142285-0006.flac``).
        speaker: global label (``libri_1688``).
        audio: float64 samples at :data:`SAMPLE_RATE`, scaled to :data:`REFERENCE_DBFS`.
        frame_db: energy of each whole 20 ms frame, dB.
        speech_db: frames above this are speech (used to trim).
        pause_db: frames below this are pauses (where a cut does not chop a word).
    """

    name: str
    speaker: str
    audio: np.ndarray
    frame_db: np.ndarray
    speech_db: float
    pause_db: float


@dataclass(frozen=True)
class Piece:
    """A trimmed stretch ``[start, end)`` (samples) of one utterance, usable as one turn."""

    utterance: Utterance
    start: int
    end: int

    @property
    def length_ms(self) -> int:
        return (self.end - self.start) // MS


@dataclass
class Turn:
    """One turn of a conversation: a piece placed at ``start_ms``."""

    speaker: str
    piece: Piece
    start_ms: int
    reused: bool

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.piece.length_ms

    @property
    def speech_s(self) -> list[tuple[float, float]]:
        """The turn's reference segments in seconds (:func:`speech_runs` placed at its start)."""
        return [
            ((self.start_ms + a) / 1000, (self.start_ms + b) / 1000)
            for a, b in speech_runs(self.piece)
        ]


def speech_runs(piece: Piece) -> list[tuple[int, int]]:
    """``[start_ms, end_ms)`` of the speech in a piece, relative to its start: its speech frames,
    runs joined across pauses shorter than :data:`MIN_PAUSE_S`, each widened by the trim margin
    and clipped to the piece.

    Args:
        piece: a trimmed piece of an utterance.
    """
    first, last = piece.start // FRAME, -(-piece.end // FRAME)
    active = _speech_frames(piece.utterance.frame_db[first:last], piece.utterance.speech_db)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], active.astype(np.int8), [0]])))
    runs: list[list[int]] = []
    bridge = MIN_PAUSE_S * SAMPLE_RATE
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        lo, hi = (first + int(a)) * FRAME, (first + int(b)) * FRAME
        if runs and lo - runs[-1][1] < bridge:
            runs[-1][1] = hi
        else:
            runs.append([lo, hi])
    margin = int(round(TRIM_MARGIN_S * SAMPLE_RATE))
    out = []
    for lo, hi in runs or [[piece.start, piece.end]]:
        lo, hi = max(piece.start, lo - margin), min(piece.end, hi + margin)
        out.append(((lo - piece.start) // MS, (hi - piece.start) // MS))
    return out


def default_realdata() -> Path:
    """The ``shared/realdata`` folder next to the repository (``<repo>/../shared/realdata``)."""
    return (ROOT / ".." / "shared" / "realdata").resolve()


def frame_energy_db(audio: np.ndarray) -> np.ndarray:
    """Mean power of each whole 20 ms frame, in dB.

    Args:
        audio: mono samples at :data:`SAMPLE_RATE`.
    """
    n = audio.size // FRAME
    frames = audio[: n * FRAME].reshape(n, FRAME)
    return 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def _speech_frames(frame_db: np.ndarray, threshold_db: float) -> np.ndarray:
    loud = frame_db > threshold_db
    # a lone loud frame is a click or a breath, not the start of a word
    neighbour = np.zeros_like(loud)
    neighbour[1:] |= loud[:-1]
    neighbour[:-1] |= loud[1:]
    return loud & neighbour


def load_utterances(realdata: Path, split: str) -> dict[str, list[Utterance]]:
    """The split's utterances of every speaker, sorted by speaker label and file name.

    Args:
        realdata: the ``shared/realdata`` folder.
        split: ``dev`` (utterances 0-5 of each speaker) or ``test`` (6-9).
    """
    by_speaker: dict[str, list[str]] = {}
    with open(realdata / "speakers" / "speakers.csv", newline="") as f:
        for row in csv.DictReader(f):
            by_speaker.setdefault(row["speaker"], []).append(row["path"])
    utterances: dict[str, list[Utterance]] = {}
    for speaker in sorted(by_speaker):
        paths = sorted(by_speaker[speaker], key=lambda p: Path(p).name)[UTTERANCES_OF_SPLIT[split]]
        if not paths:
            raise ValueError(f"{speaker} has no utterance in the {split} split")
        utterances[speaker] = []
        for rel in paths:
            audio, sr = sf.read(realdata / "speakers" / rel, dtype="float64", always_2d=True)
            if sr != SAMPLE_RATE:
                raise ValueError(f"{rel}: {sr} Hz, expected {SAMPLE_RATE}")
            audio = audio.mean(axis=1)
            frame_db = frame_energy_db(audio)
            floor_db, peak_db = np.percentile(frame_db, [5, 99])
            # noisy recordings (test-other) have floors only ~20 dB under the speech, clean ones
            # ~70 dB: the floor-relative bound serves the first, the peak-relative the second
            speech_db = max(floor_db + 6.0, peak_db - 40.0)
            pause_db = max(floor_db + 3.0, peak_db - 45.0)
            active = _speech_frames(frame_db, speech_db)
            level_db = 10.0 * np.log10(np.mean(10.0 ** (frame_db[active] / 10.0)))
            gain = 10.0 ** ((REFERENCE_DBFS - level_db) / 20.0)
            utterances[speaker].append(
                Utterance(
                    name=Path(rel).name,
                    speaker=speaker,
                    audio=audio * gain,
                    frame_db=frame_db + 20.0 * np.log10(gain),
                    speech_db=speech_db + 20.0 * np.log10(gain),
                    pause_db=pause_db + 20.0 * np.log10(gain),
                )
            )
    return utterances


def load_noises(realdata: Path, split: str) -> list[tuple[str, np.ndarray]]:
    """The split's real noise recordings (noisy - clean), each scaled to unit RMS.

    The recordings differ by some 20 dB in level; scaling them alike keeps the drawn SNR the
    SNR of the whole file instead of one that jumps at every recording's boundary.

    Args:
        realdata: the ``shared/realdata`` folder.
        split: ``dev`` (``p232_*`` pairs) or ``test`` (``p257_*``).
    """
    noises = []
    with open(realdata / "enh" / "pairs.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["noisy"])
    for row in rows:
        name = Path(row["noisy"]).stem
        if NOISE_PREFIX[split] not in name:
            continue
        noisy, sr_noisy = sf.read(realdata / row["noisy"], dtype="float64")
        clean, sr_clean = sf.read(realdata / row["clean"], dtype="float64")
        if sr_noisy != SAMPLE_RATE or sr_clean != SAMPLE_RATE or noisy.shape != clean.shape:
            raise ValueError(f"{name}: pair is not 16 kHz and sample-aligned")
        noise = noisy - clean
        noises.append((name, noise / np.sqrt(np.mean(noise**2))))
    if not noises:
        raise ValueError(f"no {NOISE_PREFIX[split]}* noise pairs in {realdata / 'enh'}")
    return noises


def _trim(utterance: Utterance, first_frame: int, end_frame: int, lo: int, hi: int) -> Piece | None:
    """The speech of frames ``[first_frame, end_frame)`` with a margin, kept inside ``[lo, hi)``."""
    active = np.flatnonzero(
        _speech_frames(utterance.frame_db[first_frame:end_frame], utterance.speech_db)
    )
    if active.size == 0:
        return None
    margin = int(round(TRIM_MARGIN_S * SAMPLE_RATE))
    start = max(lo, (first_frame + int(active[0])) * FRAME - margin)
    end = min(hi, (first_frame + int(active[-1]) + 1) * FRAME + margin)
    end = start + (end - start) // MS * MS
    seconds = (end - start) / SAMPLE_RATE
    if not PIECE_S[0] <= seconds <= PIECE_S[1]:
        return None
    return Piece(utterance, start, end)


def _pause_runs(utterance: Utterance) -> list[tuple[int, int]]:
    """``(centre_frame, length_frames)`` of every run of pause frames."""
    low = np.concatenate([[False], utterance.frame_db < utterance.pause_db, [False]])
    edges = np.flatnonzero(np.diff(low.astype(np.int8)))
    return [(int((a + b) // 2), int(b - a)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _cut_frame(
    utterance: Utterance, lo: int, hi: int, rng: np.random.Generator, required: bool
) -> int | None:
    """A frame in ``[lo, hi]`` at which to cut: the longest pause near a random target.

    Without a pause in ``[lo, hi]``, a ``required`` cut goes at the quietest frame, and any
    other is not made (None): a part of a short utterance is not worth a chopped word.
    """
    target = int(rng.integers(lo, hi + 1))
    runs = [(c, n) for c, n in _pause_runs(utterance) if lo <= c <= hi]
    reach = int(1.5 * SAMPLE_RATE / FRAME)
    near = [(c, n) for c, n in runs if abs(c - target) <= reach and n >= 2]
    if near or runs:
        # the longest pause is most likely a phrase boundary; ties go to the target
        return max(near or runs, key=lambda r: (r[1], -abs(r[0] - target)))[0]
    if not required:
        return None
    # no pause at all: the quietest point, smoothed so one dip inside a vowel does not win
    smooth = np.convolve(utterance.frame_db, np.ones(3) / 3.0, mode="same")
    return lo + int(np.argmin(smooth[lo : hi + 1]))


def segment_utterance(utterance: Utterance, rng: np.random.Generator) -> list[Piece]:
    """Pieces of one utterance: the whole of it, or parts cut at low-energy points.

    Utterances longer than the longest piece are always cut; shorter ones are cut in two with
    probability :data:`OPTIONAL_CUT_P` when both parts can be long enough. Each piece is trimmed
    of leading and trailing silence with a 50 ms margin; pieces outside 1.5-12 s are dropped.

    Args:
        utterance: the source utterance.
        rng: random generator of the conversation.
    """
    active = np.flatnonzero(_speech_frames(utterance.frame_db, utterance.speech_db))
    if active.size == 0:
        return []
    first, end = int(active[0]), int(active[-1]) + 1
    # slack so that the 50 ms margins and trimming keep a part inside 1.5-12 s
    min_frames = int(np.ceil((PIECE_S[0] + 0.2) * SAMPLE_RATE / FRAME))
    max_frames = int((PIECE_S[1] - 0.2) * SAMPLE_RATE / FRAME)
    cuts: list[int] = []
    position = first
    optional = end - first >= 2 * min_frames and rng.random() < OPTIONAL_CUT_P
    while end - position > max_frames or (optional and not cuts):
        lo, hi = position + min_frames, min(position + max_frames, end - min_frames)
        if lo > hi:
            break
        cut = _cut_frame(utterance, lo, hi, rng, required=end - position > max_frames)
        if cut is None:
            break
        cuts.append(cut)
        position = cut
    bounds = [first, *cuts, end]
    pieces = []
    usable_end = utterance.audio.size // MS * MS
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        lo = 0 if a == first else a * FRAME
        hi = usable_end if b == end else b * FRAME
        piece = _trim(utterance, a, b, lo, hi)
        if piece is not None:
            pieces.append(piece)
    return pieces


def overlap_ratio(intervals: list[tuple[float, float]]) -> float:
    """Seconds where two or more intervals are active over seconds where one or more are.

    Args:
        intervals: ``(start, end)`` pairs in seconds (read from an RTTM: whole milliseconds).
    """
    events = sorted(
        [(round(s * 1000), 1) for s, _ in intervals] + [(round(e * 1000), -1) for _, e in intervals]
    )
    active = overlapped = 0
    count, previous = 0, None
    for t, delta in events:
        if previous is not None:
            active += (t - previous) * (count >= 1)
            overlapped += (t - previous) * (count >= 2)
        count += delta
        previous = t
    return overlapped / active if active else 0.0


def _overlap_limit(lengths: list[int], joins: list[int], i: int, cap_ms: int) -> int:
    """Longest overlap (ms) join ``i`` may take: each turn stays at most half overlapped."""
    start_overlap = -joins[i - 1] if i > 0 and joins[i - 1] < 0 else 0
    end_overlap = -joins[i + 1] if i + 1 < len(joins) and joins[i + 1] < 0 else 0
    return min(
        int(OVERLAP_S[1] * 1000),
        lengths[i] // 2 - start_overlap,
        lengths[i + 1] // 2 - end_overlap,
        cap_ms,
    )


def _plan_turns(
    speakers: list[str], pools: dict[str, list[Piece]], rng: np.random.Generator
) -> tuple[list[tuple[str, Piece, bool]], list[int], int, int]:
    """One attempt at a turn sequence: ``(turns, joins_ms, lead_ms, tail_ms)``.

    ``joins_ms[i]`` > 0 is the pause after turn ``i``, < 0 its overlap with turn ``i + 1``.
    """
    material_s = sum(p.length_ms for s in speakers for p in pools[s]) / 1000.0
    # few speakers with little speech of their own would repeat it over and over in a long file
    upper_s = min(DURATION_S[1], max(DURATION_S[0], 1.1 * material_s))
    target_ms = int(rng.uniform(DURATION_S[0], upper_s) * 1000)
    ratio_target = rng.uniform(*OVERLAP_RATIO)
    lead_ms, tail_ms = (int(rng.uniform(*EDGE_S) * 1000) for _ in range(2))
    max_ms = int(DURATION_S[1] * 1000)

    turns: list[tuple[str, Piece, bool]] = []
    joins: list[int] = []
    uses = {s: [0] * len(pools[s]) for s in speakers}
    turn_counts = dict.fromkeys(speakers, 0)

    def end_ms() -> int:
        return lead_ms + sum(p.length_ms for _, p, _ in turns) + sum(joins) + tail_ms

    def add_turn() -> bool:
        gap = int(rng.integers(int(GAP_S[0] * 1000), int(GAP_S[1] * 1000) + 1)) if turns else 0
        room = max_ms - end_ms() - gap
        previous = turns[-1][0] if turns else None
        weights, candidates = [], []
        for s in speakers:
            fits = [k for k, p in enumerate(pools[s]) if p.length_ms <= room]
            if s == previous or not fits:
                continue
            pool_ms = sum(p.length_ms for p in pools[s])
            unused_ms = sum(p.length_ms for p, u in zip(pools[s], uses[s], strict=True) if not u)
            # owed turns first; a speaker whose speech is used up talks less rather than repeat
            owed = 3.0 if turn_counts[s] < MIN_TURNS_PER_SPEAKER else 1.0
            weights.append(owed * (0.25 + unused_ms / pool_ms))
            candidates.append((s, fits))
        if not candidates:
            return False
        w = np.asarray(weights)
        speaker, fits = candidates[int(rng.choice(len(candidates), p=w / w.sum()))]
        fewest = min(uses[speaker][k] for k in fits)
        least_used = [k for k in fits if uses[speaker][k] == fewest]
        k = least_used[int(rng.integers(len(least_used)))]
        if turns:
            joins.append(gap)
        turns.append((speaker, pools[speaker][k], uses[speaker][k] > 0))
        uses[speaker][k] += 1
        turn_counts[speaker] += 1
        return True

    def add_overlaps() -> None:
        lengths = [p.length_ms for _, p, _ in turns]
        speech_ms = sum(lengths)
        overlap_ms = sum(-j for j in joins if j < 0)
        while overlap_ms / (speech_ms - overlap_ms) < ratio_target:
            # overlap <= speech / 6 is overlap / (speech - overlap) <= 0.20
            # (one millisecond under it, so a reader summing float seconds never sees 0.2000001)
            cap = int(speech_ms * OVERLAP_RATIO[1] / (1 + OVERLAP_RATIO[1])) - overlap_ms - 1
            limits = {i: _overlap_limit(lengths, joins, i, cap) for i in range(len(joins))}
            eligible = [
                i for i, j in enumerate(joins) if j > 0 and limits[i] >= OVERLAP_S[0] * 1000
            ]
            if not eligible:
                return
            i = eligible[int(rng.integers(len(eligible)))]
            # drawn over the whole range and clipped, not drawn under the limit: longer overlaps,
            # so fewer turn changes need one to reach the target
            overlap = min(
                limits[i], int(rng.integers(int(OVERLAP_S[0] * 1000), int(OVERLAP_S[1] * 1000) + 1))
            )
            joins[i] = -overlap
            overlap_ms += overlap

    while True:
        added = False
        while end_ms() < target_ms or min(turn_counts.values()) < MIN_TURNS_PER_SPEAKER:
            if not add_turn():
                break
            added = True
        add_overlaps()
        if end_ms() >= target_ms or not added:
            break
    return turns, joins, lead_ms, tail_ms


def _noise_bed(
    noises: list[tuple[str, np.ndarray]], n: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[str]]:
    """``n`` samples of the recordings, shuffled, crossfaded, looped, from a random offset.

    Returns the noise and the names of the recordings it contains, in order of appearance.
    """
    xf = int(CROSSFADE_S * SAMPLE_RATE)
    phase = (np.arange(xf) + 0.5) / xf * np.pi / 2
    # equal-power fades: the recordings are uncorrelated, so power stays level across a joint
    fade_in, fade_out = np.sin(phase), np.cos(phase)
    order = rng.permutation(len(noises))
    bank = noises[order[0]][1].copy()
    owners = [np.full(bank.size, order[0], dtype=np.int16)]
    for k in order[1:]:
        clip = noises[k][1]
        bank[-xf:] = bank[-xf:] * fade_out + clip[:xf] * fade_in
        bank = np.concatenate([bank, clip[xf:]])
        owners.append(np.full(clip.size - xf, k, dtype=np.int16))
    owner = np.concatenate(owners)
    # close the loop the same way, so the wrap-around is one more crossfaded joint
    head = bank[:xf].copy()
    bank, owner = bank[xf:], owner[xf:]
    bank[-xf:] = bank[-xf:] * fade_out + head * fade_in
    index = (int(rng.integers(bank.size)) + np.arange(n)) % bank.size
    used = owner[index]
    _, first_seen = np.unique(used, return_index=True)
    names = [noises[used[i]][0] for i in sorted(first_seen)]
    return bank[index], names


def _render(
    turns: list[Turn], gains_db: dict[str, float], snr_db: float, n: int, noise: np.ndarray
) -> np.ndarray:
    """The mixture: turns at their speaker's gain plus noise at ``snr_db``, peak-limited."""
    speech = np.zeros(n)
    is_speech = np.zeros(n, dtype=bool)
    fade = int(FADE_S * SAMPLE_RATE)
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)
    for turn in turns:
        piece = turn.piece
        segment = piece.utterance.audio[piece.start : piece.end].copy()
        # the cuts lie in pauses and the fades inside the 50 ms margins: no clicks, no lost words
        segment[:fade] *= ramp
        segment[-fade:] *= ramp[::-1]
        start = turn.start_ms * MS
        speech[start : start + segment.size] += segment * 10.0 ** (gains_db[turn.speaker] / 20.0)
        is_speech[start : start + segment.size] = True
    speech_power = np.mean(speech[is_speech] ** 2)
    noise = noise * np.sqrt(speech_power / (np.mean(noise**2) * 10.0 ** (snr_db / 10.0)))
    mix = speech + noise
    peak = np.max(np.abs(mix))
    if peak >= 1.0:
        mix *= 10.0 ** (PEAK_DBFS / 20.0) / peak
    return mix


def _check_plan(turns: list[Turn], duration_ms: int) -> str | None:
    """Why a planned conversation breaks the spec, or None."""
    counts: dict[str, int] = {}
    for turn in turns:
        counts[turn.speaker] = counts.get(turn.speaker, 0) + 1
    ratio = overlap_ratio([run for t in turns for run in t.speech_s])
    if not DURATION_S[0] * 1000 <= duration_ms <= DURATION_S[1] * 1000:
        return f"duration {duration_ms / 1000:.3f} s"
    if min(counts.values()) < MIN_TURNS_PER_SPEAKER:
        return f"turns per speaker {counts}"
    if not OVERLAP_RATIO[0] <= ratio <= OVERLAP_RATIO[1]:
        return f"overlap ratio {ratio:.4f}"
    return None


def _conversation(
    file_id: str,
    utterances: dict[str, list[Utterance]],
    noises: list[tuple[str, np.ndarray]],
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[Turn], dict]:
    """One conversation: its audio, its turns sorted by start and its manifest row."""
    labels = sorted(utterances)
    count = int(rng.integers(SPEAKERS_PER_FILE[0], SPEAKERS_PER_FILE[1] + 1))
    count = min(count, len(labels))  # a small voice set (the test fixtures) has fewer
    speakers = sorted(labels[i] for i in rng.choice(len(labels), size=count, replace=False))
    gains_db = {s: float(rng.uniform(*GAIN_DB)) for s in speakers}
    snr_db = float(rng.uniform(*SNR_DB))
    problems = []
    for _ in range(MAX_ATTEMPTS):
        pools = {s: [p for u in utterances[s] for p in segment_utterance(u, rng)] for s in speakers}
        planned, joins, lead_ms, tail_ms = _plan_turns(speakers, pools, rng)
        turns, start_ms = [], lead_ms
        for i, (speaker, piece, reused) in enumerate(planned):
            turns.append(Turn(speaker, piece, start_ms, reused))
            start_ms = turns[-1].end_ms + (joins[i] if i < len(joins) else 0)
        duration_ms = turns[-1].end_ms + tail_ms
        problem = _check_plan(turns, duration_ms)
        if problem is None:
            break
        problems.append(problem)
    else:
        raise RuntimeError(
            f"{file_id}: no valid conversation in {MAX_ATTEMPTS} attempts: {problems}"
        )
    n = duration_ms * MS
    noise, noise_names = _noise_bed(noises, n, rng)
    audio = _render(turns, gains_db, snr_db, n, noise)
    turns.sort(key=lambda t: (t.start_ms, t.end_ms))
    row = {
        "file": file_id,
        "duration": duration_ms / 1000,
        "num_speakers": len(speakers),
        "speakers": ";".join(speakers),
        "num_turns": len(turns),
        "reused_turns": sum(t.reused for t in turns),
        "overlap_ratio": round(overlap_ratio([run for t in turns for run in t.speech_s]), 4),
        "snr_db": round(snr_db, 2),
        "speaker_gains_db": ";".join(f"{s}:{gains_db[s]:+.2f}" for s in speakers),
        "noise_sources": ";".join(noise_names),
        "sources": ";".join(sorted({t.piece.utterance.name for t in turns})),
    }
    return audio, turns, row


def _replace(path: Path, write) -> None:
    """Write through ``write(tmp_path)`` and rename, so no half-written file is ever seen."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    _replace(path, lambda tmp: tmp.write_text(text))


@contextlib.contextmanager
def shape(duration: tuple[float, float] | None = None, speakers: tuple[int, int] | None = None):
    """Conversations of other lengths (seconds) or speaker counts inside the block (the module's
    :data:`DURATION_S` and :data:`SPEAKERS_PER_FILE` are swapped, then restored). Long ones
    reuse each speaker's utterances: a split has 4-6 per speaker."""
    global DURATION_S, SPEAKERS_PER_FILE
    before = DURATION_S, SPEAKERS_PER_FILE
    DURATION_S = tuple(map(float, duration)) if duration else DURATION_S
    SPEAKERS_PER_FILE = tuple(map(int, speakers)) if speakers else SPEAKERS_PER_FILE
    try:
        yield
    finally:
        DURATION_S, SPEAKERS_PER_FILE = before


def make_conversations(
    out: str,
    split: str,
    n: int,
    seed: int,
    realdata: str | None = None,
    duration: tuple[float, float] | None = None,
    speakers: tuple[int, int] | None = None,
) -> list[dict]:
    """Generate ``n`` conversations of one split and return their manifest rows.

    Args:
        out: output folder; ``audio/``, ``rttm/``, ``uem/`` and ``manifest.csv`` go under it
            (files of the same names are replaced; ``manifest.csv`` lists this call's files).
        split: ``dev`` or ``test``; they share no utterance and no noise recording.
        n: number of conversations, named ``<split>_000`` ... .
        seed: random seed; file ``k`` depends only on (split, k, seed).
        realdata: the ``shared/realdata`` folder; default :func:`default_realdata`.
        duration: ``(shortest, longest)`` seconds of a file (default :data:`DURATION_S`).
        speakers: ``(fewest, most)`` speakers in a file (default :data:`SPEAKERS_PER_FILE`).
    """
    with shape(duration, speakers):
        return _make_conversations(out, split, n, seed, realdata)


def _make_conversations(
    out: str, split: str, n: int, seed: int, realdata: str | None = None
) -> list[dict]:
    if split not in SPLIT_CODES:
        raise ValueError(f"split must be one of {sorted(SPLIT_CODES)}, not {split!r}")
    source = Path(realdata) if realdata else default_realdata()
    if not (source / "speakers" / "speakers.csv").is_file():
        raise FileNotFoundError(f"no speakers/speakers.csv under {source}; pass --realdata")
    utterances = load_utterances(source, split)
    noises = load_noises(source, split)
    root = Path(out)
    for sub in ("audio", "rttm", "uem"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(n):
        file_id = f"{split}_{index:03d}"
        rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
        audio, turns, row = _conversation(file_id, utterances, noises, rng)
        _replace(
            root / "audio" / f"{file_id}.flac",
            lambda tmp, audio=audio: sf.write(
                tmp, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16"
            ),
        )
        _write_text(
            root / "rttm" / f"{file_id}.rttm",
            "".join(
                f"SPEAKER {file_id} 1 {a:.3f} {b - a:.3f} <NA> <NA> {speaker} <NA> <NA>\n"
                for a, b, speaker in sorted((a, b, t.speaker) for t in turns for a, b in t.speech_s)
            ),
        )
        _write_text(root / "uem" / f"{file_id}.uem", f"{file_id} 1 0.000 {row['duration']:.3f}\n")
        rows.append({"split": split, **row})
    lines = [",".join(MANIFEST_FIELDS)]
    for row in rows:
        lines.append(",".join(str(row[k]) for k in MANIFEST_FIELDS))
    _write_text(root / "manifest.csv", "\n".join(lines) + "\n")
    return rows


def read_rttm(path: Path) -> list[tuple[str, float, float]]:
    """``(speaker, start, end)`` of every SPEAKER line of an RTTM file.

    Args:
        path: the RTTM file.
    """
    turns = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            start, duration = float(fields[3]), float(fields[4])
            turns.append((fields[7], start, start + duration))
    return turns


def check_conversations(out: str) -> tuple[list[str], dict[str, dict[str, float]]]:
    """Re-read a generated folder and check it against the spec.

    Returns the problems found and, per file, each speaker's speech seconds (from the RTTM).

    Args:
        out: a folder written by :func:`make_conversations`.
    """
    root = Path(out)
    with open(root / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    problems, seconds = [], {}
    for row in rows:
        file_id = row["file"]
        info = sf.info(root / "audio" / f"{file_id}.flac")
        duration = info.frames / info.samplerate
        turns = read_rttm(root / "rttm" / f"{file_id}.rttm")
        uem = (root / "uem" / f"{file_id}.uem").read_text().split()
        speakers = sorted({s for s, _, _ in turns})
        ratio = overlap_ratio([(a, b) for _, a, b in turns])
        found = []
        if (info.samplerate, info.channels, info.subtype) != (SAMPLE_RATE, 1, "PCM_16"):
            found.append(f"format {info.samplerate} Hz x{info.channels} {info.subtype}")
        if not DURATION_S[0] <= duration <= DURATION_S[1]:
            found.append(f"duration {duration:.3f}")
        if abs(float(uem[3]) - duration) > 5e-4 or abs(float(row["duration"]) - duration) > 5e-4:
            found.append(f"uem {uem[3]} / manifest {row['duration']} != audio {duration:.3f}")
        if not SPEAKERS_PER_FILE[0] <= len(speakers) <= SPEAKERS_PER_FILE[1]:
            found.append(f"{len(speakers)} speakers")
        if ";".join(speakers) != row["speakers"]:
            found.append("speakers differ from the manifest")
        if any(not re.fullmatch(r"libri_\d+", s) for s in speakers):
            found.append(f"labels {speakers}")
        if not OVERLAP_RATIO[0] <= ratio <= OVERLAP_RATIO[1]:
            found.append(f"overlap ratio {ratio:.4f}")
        if abs(ratio - float(row["overlap_ratio"])) > 1e-4:
            found.append(f"overlap ratio {ratio:.4f} != manifest {row['overlap_ratio']}")
        if [(a, b) for _, a, b in turns] != sorted((a, b) for _, a, b in turns):
            found.append("RTTM not sorted by start")
        for s in speakers:
            own = sorted((a, b) for t, a, b in turns if t == s)
            if len(own) < MIN_TURNS_PER_SPEAKER:
                found.append(f"{s}: {len(own)} turn(s)")
            if any(b1 > a2 for (_, b1), (a2, _) in zip(own[:-1], own[1:], strict=True)):
                found.append(f"{s} overlaps itself")
        if turns and (turns[0][1] < 0 or max(b for _, _, b in turns) > duration + 5e-4):
            found.append("turn outside the audio")
        for s, a, b in turns:
            if not 0 < b - a <= PIECE_S[1] + 5e-4:
                found.append(f"{s} segment at {a:.3f} lasts {b - a:.3f} s")
        problems += [f"{file_id}: {p}" for p in found]
        seconds[file_id] = {s: sum(b - a for t, a, b in turns if t == s) for s in speakers}
    return problems, seconds


def main(argv: list[str] | None = None) -> int:
    """Command line: generate one split, check it and print what it holds.

    Args:
        argv: arguments; default ``sys.argv[1:]``.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--split", required=True, choices=sorted(SPLIT_CODES))
    parser.add_argument("--n", type=int, default=20, help="number of conversations")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--realdata",
        default=None,
        help=f"the shared/realdata folder (default {default_realdata()})",
    )
    for flag, kind, default, what in (
        ("--duration", float, DURATION_S, "seconds of a file"),
        ("--speakers", int, SPEAKERS_PER_FILE, "speakers in a file"),
    ):
        parser.add_argument(
            flag,
            nargs=2,
            type=kind,
            metavar=("LO", "HI"),
            default=default,
            help=f"{what} (default %(default)s)",
        )
    args = parser.parse_args(argv)
    began = time.perf_counter()
    with shape(args.duration, args.speakers):
        rows = make_conversations(args.out, args.split, args.n, args.seed, args.realdata)
        elapsed = time.perf_counter() - began
        problems, seconds = check_conversations(args.out)
    for row in rows:
        per_speaker = " ".join(f"{s}={t:.1f}s" for s, t in seconds[row["file"]].items())
        print(
            f"{row['file']}  {row['duration']:7.3f} s  {row['num_speakers']} spk  "
            f"{row['num_turns']:2d} turns ({row['reused_turns']} reused)  "
            f"overlap {row['overlap_ratio']:.3f}  snr {row['snr_db']:5.2f} dB  {per_speaker}"
        )
    durations = [r["duration"] for r in rows]
    ratios = [r["overlap_ratio"] for r in rows]
    snrs = [r["snr_db"] for r in rows]
    counts = [r["num_speakers"] for r in rows]
    print(
        f"{args.split}: {len(rows)} files, {sum(durations) / 3600:.3f} h, "
        f"duration {min(durations):.1f}-{max(durations):.1f} s, speakers {min(counts)}-{max(counts)}, "
        f"overlap {min(ratios):.3f}-{max(ratios):.3f}, snr {min(snrs):.1f}-{max(snrs):.1f} dB, "
        f"generated in {elapsed:.1f} s"
    )
    for problem in problems:
        print("PROBLEM", problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
