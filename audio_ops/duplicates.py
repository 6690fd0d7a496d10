"""Near-duplicate audio: fingerprints, candidate pairs from an on-disk landmark index, groups.

A re-broadcast, a repeated intro or the same audiobook chapter twice reaches a training set as
clips whose audio is the same up to a re-encode (another codec, rate or bitrate), a gain and a
small time shift. Such clips are found in three steps:

1. Two prints per clip, made where the audio is (the workers):

   - :func:`fingerprint`: Haitsma-Kalker style sub-fingerprints, 32 bits per 16 ms frame (the
     signs of the time derivative of the band-energy differences of 33 log-spaced bands,
     300-3400 Hz). Signs of energy differences ignore gain; a 256 ms window over a 16 ms hop
     changes little when the audio moves by a fraction of a frame; the band edges stay under the
     3.4-4 kHz that a narrowband or low-bitrate re-encode keeps. It verifies a pair (step 3).
   - :func:`landmarks`: spectral peaks (300 Hz - 4 kHz) taken three at a time, an anchor and two
     of the next six peaks near it, keyed exactly by the anchor's frequency and the two steps in
     frequency and time (31 bits), with the anchor's frame. About 180 per second of speech.

2. :class:`DuplicateIndex`: the landmarks of the whole corpus in hash partitions on disk. Each
   partition is read alone; two clips sharing a key vote for their time offset, the votes go to
   a second set of partitions by clip, and each clip pair scores the votes of its best two
   neighbouring offsets (32 ms each). Copies agree on one offset; unrelated clips scatter, and
   share a 31-bit key about once per 20-30 pairs (peak pairs: more than once per pair;
   measured on real speech, benchmarks/duplicate_candidates.py). Memory is one partition's
   postings or votes, not the corpus's; pairs with at least ``min_votes`` become candidates. (``index: minhash``, the
   method before 2026-12-06: MinHash of the fingerprints' 16-bit halves, candidates about 15 %
   of all clip pairs, fingerprints held in memory; kept for folders written with it.)
3. :func:`bit_error_rate`: the candidate pair's fraction of differing fingerprint bits at the
   best frame offset (up to ``max_shift`` seconds); a duplicate is below ``max_ber`` over at
   least ``min_overlap`` of the shorter clip. Copies measure 0.05-0.25, two different utterances
   of one speaker about 0.45-0.5 (benchmarks/duplicates.py).

Verified pairs are joined into groups around kept clips (:meth:`DuplicateIndex.group`): each
keeps the clip that sorts first by the caller's key (longest, then lowest index by default), and
every other clip of a group matches that kept clip itself.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from audio_ops import ADDED_LATER

FP_RATE = 16000
FP_WINDOW = 4096  # 256 ms
FP_HOP = 256  # 16 ms
FP_BANDS = 33  # 32 bits per frame
FP_LOW_HZ = 300.0
FP_HIGH_HZ = 3400.0
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class DuplicateConfig:
    """When two clips count as the same audio.

    Args:
        enabled: look for duplicates at all.
        max_ber: largest bit error rate of a duplicate pair at its best offset.
        max_shift: largest time shift between two copies, seconds.
        min_overlap: fraction of the shorter clip the aligned copies must share.
        index: how candidate pairs are found: ``landmarks`` (an index on disk, memory bounded
            by one partition) or ``minhash`` (the method of folders written before 2026-12-06:
            every clip's fingerprint in memory, candidates a constant share of all pairs).
        min_votes: landmark votes at one offset (two neighbouring 32 ms bins) that make a pair
            a candidate.
        keys: MinHash values per clip (``index: minhash``).
        min_jaccard: a MinHash candidate pair's sets of 16-bit sub-fingerprint halves must share
            this fraction before the bit error rate is computed (``index: minhash``).
    """

    enabled: bool = True
    max_ber: float = 0.35
    max_shift: float = 1.0
    min_overlap: float = 0.5
    keys: int = 24
    min_jaccard: float = 0.04
    index: str = field(default="landmarks", metadata={**ADDED_LATER, "before": "minhash"})
    min_votes: int = field(default=2, metadata=ADDED_LATER)

    def __post_init__(self) -> None:
        if self.index not in ("landmarks", "minhash"):
            raise ValueError(f"duplicates.index must be landmarks or minhash, not {self.index!r}")
        if not 1 <= self.min_votes:
            raise ValueError("duplicates.min_votes must be >= 1")
        if not 0.0 < self.max_ber < 0.5:
            raise ValueError("duplicates.max_ber must be between 0 and 0.5")
        if not self.max_shift >= 0.0:
            raise ValueError("duplicates.max_shift must be >= 0")
        if not 0.0 < self.min_overlap <= 1.0:
            raise ValueError("duplicates.min_overlap must be in (0, 1]")
        if not 0.0 <= self.min_jaccard < 1.0:
            raise ValueError("duplicates.min_jaccard must be in [0, 1)")
        if not 1 <= self.keys <= 256:
            raise ValueError("duplicates.keys must be between 1 and 256")


def _band_matrix(rate: int, window: int) -> np.ndarray:
    freqs = np.fft.rfftfreq(window, 1.0 / rate)
    edges = np.geomspace(FP_LOW_HZ, FP_HIGH_HZ, FP_BANDS + 1)
    bands = np.zeros((FP_BANDS, freqs.size), np.float32)
    for b in range(FP_BANDS):
        bands[b, (freqs >= edges[b]) & (freqs < edges[b + 1])] = 1.0
    return bands


_BANDS = _band_matrix(FP_RATE, FP_WINDOW)
_WEIGHTS = (1 << np.arange(31, -1, -1, dtype=np.uint64)).astype(np.uint64)


def at_print_rate(audio: np.ndarray, sample_rate: int, what: str = "prints") -> np.ndarray:
    """Mono ``float32`` audio at :data:`FP_RATE`, what :func:`fingerprint` and
    :func:`landmarks` read (resample once and pass ``FP_RATE`` to make both)."""
    x = np.asarray(audio, np.float32)
    if x.ndim != 1:
        raise ValueError(f"{what} expects mono audio")
    if sample_rate != FP_RATE:
        from audio_ops.io import resample

        x = resample(x, sample_rate, FP_RATE)
    return x


def fingerprint(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """32-bit sub-fingerprints (``uint32``, one per 16 ms frame) of mono audio.

    Audio shorter than one window gives an empty array (such a clip is never a duplicate).
    """
    x = at_print_rate(audio, sample_rate, "fingerprint")
    if x.size < FP_WINDOW + FP_HOP:
        return np.zeros(0, np.uint32)
    frames = np.lib.stride_tricks.sliding_window_view(x, FP_WINDOW)[::FP_HOP]
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(FP_WINDOW).astype(np.float32), axis=1))
    energy = (spectrum.astype(np.float32) ** 2) @ _BANDS.T + 1e-12
    diff = energy[:, :-1] - energy[:, 1:]  # band m minus band m + 1, per frame
    bits = (diff[1:] - diff[:-1]) > 0  # minus the previous frame's
    return (bits.astype(np.uint64) @ _WEIGHTS).astype(np.uint32)


def _hash64(values: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of ``values`` xor ``seed``: a fixed, platform-independent hash."""
    z = values.astype(np.uint64) ^ np.uint64(seed & _MASK64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def halves(prints: np.ndarray) -> np.ndarray:
    """The sorted set of 16-bit halves of ``prints`` (high halves tagged with bit 16, so a high
    half never equals a low half): what :func:`minhash` indexes and :func:`jaccard` compares."""
    p = prints.astype(np.uint64)
    return np.unique(
        np.concatenate([(p >> np.uint64(16)) | np.uint64(1 << 16), p & np.uint64(0xFFFF)])
    )


def minhash(prints: np.ndarray, keys: int = 24) -> np.ndarray:
    """``keys`` MinHash values (``uint32``, never 0) of :func:`halves` of ``prints``; all zero
    for an empty fingerprint (such clips are not indexed)."""
    if prints.size == 0:
        return np.zeros(keys, np.uint32)
    return _minhash_of(halves(prints), keys)


def _minhash_of(values: np.ndarray, keys: int) -> np.ndarray:
    """:func:`minhash` of a non-empty :func:`halves` set."""
    out = np.empty(keys, np.uint32)
    for k in range(keys):
        out[k] = np.uint32(int(_hash64(values, 0x5EED0000 + k).min()) >> 32) | 1
    return out


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two :func:`halves` sets."""
    if a.size == 0 or b.size == 0:
        return 0.0
    shared = np.intersect1d(a, b, assume_unique=True).size
    return shared / (a.size + b.size - shared)


AROUND_FRAMES = 4  # offsets tried each side of the landmarks' (their two bins span 4 frames)
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def bit_error_rate(
    a: np.ndarray,
    b: np.ndarray,
    max_shift_frames: int,
    min_overlap: float,
    around: int | None = None,
) -> tuple[float, int]:
    """The lowest fraction of differing bits between ``a`` and ``b`` over the frame offsets
    ``-max_shift_frames..max_shift_frames`` where they overlap by at least ``min_overlap`` of
    the shorter; ``(1.0, 0)`` when no offset qualifies. Returns ``(ber, offset)``: ``a[i]``
    lines up with ``b[i - offset]``. ``around``: only the offsets within
    :data:`AROUND_FRAMES` of it (where the landmarks' votes put the pair)."""
    shorter = min(a.size, b.size)
    if shorter == 0:
        return 1.0, 0
    need = max(1, int(np.ceil(min_overlap * shorter)))
    best, best_offset = 1.0, 0
    low, high = -max_shift_frames, max_shift_frames
    if around is not None:
        low, high = max(low, around - AROUND_FRAMES), min(high, around + AROUND_FRAMES)
    for offset in range(low, high + 1):
        # a[i] against b[i - offset]
        lo = max(0, offset)
        hi = min(a.size, b.size + offset)
        if hi - lo < need:
            continue
        x = a[lo:hi] ^ b[lo - offset : hi - offset]
        errors = int(_POPCOUNT[x.view(np.uint8)].sum())
        ber = errors / (32.0 * (hi - lo))
        if ber < best:
            best, best_offset = ber, offset
    return best, best_offset


def candidate_pairs(hashes: np.ndarray) -> Iterator[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, of rows of ``hashes`` (clips x keys) that share a
    MinHash value in the same position, one key at a time (a pair sharing several keys comes
    once per key). Nothing is kept between keys but one sorted column, so memory is the hashes'.
    A value shared by more than 64 clips (silence-like audio) pairs each with its neighbours in
    the sort only."""
    n, keys = hashes.shape
    for k in range(keys):
        column = hashes[:, k]
        order = np.argsort(column, kind="stable")
        values = column[order]
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        ends = np.r_[starts[1:], n]
        for s, e in zip(starts, ends, strict=True):
            if e - s < 2 or values[s] == 0:
                continue
            members = np.sort(order[s:e]).tolist()
            if e - s > 64:
                yield from zip(members[:-1], members[1:], strict=True)
                continue
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    yield members[x], members[y]


def group_duplicates(
    prints: Sequence[np.ndarray],
    config: DuplicateConfig | None = None,
    *,
    hashes: np.ndarray | None = None,
    order: Callable[[int], object] | None = None,
) -> tuple[list[int], list[int], list[tuple[int, int, float]]]:
    """Group clips whose audio is the same up to re-encoding, gain and a small shift.

    Args:
        prints: each clip's :func:`fingerprint`.
        config: thresholds.
        hashes: precomputed :func:`minhash` rows (computed here when None).
        order: the key that picks each group's kept clip (lowest first); default: longest,
            then lowest index.

    Returns:
        ``(group, keeper, pairs)``: per clip, its group number (-1: no duplicate) and the index
        of its group's kept clip (itself for a clip without duplicates); and the verified pairs
        ``(i, j, ber)``. Group numbers follow the kept clips' order.
    """
    config = config or DuplicateConfig()
    n = len(prints)
    # Each clip's set of halves, made once: the MinHash keys and the Jaccard pre-test use it.
    sets = [halves(p) if p.size else np.zeros(0, np.uint64) for p in prints]
    if hashes is None:
        hashes = np.zeros((n, config.keys), np.uint32)
        for i, values in enumerate(sets):
            if values.size:
                hashes[i] = _minhash_of(values, config.keys)
    shift = int(round(config.max_shift * FP_RATE / FP_HOP))
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    verified = []
    for i, j in candidate_pairs(hashes):
        if find(i) == find(j):
            continue
        # A cheap test first: copies' sets share 9-50 % (measured), different clips 0-5 %.
        if jaccard(sets[i], sets[j]) >= config.min_jaccard:
            ber, _ = bit_error_rate(prints[i], prints[j], shift, config.min_overlap)
            if ber <= config.max_ber:
                verified.append((i, j, ber))
                parent[find(i)] = find(j)
    key = order or (lambda i: (-len(prints[i]), i))
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(find(i), []).append(i)
    group, keeper = [-1] * n, list(range(n))
    groups = sorted(
        (sorted(m, key=key) for m in members.values() if len(m) > 1), key=lambda m: key(m[0])
    )
    for number, m in enumerate(groups):
        for i in m:
            group[i] = number
            keeper[i] = m[0]
    return group, keeper, verified


# ----------------------------------------------------------------------------------------------
# Landmarks and the on-disk index
# ----------------------------------------------------------------------------------------------

LM_FFT = 512  # 32 ms windows ...
LM_HOP = 256  # ... every 16 ms at 16 kHz, as the fingerprint
LM_BINS = slice(10, 128)  # about 310 Hz to 4 kHz: what a narrowband or low-bitrate copy keeps
LM_NEIGHBOURHOOD = 15  # a peak is the largest value of its 15 x 15 (frames x bins) square ...
LM_PERCENTILE = 80.0  # ... and above the clip's 80th percentile
LM_FAN = 6  # an anchor pairs two of its next six peaks ...
LM_DT_MAX = 40  # ... within 40 frames (640 ms) ...
LM_DF_MAX = 60  # ... and 60 bins (1.9 kHz)
MAX_POSTS = 200  # a key held more often pairs each posting with its next few only
STAR_TRIES = 8  # keepers of its component a clip without a verified pair to one is tested on
_NEIGHBOURS = 4
_POSTING = np.dtype([("key", "<u4"), ("clip", "<u4"), ("frame", "<i4")])
_VOTE = np.dtype([("a", "<u4"), ("b", "<u4"), ("bin", "<i4")])
_CHUNK = 1 << 20  # votes made and written at a time


def landmarks(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """A clip's landmarks as ``uint64``: the 31-bit key in the high half, the anchor's frame
    (16 ms) in the low half; empty for audio shorter than a window or without peaks.

    The key packs the anchor's frequency bin (7 bits) and, for two of the next :data:`LM_FAN`
    peaks within :data:`LM_DT_MAX` frames and :data:`LM_DF_MAX` bins, the frequency step
    (7 bits) and the time step in pairs of frames (5 bits; a re-encode or a shift of a fraction
    of a frame moves peaks by one frame). Gain does not change it (the audio is scaled to its
    peak first)."""
    from scipy.ndimage import maximum_filter

    x = at_print_rate(audio, sample_rate, "landmarks")
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if x.size < LM_FFT + LM_HOP or peak == 0.0:
        return np.zeros(0, np.uint64)
    frames = np.lib.stride_tricks.sliding_window_view(x / peak, LM_FFT)[::LM_HOP]
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(LM_FFT).astype(np.float32), axis=1))
    logs = np.log(spectrum[:, LM_BINS] + 1e-6)
    size = (LM_NEIGHBOURHOOD, LM_NEIGHBOURHOOD)
    peaks = (logs == maximum_filter(logs, size=size)) & (logs > np.percentile(logs, LM_PERCENTILE))
    t, f = np.nonzero(peaks)  # row-major: sorted by frame
    t, f = t.tolist(), f.tolist()
    out = []
    for i, (ti, fi) in enumerate(zip(t, f, strict=True)):
        targets = []
        for j in range(i + 1, len(t)):
            dt = t[j] - ti
            if dt > LM_DT_MAX or len(targets) == LM_FAN:
                break
            df = f[j] - fi
            if dt == 0 or abs(df) > LM_DF_MAX:
                continue
            targets.append(((df + 64) << 5) | (dt >> 1))
        for a in range(len(targets)):
            for b in range(a + 1, len(targets)):
                key = (fi << 24) | (targets[a] << 12) | targets[b]
                out.append((key << 32) | ti)
    return np.array(out, np.uint64)


def partitions_for(seconds: float, budget_bytes: int = 64 << 20) -> int:
    """How many partitions keep one near :func:`landmarks`' postings of ``seconds`` of audio
    (about 180 a second, 12 bytes each) under ``budget_bytes``: a power of two, 1 to 4096.
    Grouping peaks at about three partitions' worth of memory (measured: 52 MiB of postings in
    one partition, 151 MiB traced)."""
    need = seconds * 180 * _POSTING.itemsize / max(1, budget_bytes)
    return int(min(4096, 2 ** max(0, int(np.ceil(np.log2(max(need, 1.0)))))))


class DuplicateIndex:
    """Near-duplicate groups of a corpus too large for memory.

    Clips are added by number (``0..clips-1``, in any order) with their :func:`fingerprint` and
    :func:`landmarks`. Fingerprints go to one file, landmark postings to ``partitions`` files by
    key; :meth:`group` reads one partition at a time. Held in memory throughout: a few integers
    per clip, the add buffer (``buffer`` postings) and one partition's postings or votes. The
    files live in a temporary folder under ``folder`` (default: the system's), removed by
    :meth:`close` (or leaving a ``with`` block). With ``config.index == "minhash"`` the
    fingerprints are kept in memory and grouped by :func:`group_duplicates`, as before
    2026-12-06.

    Args:
        clips: how many clips will be added.
        config: thresholds and the candidate method.
        folder: where the temporary folder goes.
        partitions: a power of two (see :func:`partitions_for`).
        buffer: postings held before they are appended to the partition files.
    """

    def __init__(
        self,
        clips: int,
        config: DuplicateConfig | None = None,
        *,
        folder: str | None = None,
        partitions: int = 16,
        buffer: int = 1 << 20,
    ):
        if partitions < 1 or partitions & (partitions - 1):
            raise ValueError("partitions must be a power of two")
        self.config = config or DuplicateConfig()
        self.clips = clips
        self.partitions = partitions
        self._bits = partitions.bit_length() - 1
        self._buffer_limit = buffer
        self.folder = tempfile.mkdtemp(prefix="voxflow-duplicates-", dir=folder)
        self._start = np.zeros(clips, np.int64)
        self._length = np.zeros(clips, np.int64)
        self._prints = open(os.path.join(self.folder, "prints.u32"), "wb")
        self._written = 0
        self._pending: list[np.ndarray] = []
        self._pending_count = 0
        self.postings = 0  # landmark postings added
        self.candidates_seen = 0  # candidate pairs :meth:`group` met
        self._memory: list[np.ndarray] | None = (
            [np.zeros(0, np.uint32)] * clips if self.config.index == "minhash" else None
        )

    def __enter__(self) -> DuplicateIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the index's files."""
        if not self._prints.closed:
            self._prints.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _partition(self, keys: np.ndarray) -> np.ndarray:
        if not self._bits:
            return np.zeros(keys.size, np.int64)
        mixed = (keys.astype(np.uint64) * np.uint64(0x9E3779B1)) & np.uint64(0xFFFFFFFF)
        return (mixed >> np.uint64(32 - self._bits)).astype(np.int64)

    def add(self, clip: int, prints: np.ndarray, marks: np.ndarray | None = None) -> None:
        """Clip number ``clip``'s fingerprint and landmarks (ignored with ``index: minhash``)."""
        if not 0 <= clip < self.clips:
            raise IndexError(f"clip {clip} is outside 0..{self.clips - 1}")
        prints = np.asarray(prints, np.uint32)
        if self._memory is not None:
            self._memory[clip] = prints
            return
        self._start[clip], self._length[clip] = self._written, prints.size
        self._prints.write(prints.tobytes())
        self._written += prints.size
        if marks is None or not marks.size or not prints.size:
            return
        marks = np.asarray(marks, np.uint64)
        posts = np.empty(marks.size, _POSTING)
        posts["key"] = (marks >> np.uint64(32)).astype(np.uint32)
        posts["frame"] = (marks & np.uint64(0xFFFFFFFF)).astype(np.int32)
        posts["clip"] = clip
        self._pending.append(posts)
        self._pending_count += posts.size
        if self._pending_count >= self._buffer_limit:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        posts = np.concatenate(self._pending)
        self._pending, self._pending_count = [], 0
        self.postings += posts.size
        self._append("posts", posts, posts["key"])

    def _append(self, kind: str, records: np.ndarray, keys: np.ndarray) -> None:
        """Append ``records`` to the ``kind`` partition files, each to its key's partition."""
        part = self._partition(keys)
        order = np.argsort(part, kind="stable")
        records, part = records[order], part[order]
        bounds = np.searchsorted(part, np.arange(self.partitions + 1))
        for p in range(self.partitions):
            if bounds[p] < bounds[p + 1]:
                with open(self._path(kind, p), "ab") as f:
                    f.write(records[bounds[p] : bounds[p + 1]].tobytes())

    def _path(self, kind: str, p: int) -> str:
        return os.path.join(self.folder, f"{kind}-{p:04d}.bin")

    def _votes_of(self, posts: np.ndarray) -> Iterator[np.ndarray]:
        """Vote records of one partition's postings (sorted by key here)."""
        posts = posts[np.argsort(posts["key"], kind="stable")]
        keys = posts["key"]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        sizes = np.diff(np.r_[starts, keys.size])
        for size in np.unique(sizes[sizes >= 2]).tolist():
            first = starts[sizes == size]
            if size <= MAX_POSTS:
                iu, ju = np.triu_indices(size, 1)
                step = max(1, _CHUNK // iu.size)
                for c in range(0, first.size, step):
                    base = first[c : c + step, None]
                    yield self._votes(posts, (base + iu).ravel(), (base + ju).ravel())
                continue
            # A key this common (a jingle in a thousand episodes, or noise-like audio): each
            # posting votes with the next few of other clips only, so copies still chain up.
            for s in first.tolist():
                idx = s + np.lexsort((posts["frame"][s : s + size], posts["clip"][s : s + size]))
                for w in range(1, _NEIGHBOURS + 1):
                    yield self._votes(posts, idx[:-w], idx[w:])

    @staticmethod
    def _votes(posts: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        ca, cb = posts["clip"][i], posts["clip"][j]
        fa, fb = posts["frame"][i], posts["frame"][j]
        keep = ca != cb
        ca, cb, fa, fb = ca[keep], cb[keep], fa[keep], fb[keep]
        swap = ca > cb
        votes = np.empty(ca.size, _VOTE)
        votes["a"] = np.where(swap, cb, ca)
        votes["b"] = np.where(swap, ca, cb)
        votes["bin"] = np.floor_divide(np.where(swap, fa - fb, fb - fa), 2)
        return votes

    def candidates(self) -> Iterator[tuple[int, int, int, int]]:
        """``(a, b, votes, later)`` per clip pair (``a < b``) with at least ``min_votes`` at one
        offset, each pair once, in a fixed order; ``later``: how many frames (16 ms) ``b``'s
        copy of a sound comes after ``a``'s, at the best offset."""
        self._flush()
        self._prints.flush()
        for p in range(self.partitions):
            path = self._path("posts", p)
            if not os.path.exists(path):
                continue
            for votes in self._votes_of(np.fromfile(path, _POSTING)):
                if votes.size:
                    self._append("votes", votes, votes["a"])
            os.remove(path)
        for q in range(self.partitions):
            path = self._path("votes", q)
            if not os.path.exists(path):
                continue
            yield from self._scores(np.fromfile(path, _VOTE))
            os.remove(path)

    def _scores(self, votes: np.ndarray) -> Iterator[tuple[int, int, int, int]]:
        votes = votes[np.lexsort((votes["bin"], votes["b"], votes["a"]))]
        a, b, o = votes["a"], votes["b"], votes["bin"]
        new = np.r_[True, (a[1:] != a[:-1]) | (b[1:] != b[:-1]) | (o[1:] != o[:-1])]
        starts = np.flatnonzero(new)
        counts = np.diff(np.r_[starts, a.size])
        a, b, o = a[starts], b[starts], o[starts]
        score = counts.copy()
        nxt = (a[1:] == a[:-1]) & (b[1:] == b[:-1]) & (o[1:] == o[:-1] + 1)
        score[:-1][nxt] += counts[1:][nxt]
        pair = np.cumsum(np.r_[True, (a[1:] != a[:-1]) | (b[1:] != b[:-1])]) - 1
        top = np.lexsort((-score, pair))  # each pair's best offset first
        first = top[np.r_[True, pair[top][1:] != pair[top][:-1]]]
        hit = first[score[first] >= self.config.min_votes]
        # b's frames run this much later than a's for the same sound (the two bins' middle)
        later = 2 * o[hit].astype(np.int64) + 1
        yield from zip(
            a[hit].tolist(),
            b[hit].tolist(),
            score[hit].tolist(),
            later.tolist(),
            strict=True,
        )

    def _stars(
        self,
        component: list[int],
        matched: dict[int, list[int]],
        of: Callable[[int], np.ndarray],
        shift: int,
    ) -> list[list[int]]:
        """Groups of one connected component (members in keeping order) in which every clip is
        a duplicate of its group's kept clip itself: the first clip keeps; each next one joins
        the first keeper it has a verified pair with, else the first keeper its bit error rate
        matches now among those of the groups its partners joined and the first
        :data:`STAR_TRIES` (copies of a clip so common that only neighbours voted), else keeps
        for a group of its own. A chain A ~ B ~ C of partial matches (clips that share part of
        their audio) then never drops C for A, and the work stays linear in the component's
        size."""
        config = self.config
        keepers: list[list[int]] = []
        star_of: dict[int, int] = {}  # a keeper's place in ``keepers``
        joined: dict[int, int] = {}  # a clip's star, kept or not
        for clip in component:
            partners = matched.get(clip, ())
            places = [star_of[k] for k in partners if k in star_of]
            place = min(places) if places else None
            if place is None:
                # the stars its partners joined first (its copy may have joined a clip that
                # shares part of its audio), then the first keepers
                tries = sorted({joined[k] for k in partners if k in joined})
                tries += [p for p in range(min(STAR_TRIES, len(keepers))) if p not in tries]
                place = next(
                    (
                        p
                        for p in tries
                        if bit_error_rate(of(keepers[p][0]), of(clip), shift, config.min_overlap)[0]
                        <= config.max_ber
                    ),
                    None,
                )
            if place is None:
                place = star_of[clip] = len(keepers)
                keepers.append([clip])
            else:
                keepers[place].append(clip)
            joined[clip] = place
        return [star for star in keepers if len(star) > 1]

    def group(
        self, order: Callable[[int], object] | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, float]]]:
        """``(group, keeper, pairs)`` as :func:`group_duplicates` returns them (numpy arrays
        for the first two): per clip its group number (-1: none) and its group's kept clip,
        and the verified pairs ``(i, j, ber)``. Clips joined by verified pairs are split into
        groups around their kept clips (:meth:`_stars`), so a dropped clip is always a
        duplicate of the clip kept for it."""
        config = self.config
        if self._memory is not None:
            group, keeper, pairs = group_duplicates(self._memory, config, order=order)
            return np.array(group, np.int64), np.array(keeper, np.int64), pairs
        n = self.clips
        key = order or (lambda i: (-int(self._length[i]), i))
        shift = int(round(config.max_shift * FP_RATE / FP_HOP))
        parent = np.arange(n, dtype=np.int64)

        def find(i: int) -> int:
            root = i
            while parent[root] != root:
                root = int(parent[root])
            while parent[i] != root:
                parent[i], i = root, int(parent[i])
            return root

        verified: list[tuple[int, int, float]] = []
        self._prints.flush()  # before the map is made: it sees the file's length then
        prints = (
            np.memmap(os.path.join(self.folder, "prints.u32"), np.uint32, mode="r")
            if self._written
            else np.zeros(0, np.uint32)
        )

        def of(i: int) -> np.ndarray:
            return np.asarray(prints[self._start[i] : self._start[i] + self._length[i]])

        for i, j, _, later in self.candidates():  # all: the groups below need the pairs
            self.candidates_seen += 1
            ber, _ = bit_error_rate(of(i), of(j), shift, config.min_overlap, around=-later)
            if ber <= config.max_ber:
                verified.append((i, j, ber))
                parent[find(i)] = find(j)
        roots = parent.copy()
        while n and not np.array_equal(roots, roots[roots]):  # pointer jumping to the roots
            roots = roots[roots]
        group = np.full(n, -1, np.int64)
        keeper = np.arange(n, dtype=np.int64)
        sizes = np.bincount(roots, minlength=n) if n else np.zeros(0, np.int64)
        members: dict[int, list[int]] = {}
        for i in np.flatnonzero(sizes[roots] > 1).tolist():
            members.setdefault(int(roots[i]), []).append(i)
        matched: dict[int, list[int]] = {}  # each clip's verified partners
        for i, j, _ in verified:
            matched.setdefault(i, []).append(j)
            matched.setdefault(j, []).append(i)
        stars: list[list[int]] = []
        for component in members.values():
            stars.extend(self._stars(sorted(component, key=key), matched, of, shift))
        stars.sort(key=lambda m: key(m[0]))
        for number, m in enumerate(stars):
            group[m] = number
            keeper[m] = m[0]
        return group, keeper, verified
