"""Speaker ids and balance in ``voxflow clean`` on real voices: is each kept clip's
``speaker_global`` its person, the same id in every file?

    python benchmarks/clean_speakers.py               # 10 held-out conversations, about 3 minutes
    python benchmarks/clean_speakers.py --n 20 --split dev --seed 1

The corpus is ``--n`` conversations of ``benchmarks/real_conversations.py`` (real LibriSpeech
voices of 10 speakers over real recorded noise), by default the ``test`` split with seed 2: the
held-out set of ``benchmarks/diarize_real.py``, never tuned on. ``voxflow clean`` runs with
``speaker_ids: diarize``, no transcription, the duplicate check off (the conversations reuse
utterances on purpose) and ``balance: {max_hours_per_speaker: CAP}``. Each kept clip's person is
the reference speaker with the most speech inside it. Reported:

- clip purity: the share of kept clips whose global id's majority person is their person;
- person coverage: the share of kept clips on their person's majority global id;
- global ids against people;
- the hours each speaker keeps against the cap.

Writes ``benchmarks/results/clean_speakers.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import machine, save  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--cap-hours", type=float, default=0.02)
    ap.add_argument("--work", type=Path, default=Path("/tmp/clean_speakers"))
    ap.add_argument("--realdata", type=Path, default=None)
    args = ap.parse_args()

    import pandas as pd

    from benchmarks.real_conversations import make_conversations
    from pipelines.cli import main as cli
    from pipelines.reports.evaluate import read_rttm

    corpus = args.work / f"{args.split}_{args.seed}"
    if not (corpus / "audio").is_dir():
        make_conversations(
            str(corpus),
            args.split,
            args.n,
            args.seed,
            str(args.realdata) if args.realdata else None,
        )
    config = args.work / "clean.yaml"
    config.write_text(
        "steps: [speaker]\n"
        "clips: {min_seconds: 1.0, max_seconds: 12.0, single_speaker: split}\n"
        "speaker_ids: diarize\n"
        "duplicates: {enabled: false}\n"
        f"balance: {{max_hours_per_speaker: {args.cap_hours}}}\n"
    )
    out = args.work / "out"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    rc = cli(["clean", str(corpus / "audio"), "--out", str(out), "--config", str(config), "-q"])
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"voxflow clean failed ({rc})")

    kept = pd.read_parquet(out / "clips.parquet")
    rejected = pd.read_parquet(out / "rejected")
    capped = rejected[rejected["reason"] == "speaker_cap"]
    rows = [(r.path, r.start, r.end, r.speaker_global, "kept") for r in kept.itertuples()]
    rows += [(r.path, r.start, r.end, r.speaker_global, "capped") for r in capped.itertuples()]
    pairs = []
    for path, start, end, speaker, kind in rows:
        reference = read_rttm(corpus / "rttm" / f"{Path(path).stem}.rttm")
        heard: Counter = Counter()
        for turn in reference:
            overlap = min(end, turn.start + turn.duration) - max(start, turn.start)
            if overlap > 0:
                heard[turn.speaker] += overlap
        person = heard.most_common(1)[0][0] if heard else None
        pairs.append((speaker, person, kind))
    # Before the cap: every clip the speaker check kept (kept + capped) is scored.
    by_global: dict = {}
    by_person: dict = {}
    for speaker, person, _ in pairs:
        by_global.setdefault(speaker, Counter())[person] += 1
        by_person.setdefault(person, Counter())[speaker] += 1
    purity = sum(max(c.values()) for c in by_global.values()) / len(pairs)
    coverage = sum(max(c.values()) for c in by_person.values()) / len(pairs)
    hours = (kept.groupby("speaker_global")["duration"].sum() / 3600).to_dict()
    funnel = pd.read_parquet(out / "funnel.parquet").set_index("stage")["hours"].to_dict()
    result = {
        "split": args.split,
        "seed": args.seed,
        "files": args.n,
        "clips_scored": len(pairs),
        "clips_kept": len(kept),
        "clips_capped": len(capped),
        "clip_purity": purity,
        "person_coverage": coverage,
        "global_ids": len(by_global),
        "people": len(by_person),
        "cap_hours": args.cap_hours,
        "kept_hours_per_speaker": hours,
        "funnel_hours": funnel,
        "wall_seconds": wall,
        "machine": machine(),
    }
    text = (
        f"{args.split} (seed {args.seed}, {args.n} files): {len(pairs)} clips scored, purity "
        f"{purity:.3f}, coverage {coverage:.3f}, {len(by_global)} global ids for "
        f"{len(by_person)} people; kept hours per speaker max {max(hours.values()):.4f} "
        f"(cap {args.cap_hours}); {len(capped)} clips capped; {wall:.0f} s"
    )
    result["text"] = text
    path = save(result, "clean_speakers")
    print(text)
    print(json.dumps(funnel))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
