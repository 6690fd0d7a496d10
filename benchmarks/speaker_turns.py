"""Memory and time of the diarization turns ``voxflow clean`` holds with ``speaker_ids``.

    python benchmarks/speaker_turns.py [--turns 250000 1000000] [--before REV]

With ``speaker_ids`` (a ``voxflow diarize`` run over the same files), every speaker-check actor
reads the run's turns to check clips on them, and the driver reads them again at the end to give
each kept clip its ``speaker_global``. A corpus has about 1,200 turns an hour, so both grow with
the corpus. This benchmark writes the ``segments/`` table of a diarize run of N turns (files of
``--file-minutes`` minutes, a turn every 3 s, parts of 100 files, columns as ``voxflow diarize``
writes them), then in a fresh process per measurement:

- **actor**: builds one ``SpeakerCheckOperator`` on it (what each actor of the speaker step
  does) and reports the growth of the process's peak resident memory (``VmHWM`` after, less
  ``VmRSS`` before) and the seconds it took;
- **driver**: reads the ``speaker_global`` turns as ``CleanJob`` does and gives the clips of
  every file (6 s clips every 7 s, as cut from the same files) their speaker, the peak growth
  and seconds of both steps together, and a checksum of the result.

``--before REV`` runs the same two measurements on a ``git worktree`` of that revision in the same
run (the versions before ``audio_ops.balance.TurnIndex`` held the turns as Python tuples).

Writes ``benchmarks/results/speaker_turns.json``.
"""

from __future__ import annotations

import argparse
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

TURN_SECONDS = 3.0
FILES_PER_PART = 100
CLIP_SECONDS, CLIP_EVERY = 6.0, 7.0


def build(folder: str, turns: int, file_minutes: float, seed: int = 0) -> int:
    """A diarize run's ``segments/`` of ``turns`` turns in ``folder``; the number of files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    per_file = int(file_minutes * 60 / TURN_SECONDS)
    files = -(-turns // per_file)
    out = Path(folder) / "segments"
    out.mkdir(parents=True)
    for first in range(0, files, FILES_PER_PART):
        cols: dict[str, list] = {k: [] for k in ("file_id", "path", "start", "end")}
        speakers, globals_ = [], []
        for f in range(first, min(first + FILES_PER_PART, files)):
            n = min(per_file, turns - f * per_file)
            starts = np.arange(n) * TURN_SECONDS + rng.uniform(0, 0.3, n)
            ends = starts + rng.uniform(1.0, TURN_SECONDS + 0.5, n)  # some overlap the next
            local = rng.integers(0, 4, n)
            cols["file_id"] += [f"{f:016x}"] * n
            cols["path"] += [f"s3://corpus/shows/show{f % 997}/episode{f}.flac"] * n
            cols["start"] += starts.tolist()
            cols["end"] += ends.tolist()
            speakers += [f"S{k}" for k in local]
            globals_ += [f"G{(f * 4 + k) % 5000:05d}" for k in local]
        table = pa.table(
            {
                **cols,
                "duration": np.subtract(cols["end"], cols["start"]),
                "speaker": speakers,
                "speaker_global": globals_,
                "confidence": rng.uniform(0.5, 1.0, len(speakers)),
                "overlap": np.zeros(len(speakers), dtype=bool),
            }
        )
        pq.write_table(table, out / f"part-{first // FILES_PER_PART:05d}.parquet")
    return files


def child(root: str, folder: str, what: str, files: int, file_minutes: float) -> None:
    """One measurement in this process with ``root``'s code; prints a JSON line."""
    sys.path.insert(0, root)
    from audio_ops.clips import ClipConfig
    from audio_ops.speakers import SpeakerCheckConfig
    from pipelines.jobs import clean

    clips_per_file = int((file_minutes * 60 - CLIP_SECONDS) // CLIP_EVERY) + 1
    before = own_memory("VmRSS")
    t0 = time.perf_counter()
    checksum = None
    if what == "actor":
        operator = clean.SpeakerCheckOperator(
            SpeakerCheckConfig(source="diarization"), ClipConfig(), diarization=folder
        )
        assert operator.encoder is None
    else:
        from audio_ops.balance import assign_speakers

        job = clean.CleanJob(
            os.path.join(folder, "clean"), clean.CleanRunConfig(speaker_ids=folder)
        )
        spans = (
            (f"{f:016x}", c * CLIP_EVERY, c * CLIP_EVERY + CLIP_SECONDS)
            for f in range(files)
            for c in range(clips_per_file)
        )
        found = assign_speakers(spans, job._speaker_turns())
        checksum = [
            len(found),
            sum(s is not None for s, _ in found),
            round(sum(share for _, share in found), 3),
            sum(int(s[1:]) for s, _ in found if s),
        ]
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "seconds": seconds,
                "growth_mib": (own_memory("VmHWM") - before) / 2**20,
                "checksum": checksum,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, nargs="+", default=[250_000, 1_000_000])
    parser.add_argument("--file-minutes", type=float, default=10.0)
    parser.add_argument("--before", help="a git revision run beside this one")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        root, folder, what, files, minutes = args.child
        child(root, folder, what, int(files), float(minutes))
        return
    work = tempfile.mkdtemp(prefix="voxflow-turns-")
    versions = {"current": str(ROOT)}
    if args.before:
        tree = os.path.join(work, "before")
        subprocess.run(
            ["git", "worktree", "add", "--detach", tree, args.before],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        versions[f"before ({args.before})"] = tree
    rows = []
    try:
        for turns in args.turns:
            folder = os.path.join(work, f"diar{turns}")
            files = build(folder, turns, args.file_minutes)
            mib = sum(p.stat().st_size for p in Path(folder).rglob("*.parquet")) / 2**20
            print(f"{turns} turns in {files} files ({mib:.0f} MiB of parquet)", flush=True)
            for what in ("actor", "driver"):
                for name, root in versions.items():
                    run = subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "--child",
                            root,
                            folder,
                            what,
                            str(files),
                            str(args.file_minutes),
                        ],
                        check=True,
                        capture_output=True,
                        text=True,
                    )
                    result = json.loads(run.stdout.strip().splitlines()[-1])
                    rows.append({"turns": turns, "files": files, "what": what, "version": name})
                    rows[-1].update(result)
                    print(
                        f"  {what}, {name}: grew {result['growth_mib']:.0f} MiB in "
                        f"{result['seconds']:.1f} s"
                        + (f", checksum {result['checksum']}" if result["checksum"] else ""),
                        flush=True,
                    )
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        if args.before:
            subprocess.run(
                ["git", "worktree", "remove", "--force", versions.popitem()[1]],
                cwd=ROOT,
                check=False,
                capture_output=True,
            )
        shutil.rmtree(work, ignore_errors=True)
    save({"machine": machine(), "file_minutes": args.file_minutes, "rows": rows}, "speaker_turns")


if __name__ == "__main__":
    main()
