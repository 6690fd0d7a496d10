"""The driver's memory in ``voxflow clean``'s last step, as the corpus grows.

    python benchmarks/clean_finalise.py [--clips 10000 40000 80000] [--before REV] [--duplicates on off]

Once every file is done, the driver of ``voxflow clean`` reads the kept clips of every committed
shard, gives them their speaker, drops duplicates and balances hours (the corpus-wide steps),
then writes ``clips.parquet`` and ``rejected/``. This benchmark builds the shard store that a
corpus of N kept clips leaves (shards of 64 files x 30 clips; each clip with a 100-character
transcript, its decoded segments with word timings as JSON, 20 quality columns, a 6 s
fingerprint and landmarks at voxflow's rates; one clip in 50 a copy of another clip's prints;
30 speakers in a ``speaker`` column, each capped to about 90 % of its hours) and runs
``CleanJob.finalise`` on it in a fresh process per size: its wall time and the growth of the
process's peak resident memory during the step (``VmHWM`` after, less ``VmRSS`` before).

``--duplicates on off`` runs each size with the duplicate check (the default) and without it
(what is left is the rows' own cost). ``--before REV`` runs the ``pipelines/jobs/clean.py`` of that git revision on the same stores in
the same run (the version before the two-pass finalise held every kept row as a Python dict).

Writes ``benchmarks/results/clean_finalise.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import machine, own_memory, save  # noqa: E402

CLIPS_PER_FILE = 30
FILES_PER_SHARD = 64
SPEAKERS = 30
CLIP_SECONDS = 6.0


def _words(rng: np.random.Generator, text: str) -> str:
    t, words = 0.0, []
    for word in text.split():
        end = t + 0.1 + 0.05 * len(word)
        words.append(
            {
                "word": " " + word,
                "start": round(t, 2),
                "end": round(end, 2),
                "probability": round(float(rng.uniform(0.5, 1)), 3),
            }
        )
        t = end + 0.05
    return json.dumps([{"start": 0.0, "end": round(t, 2), "text": text, "words": words}])


def build(out: str, clips: int, seed: int = 0) -> list[str]:
    """The shard store a run with ``clips`` kept clips leaves in ``out``; the file ids."""
    from audio_ops.duplicates import FP_RATE, LM_HOP
    from pipelines.engine.resume import ShardStore
    from pipelines.jobs.clean import CleanJob, CleanRunConfig

    rng = np.random.default_rng(seed)
    store = ShardStore(out, CleanJob(out, CleanRunConfig()).schemas([]), FILES_PER_SHARD, 1e9)
    vocabulary = [f"w{i}" * (1 + i % 5) for i in range(500)]
    frames = int(CLIP_SECONDS * FP_RATE / LM_HOP)  # fingerprint frames: 16 ms
    marks = int(CLIP_SECONDS * 180)
    files = -(-clips // CLIPS_PER_FILE)
    ids, n = [], 0
    prints: list[tuple[bytes, bytes]] = []
    for f in range(files):
        file_id = f"{f:016x}"
        ids.append(file_id)
        kept, funnel = [], []
        for c in range(min(CLIPS_PER_FILE, clips - n)):
            start = c * (CLIP_SECONDS + 1.0)
            if prints and n % 50 == 49:  # a copy of an earlier clip's audio
                fp, lm = prints[int(rng.integers(len(prints)))]
            else:
                fp = rng.integers(0, 2**32, frames, dtype=np.uint32).tobytes()
                keys = rng.integers(0, 2**31, marks, dtype=np.uint64)
                at = np.sort(rng.integers(0, frames, marks, dtype=np.uint64))
                lm = ((keys << np.uint64(32)) | at).tobytes()
                if len(prints) < 1000:
                    prints.append((fp, lm))
            text = " ".join(rng.choice(vocabulary, 18))[:100]
            row = {
                "file_id": file_id,
                "path": f"/corpus/book{f % 97}/file{f}.flac",
                "rel_path": f"book{f % 97}/file{f}.flac",
                "clip_id": f"{file_id}_{int(start * 1000):09d}",
                "audio_path": f"clips/{file_id}/{int(start * 1000):09d}.flac",
                "start": start,
                "end": start + CLIP_SECONDS,
                "duration": CLIP_SECONDS,
                "sample_rate": 24000,
                "text": text,
                "segments": _words(rng, text),
                "language": "en",
                "speaker": f"spk{(f * 7 + c) % SPEAKERS}",
                "funnel_seconds": CLIP_SECONDS,
                "fingerprint": fp,
                "landmarks": lm,
                **{f"q{k:02d}": float(rng.normal()) for k in range(20)},
            }
            kept.append(row)
            funnel.append({"file_id": file_id, "seconds": CLIP_SECONDS, "reason": ""})
            n += 1
        files_row = {"file_id": file_id, "path": kept[0]["path"], "status": "ok"}
        store.add(file_id, {"files": [files_row], "kept": kept, "funnel": funnel, "rejected": []})
    store.flush()
    return ids


def child(out: str, module_path: str, clips: int, duplicates: bool) -> None:
    """One finalise in this process; prints a JSON line."""
    if module_path == "current":
        from pipelines.jobs import clean
    else:
        spec = importlib.util.spec_from_file_location("clean_before", module_path)
        clean = importlib.util.module_from_spec(spec)
        sys.modules["clean_before"] = clean  # its dataclasses look their module up
        spec.loader.exec_module(clean)
    from audio_ops.balance import BalanceConfig
    from audio_ops.duplicates import DuplicateConfig
    from pipelines.engine.resume import ShardStore

    config = clean.CleanRunConfig(
        duplicates=DuplicateConfig(enabled=duplicates),
        # each speaker has about 10 % more hours than the cap
        balance=BalanceConfig(
            by="speaker", max_hours_per_speaker=clips * CLIP_SECONDS / 3600 / SPEAKERS / 1.1
        ),
    )
    job = clean.CleanJob(out, config)
    job._store = ShardStore(out, job.schemas([]))
    seen = job.store.committed_ids()
    before = own_memory("VmRSS")
    t0 = time.perf_counter()
    counts = job.finalise(seen)
    seconds = time.perf_counter() - t0
    import pyarrow.parquet as pq

    table = pq.read_table(os.path.join(out, "clips.parquet"), columns=["clip_id"])
    ids = table["clip_id"].to_pylist()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rss_before_mib": before / 2**20,
                "growth_mib": (own_memory("VmHWM") - before) / 2**20,
                "clips_kept": counts["clips_kept"],
                "sorted": ids == sorted(ids),
                "dropped": {k: v for k, v in job.funnel.clips_dropped.items() if v},
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, nargs="+", default=[10_000, 40_000, 80_000])
    parser.add_argument("--before", help="a git revision whose clean.py runs beside this one")
    parser.add_argument(
        "--duplicates",
        nargs="+",
        choices=["on", "off"],
        default=["on"],
        help="run with the duplicate check on (the default config), off, or both",
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), args.child[3] == "on")
        return
    versions = {"current": "current"}
    work = tempfile.mkdtemp(prefix="voxflow-finalise-")
    if args.before:
        source = subprocess.run(
            ["git", "show", f"{args.before}:pipelines/jobs/clean.py"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        path = os.path.join(work, "clean_before.py")
        Path(path).write_text(source)
        versions[f"before ({args.before})"] = path
    rows = []
    for clips in args.clips:
        out = os.path.join(work, f"out{clips}")
        t0 = time.perf_counter()
        build(out, clips)
        store_mib = sum(p.stat().st_size for p in Path(out).rglob("*.parquet")) / 2**20
        print(
            f"{clips} clips: store {store_mib:.0f} MiB built in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        for duplicates in args.duplicates:
            for name, module in versions.items():
                run = subprocess.run(
                    [sys.executable, __file__, "--child", out, module, str(clips), duplicates],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                result = json.loads(run.stdout.strip().splitlines()[-1])
                rows.append(
                    {
                        "clips": clips,
                        "duplicates": duplicates,
                        "version": name,
                        "store_mib": store_mib,
                        **result,
                    }
                )
                print(
                    f"  duplicates {duplicates}, {name}: {result['seconds']:.1f} s, driver grew "
                    f"{result['growth_mib']:.0f} MiB, kept {result['clips_kept']}, "
                    f"dropped {result['dropped']}, in id order {result['sorted']}",
                    flush=True,
                )
        shutil.rmtree(out, ignore_errors=True)
    save({"machine": machine(), "rows": rows}, "clean_finalise")


if __name__ == "__main__":
    main()
