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
- the hours each speaker keeps against the cap;
- single-speaker clips: the share of the reference speech inside kept clips that is not the
  clip's person (another voice heard in a training clip), and the share of kept clips with 0.5 s
  or more of another voice; the kept hours (what the check lets through).

``--source`` picks the speaker step's source (``speaker.source``): ``auto`` (the diarization, as
``speaker_ids`` is set), ``embeddings`` (the clip embedded and clustered on its own) or
``diarization``.

Writes ``benchmarks/results/clean_speakers_SPLIT_SOURCE.json``.
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
    ap.add_argument("--source", default="auto", choices=["auto", "embeddings", "diarization"])
    ap.add_argument("--min-speaker-seconds", type=float, default=None)
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
    speaker = f"speaker: {{source: {args.source}"
    if args.min_speaker_seconds is not None:
        speaker += f", min_speaker_seconds: {args.min_speaker_seconds}"
    config.write_text(
        "steps: [speaker]\n"
        f"{speaker}}}\n"
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
    other_seconds = all_seconds = 0.0
    mixed_clips = 0
    for path, start, end, speaker, kind in rows:
        reference = read_rttm(corpus / "rttm" / f"{Path(path).stem}.rttm")
        heard: Counter = Counter()
        for turn in reference:
            overlap = min(end, turn.start + turn.duration) - max(start, turn.start)
            if overlap > 0:
                heard[turn.speaker] += overlap
        person = heard.most_common(1)[0][0] if heard else None
        pairs.append((speaker, person, kind))
        other = sum(heard.values()) - (heard[person] if person else 0.0)
        other_seconds += other
        all_seconds += sum(heard.values())
        mixed_clips += other >= 0.5
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
        "speaker_source": args.source,
        "min_speaker_seconds": args.min_speaker_seconds,
        "other_voice_share": other_seconds / all_seconds if all_seconds else 0.0,
        "clips_with_other_voice": mixed_clips / len(pairs) if pairs else 0.0,
        "hours_before_cap": sum((e - s) for _, s, e, _, _ in rows) / 3600,
        "cap_hours": args.cap_hours,
        "kept_hours_per_speaker": hours,
        "funnel_hours": funnel,
        "wall_seconds": wall,
        "machine": machine(),
    }
    text = (
        f"{args.split} (seed {args.seed}, {args.n} files, speaker source {args.source}): "
        f"{len(pairs)} clips scored ({result['hours_before_cap']:.4f} h), other voices "
        f"{100 * result['other_voice_share']:.1f} % of their speech, "
        f"{100 * result['clips_with_other_voice']:.1f} % of clips with >= 0.5 s of one; purity "
        f"{purity:.3f}, coverage {coverage:.3f}, {len(by_global)} global ids for "
        f"{len(by_person)} people; kept hours per speaker max {max(hours.values()):.4f} "
        f"(cap {args.cap_hours}); {len(capped)} clips capped; {wall:.0f} s"
    )
    result["text"] = text
    path = save(result, f"clean_speakers_{args.split}_{args.source}")
    print(text)
    print(json.dumps(funnel))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
