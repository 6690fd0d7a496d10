"""How the duplicate check grows with the corpus: the landmark index against MinHash candidates.

    python benchmarks/duplicates_scale.py [--sizes 1000 4000 16000] [--minhash-up-to 4000]

A corpus of N different clips is made from the real speech of ``../shared/realdata`` (the 100
LibriSpeech utterances, the 10 meeting recordings, the 25 clean VoiceBank utterances): each clip
is three random crops of it, each at its own speed (0.8-1.25, by resampling) and each reversed
in time or not, mixed at levels within 3 dB, 3-6 s long; so no two clips are the same audio
(two clips may still hold one same stretch of a recording at nearly the same speed: such pairs
are counted apart). Every 50th clip is followed by a
copy of itself through MP3 (22.05 kHz, 32 kb/s) 6 dB quieter: the duplicates to find.

For each size (clips are shared: the first N of the largest set) and each method: the candidate
pairs, their share of all pairs, recall of the planted copies and unrelated pairs grouped, the
grouping's time and its peak of Python-traced memory (``tracemalloc``: numpy's arrays included)
from the first ``add`` to the groups, and the index's largest partition file. MinHash runs up to
``--minhash-up-to`` clips (its candidates are a constant share of all pairs). Each runs at the
``--max-ber`` values given (default: 0.35, voxflow's, and 0.25).

Writes ``benchmarks/results/duplicates_scale.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, save  # noqa: E402
from benchmarks.duplicates import RATE, REALDATA, mp3  # noqa: E402


def pool() -> list[np.ndarray]:
    from audio_ops.io import load_audio

    files = [
        *sorted((REALDATA / "speakers").glob("libri_*/*.flac")),
        *sorted((REALDATA / "diar" / "audio").glob("*.wav")),
        *sorted((REALDATA / "enh" / "clean").glob("*.wav")),
    ]
    return [load_audio(str(f), RATE)[0] for f in files]


def corpus(n: int, seed: int = 20261206) -> tuple[list[np.ndarray], list[int], list[list]]:
    """``(clips, origin, crops)``: ``origin[i]`` is the index of the clip ``i`` copies (itself if
    none); ``crops[i]`` the ``(source, start, end, speed, reversed)`` of its three crops."""
    from audio_ops.io import resample

    rng = np.random.default_rng(seed)
    sources = pool()
    weights = np.array([s.size for s in sources], float)
    weights /= weights.sum()

    def crop(seconds: float, made: list) -> np.ndarray:
        speed = rng.uniform(0.8, 1.25)
        while True:
            audio_id = int(rng.choice(len(sources), p=weights))
            audio = sources[audio_id]
            need = int(seconds * speed * RATE) + 1
            if audio.size > need:
                break
        start = int(rng.integers(0, audio.size - need))
        piece = audio[start : start + need]
        out = resample(piece, int(round(RATE * speed)), RATE)[: int(seconds * RATE)]
        backwards = bool(rng.uniform() < 0.5)
        made.append((audio_id, start, start + need, speed, backwards))
        return out[::-1].copy() if backwards else out

    clips: list[np.ndarray] = []
    origin: list[int] = []
    crops: list[list] = []
    while len(clips) < n:
        seconds = rng.uniform(3.0, 6.0)
        made: list = []
        parts = [crop(seconds, made) for _ in range(3)]
        length = min(p.size for p in parts)
        clip = sum(p[:length] * 10 ** (rng.uniform(-3, 3) / 20) for p in parts).astype(np.float32)
        clips.append(clip)
        origin.append(len(clips) - 1)
        crops.append(made)
        if len(clips) % 50 == 1 and len(clips) < n:
            clips.append(mp3(clip, 22050, 32) * 0.5)
            origin.append(len(clips) - 2)
            crops.append(made)
    return clips[:n], origin[:n], crops[:n]


def share_a_crop(x: list, y: list) -> bool:
    """Whether two clips hold the same stretch of one recording, played the same way at nearly
    the same speed (within 3 %): the mixing can draw that by chance from a small pool."""
    for source, start, end, speed, backwards in x:
        for source2, start2, end2, speed2, backwards2 in y:
            overlap = min(end, end2) - max(start, start2)
            if (
                source == source2
                and backwards == backwards2
                and abs(speed - speed2) < 0.03 * speed
                and overlap > 0.25 * min(end - start, end2 - start2)
            ):
                return True
    return False


def run(method: str, prints, marks, origin, crops, n: int, max_ber: float = 0.35) -> dict:
    from audio_ops.duplicates import DuplicateConfig, DuplicateIndex, partitions_for

    seconds = sum(p.size for p in prints[:n]) * 0.016
    tracemalloc.start()
    t0 = time.perf_counter()
    largest = 0
    with DuplicateIndex(
        n,
        DuplicateConfig(index=method, max_ber=max_ber),
        partitions=partitions_for(seconds, 8 << 20),
    ) as index:
        for i in range(n):  # copies: what the driver reads from the shards
            index.add(i, np.array(prints[i]), np.array(marks[i]))
        index._flush()
        for name in os.listdir(index.folder):
            if name.startswith("posts-"):
                largest = max(largest, os.path.getsize(os.path.join(index.folder, name)))
        group, _, pairs = index.group()
        candidates = index.candidates_seen
        partitions = index.partitions
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    if method == "minhash":
        from audio_ops.duplicates import candidate_pairs, minhash

        candidates = len(set(candidate_pairs(np.stack([minhash(p) for p in prints[:n]]))))
    planted = [(origin[i], i) for i in range(n) if origin[i] != i]
    found = sum(group[a] >= 0 and group[a] == group[b] for a, b in planted)
    members: dict[int, list[int]] = {}
    for i in np.flatnonzero(group >= 0).tolist():
        members.setdefault(int(group[i]), []).append(i)
    sharing = unrelated = 0
    for m in members.values():
        for x in range(len(m)):
            for y in range(x + 1, len(m)):
                a, b = m[x], m[y]
                if origin[a] == origin[b] or origin[a] == b or origin[b] == a:
                    continue
                if share_a_crop(crops[a], crops[b]):
                    sharing += 1
                else:
                    unrelated += 1
    all_pairs = n * (n - 1) // 2
    out = {
        "clips": n,
        "hours": seconds / 3600,
        "method": method,
        "max_ber": max_ber,
        "partitions": partitions,
        "candidate_pairs": candidates,
        "candidate_share_of_pairs": candidates / all_pairs,
        "planted_copies": len(planted),
        "recall": found / len(planted) if planted else 1.0,
        "grouped_pairs_sharing_a_crop": sharing,
        "unrelated_pairs_grouped": unrelated,
        "verified_pairs": len(pairs),
        "group_seconds": elapsed,
        "peak_traced_mib": peak / 2**20,
        "largest_partition_mib": largest / 2**20,
    }
    print(
        f"{method:9s} max_ber {max_ber} {n:6d} clips ({out['hours']:.1f} h): candidates {candidates} "
        f"({100 * out['candidate_share_of_pairs']:.3f} % of pairs), recall {out['recall']:.3f}, "
        f"grouped: {sharing} sharing a crop, {unrelated} unrelated; {elapsed:.1f} s, peak "
        f"{out['peak_traced_mib']:.1f} MiB traced, {partitions} partitions "
        f"(largest {out['largest_partition_mib']:.2f} MiB)",
        flush=True,
    )
    return out


def main() -> None:
    from audio_ops.duplicates import fingerprint, landmarks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--minhash-up-to", type=int, default=4000)
    parser.add_argument("--max-ber", type=float, nargs="+", default=[0.35, 0.25])
    args = parser.parse_args()
    t0 = time.perf_counter()
    clips, origin, crops = corpus(max(args.sizes))
    t_make = time.perf_counter() - t0
    t0 = time.perf_counter()
    prints = [fingerprint(c, RATE) for c in clips]
    marks = [landmarks(c, RATE) for c in clips]
    print(
        f"{len(clips)} clips made in {t_make:.0f} s, printed in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    del clips
    rows = []
    for n in sorted(args.sizes):
        for max_ber in args.max_ber:
            rows.append(run("landmarks", prints, marks, origin, crops, n, max_ber))
            if n <= args.minhash_up_to:
                rows.append(run("minhash", prints, marks, origin, crops, n, max_ber))
    path = save({"rows": rows, "machine": machine()}, "duplicates_scale")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
