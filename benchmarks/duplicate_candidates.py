"""Candidate generation for the near-duplicate check: MinHash keys (voxflow's method before
2026-12-06), spectral peak-pair landmarks with offset voting (the exploration that led to the
index), and the peak-triplet landmarks of :class:`audio_ops.duplicates.DuplicateIndex` (what
voxflow runs now).

    python benchmarks/duplicate_candidates.py      # about a minute

The duplicate check verifies each candidate pair by the bit error rate of its fingerprints; what
does not scale is how many pairs become candidates. With MinHash of sub-fingerprint halves about
15 % of all clip pairs share a key, a constant share of all pairs: quadratic in the clip count.
Landmarks, as audio identification systems use them: the spectral peaks of each clip
(300 Hz - 4 kHz, local maxima over 15 x 15 bins, above the clip's 80th percentile), each paired
with up to five later peaks within 40 frames and 60 bins; a pair hashes ``(f1, f2 - f1, dt)``. Two
clips vote for an offset each time they share a hash; their score is their best pair of
neighbouring offset bins. Copies agree on one offset; unrelated clips scatter.

The corpora are those of ``benchmarks/duplicates.py`` (LibriSpeech utterances and AMI clips, every
third one copied four ways: MP3 at other rates, gain, 0.5 s shift, a cut). Reported per corpus:
true pairs, the MinHash candidates, and for landmark score thresholds the candidates, the
recall of true pairs and the unrelated pairs among the candidates.

Peak triplets (an anchor and two of its next six peaks, keyed exactly in 31 bits) are far rarer
to share by chance than peak pairs (21 bits): the keys unrelated clips share drop 28-37 fold
(measured here: 0.034 and 0.055 per pair of unrelated clips against 1.26 and 1.56), which is
what lets the index grow with the corpus.

Writes ``benchmarks/results/duplicate_candidates.json``.
"""

from __future__ import annotations

import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, save  # noqa: E402
from benchmarks.duplicates import RATE, ami, librispeech, with_copies  # noqa: E402

N_FFT, HOP = 512, 256  # 32 ms windows every 16 ms at 16 kHz
BINS = slice(10, 128)  # about 300 Hz to 4 kHz
FAN, DT_MAX, DF_MAX = 5, 40, 60
MAX_POSTS = 200  # a hash held by more landmarks than this is too common to vote


def landmarks(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(hashes, frames)`` of a clip's peak pairs."""
    from scipy.ndimage import maximum_filter

    x = np.asarray(audio, np.float32)
    if x.size < N_FFT:
        return np.zeros(0, np.uint32), np.zeros(0, np.int32)
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP]
    logs = np.log(np.abs(np.fft.rfft(frames * np.hanning(N_FFT), axis=1))[:, BINS] + 1e-6)
    peaks = (logs == maximum_filter(logs, size=(15, 15))) & (logs > np.percentile(logs, 80))
    t, f = np.nonzero(peaks)
    order = np.argsort(t, kind="stable")
    t, f = t[order], f[order]
    hashes, times = [], []
    for i in range(len(t)):
        made = 0
        for j in range(i + 1, len(t)):
            dt = int(t[j] - t[i])
            if dt == 0:
                continue
            if dt > DT_MAX or made >= FAN:
                break
            df = int(f[j]) - int(f[i])
            if abs(df) > DF_MAX:
                continue
            hashes.append((int(f[i]) << 14) | ((df + 64) << 6) | dt)
            times.append(int(t[i]))
            made += 1
    return np.array(hashes, np.uint32), np.array(times, np.int32)


def landmark_scores(prints: list[tuple[np.ndarray, np.ndarray]]) -> Counter:
    """Per clip pair, the most votes two neighbouring offset bins (2 frames each) collect."""
    index = defaultdict(list)
    for clip, (hashes, times) in enumerate(prints):
        for h, t in zip(hashes.tolist(), times.tolist(), strict=True):
            index[h].append((clip, t))
    votes: Counter = Counter()
    for posts in index.values():
        if len(posts) > MAX_POSTS:
            continue
        for a in range(len(posts)):
            for b in range(a + 1, len(posts)):
                (ka, ta), (kb, tb) = posts[a], posts[b]
                if ka == kb:
                    continue
                if ka > kb:
                    ka, kb, ta, tb = kb, ka, tb, ta
                votes[(ka, kb, (tb - ta) // 2)] += 1
    best: Counter = Counter()
    for (ka, kb, offset), v in votes.items():
        best[(ka, kb)] = max(best[(ka, kb)], v + votes.get((ka, kb, offset + 1), 0))
    return best


def evaluate(name: str, sources: list[tuple[str, np.ndarray]]) -> dict:
    from audio_ops.duplicates import candidate_pairs, fingerprint, minhash

    clips, origin, _ = with_copies(sources)
    n = len(clips)
    pairs = n * (n - 1) // 2
    true = {(a, b) for a in range(n) for b in range(a + 1, n) if origin[a] == origin[b]}
    seconds = sum(c.size for c in clips) / RATE
    hashes = np.stack([minhash(fingerprint(c, RATE)) for c in clips])
    by_minhash = set(candidate_pairs(hashes))
    t0 = time.perf_counter()
    prints = [landmarks(c) for c in clips]
    t_landmarks = time.perf_counter() - t0
    scores = landmark_scores(prints)
    result = {
        "clips": n,
        "seconds": seconds,
        "pairs": pairs,
        "true_pairs": len(true),
        "minhash_candidates": len(by_minhash),
        "minhash_recall": len(by_minhash & true) / len(true),
        "landmarks_per_second": sum(len(h) for h, _ in prints) / seconds,
        "landmarks_x_real_time": seconds / t_landmarks,
    }
    print(
        f"{name}: {n} clips, {len(true)} true pairs of {pairs}; MinHash candidates "
        f"{len(by_minhash)} ({100 * len(by_minhash) / pairs:.1f} % of pairs, recall "
        f"{result['minhash_recall']:.3f}); {result['landmarks_per_second']:.0f} landmarks/s"
    )
    report(result, "landmarks", scores, true, pairs)
    report(result, "triplets", triplet_scores(clips), true, pairs)
    from audio_ops.duplicates import landmarks as triplets

    result["unrelated_votes_per_unrelated_pair"] = {
        "landmarks": unrelated_votes([h for h, _ in prints], origin),
        "triplets": unrelated_votes(
            [(triplets(c, RATE) >> np.uint64(32)).astype(np.uint32) for c in clips], origin
        ),
    }
    print(f"  unrelated votes per unrelated pair: {result['unrelated_votes_per_unrelated_pair']}")
    return result


def unrelated_votes(keys: list[np.ndarray], origin: list[int]) -> float:
    """Shared keys between clips of different sources, per such pair of clips (what the index's
    work and disk grow with, times the square of the clip count)."""
    index = defaultdict(list)
    for clip, hashes in enumerate(keys):
        for h in hashes.tolist():
            index[h].append(clip)
    shared = 0
    for posts in index.values():
        if len(posts) > MAX_POSTS:
            continue
        for a in range(len(posts)):
            for b in range(a + 1, len(posts)):
                shared += origin[posts[a]] != origin[posts[b]]
    n = len(origin)
    unrelated = sum(origin[a] != origin[b] for a in range(n) for b in range(a + 1, n))
    return shared / unrelated


def triplet_scores(clips: list[np.ndarray]) -> dict:
    """Per clip pair, the votes :class:`audio_ops.duplicates.DuplicateIndex` gives it."""
    from audio_ops.duplicates import DuplicateConfig, DuplicateIndex, fingerprint, landmarks

    with DuplicateIndex(len(clips), DuplicateConfig(min_votes=1)) as index:
        for i, clip in enumerate(clips):
            index.add(i, fingerprint(clip, RATE), landmarks(clip, RATE))
        return {(a, b): v for a, b, v, _ in index.candidates()}


def report(result: dict, name: str, scores: dict, true: set, pairs: int) -> None:
    result[name] = {}
    for threshold in (2, 3, 4, 6):
        found = {p for p, v in scores.items() if v >= threshold}
        hits = len(found & true)
        row = {
            "candidates": len(found),
            "share_of_pairs": len(found) / pairs,
            "recall": hits / len(true),
            "unrelated": len(found) - hits,
        }
        result[name][threshold] = row
        print(
            f"  {name}, score >= {threshold}: {len(found)} candidates "
            f"({100 * row['share_of_pairs']:.2f} % of pairs), recall {row['recall']:.3f}, "
            f"{row['unrelated']} unrelated"
        )


def main() -> None:
    results = {
        "librispeech": evaluate("librispeech", librispeech()),
        "ami": evaluate("ami", ami(np.random.default_rng(20261205))),  # as duplicates.py
        "machine": machine(),
    }
    print(f"-> {save(results, 'duplicate_candidates')}")


if __name__ == "__main__":
    main()
