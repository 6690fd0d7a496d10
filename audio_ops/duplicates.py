"""Near-duplicate audio: a robust fingerprint per clip, candidate pairs by MinHash, and groups.

A re-broadcast, a repeated intro or the same audiobook chapter twice reaches a training set as
clips whose audio is the same up to a re-encode (another codec, rate or bitrate), a gain and a
small time shift. Such clips are found in three steps, each bounded:

1. :func:`fingerprint`: Haitsma-Kalker style sub-fingerprints, 32 bits per 16 ms frame (the signs
   of the time derivative of the band-energy differences of 33 log-spaced bands, 300-3400 Hz).
   Signs of energy differences ignore gain; a 256 ms window over a 16 ms hop changes little when
   the audio moves by a fraction of a frame; the band edges stay under the 3.4-4 kHz that a
   narrowband or low-bitrate re-encode keeps.
2. :func:`minhash`: a few MinHash values of the set of 16-bit halves of those frames. Two clips
   share a value with a probability equal to their sets' Jaccard similarity, so ``keys`` values
   per clip (``keys * 4`` bytes) index a whole corpus; only clips sharing one become candidates.
3. :func:`bit_error_rate`: the candidate pair's fraction of differing bits at the best frame
   offset (up to ``max_shift`` seconds); a duplicate is below ``max_ber`` over at least
   ``min_overlap`` of the shorter clip. Copies measure 0.05-0.25, two different utterances of one
   speaker about 0.45-0.5 (benchmarks/duplicates.py).

:func:`group_duplicates` joins verified pairs into groups (union-find) and keeps, in each, the
clip that sorts first by the caller's key (longest, then lowest id by default).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

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
        keys: MinHash values per clip (more: more candidate pairs found, more checked).
        min_jaccard: a candidate pair's sets of 16-bit sub-fingerprint halves must share this
            fraction before the bit error rate is computed (a fast first test).
    """

    enabled: bool = True
    max_ber: float = 0.35
    max_shift: float = 1.0
    min_overlap: float = 0.5
    keys: int = 24
    min_jaccard: float = 0.04

    def __post_init__(self) -> None:
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


def fingerprint(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """32-bit sub-fingerprints (``uint32``, one per 16 ms frame) of mono audio.

    Audio shorter than one window gives an empty array (such a clip is never a duplicate).
    """
    if sample_rate != FP_RATE:
        from audio_ops.io import resample

        audio = resample(np.asarray(audio, np.float32), sample_rate, FP_RATE)
    x = np.asarray(audio, np.float32)
    if x.ndim != 1:
        raise ValueError("fingerprint expects mono audio")
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


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def bit_error_rate(
    a: np.ndarray, b: np.ndarray, max_shift_frames: int, min_overlap: float
) -> tuple[float, int]:
    """The lowest fraction of differing bits between ``a`` and ``b`` over the frame offsets
    ``-max_shift_frames..max_shift_frames`` where they overlap by at least ``min_overlap`` of
    the shorter; ``(1.0, 0)`` when no offset qualifies. Returns ``(ber, offset)``, the offset
    being how many frames ``b`` starts after ``a``."""
    shorter = min(a.size, b.size)
    if shorter == 0:
        return 1.0, 0
    need = max(1, int(np.ceil(min_overlap * shorter)))
    best, best_offset = 1.0, 0
    for offset in range(-max_shift_frames, max_shift_frames + 1):
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
