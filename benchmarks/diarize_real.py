"""Diarization on real speech: voxflow's methods and the peer senko, on the same files, in one run.

Sets (``--sets``):

- ``ami``: the 10 real recordings of ``shared/realdata/diar`` (9 AMI meeting excerpts and
  pyannote's sample, 30 s each, 1-4 speakers, overlap; AMI participants recur across files);
- ``dev``: 20 conversations of real LibriSpeech voices over real noise, made by
  ``benchmarks/real_conversations.py --split dev --seed 1`` (the set voxflow was tuned on);
- ``test``: 20 more, ``--split test --seed 2``: other utterances and other noise recordings, never
  tuned on (held out);
- ``long_dev`` and ``long_test``: meeting-length conversations of 4-5 of those voices (10 minutes
  each, :data:`SIMULATED`), ``long_test`` from the held-out split;
- ``dev2`` and ``test2``: 20 more of each split (seeds 3 and 4: the same utterances and noise
  recordings as ``dev`` and ``test``, laid out, mixed and overlapped anew). ``test2`` was made
  and scored once, after the choices it reports on (2026-12-07).

For every set, each voxflow config (``--configs``: ``default``, or ``NAME=FILE``) runs as
``voxflow diarize`` and is scored with ``voxflow eval diarization`` (DER with a 0.25 s collar,
overlap scored; DER without collar; exact speaker counts; cross-file pair precision, recall and
F1 of the global ids). senko's own pipeline (``benchmarks/senko_peer.py``) runs on the same files
and is scored the same way (it has no cross-file ids).

    python benchmarks/diarize_real.py --sets ami dev --configs default windows=examples/windows.yaml

Speeds here are of small sets on a shared machine, with voxflow's Ray start-up included; the
throughput target is measured by ``benchmarks/diarize_speed.py`` on 10 hours.

``--oracle`` also scores the segmentation method with its clustering replaced by the reference
(each chunk's local speakers matched one-to-one to the reference speakers they overlap most):
the DER that segmentation-3.0 and the reconstruction allow, whatever the embeddings and the
clustering do.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.common import machine, save  # noqa: E402

REALDATA = ROOT.parent / "shared" / "realdata"


#: The simulated sets: (split, files, seed, seconds per file, speakers per file). ``long_*`` are
#: meeting-length conversations of 4-5 people, 10 minutes each (a file is made as long as the
#: shortest length when its speakers' utterances are fewer: they are reused, a split has 4-6 per
#: speaker); ``long_dev`` is one of the sets the small-cluster floor was chosen on, ``long_test``
#: was scored after the choice. ``dev2`` and ``test2``: fresh layouts of each split.
SIMULATED = {
    "dev": ("dev", 20, 1, None, None),
    "test": ("test", 20, 2, None, None),
    "long_dev": ("dev", 4, 7, (600.0, 900.0), (4, 5)),
    "long_test": ("test", 5, 21, (600.0, 1800.0), (4, 5)),
    "dev2": ("dev", 20, 3, None, None),
    "test2": ("test", 20, 4, None, None),
}


def real_sets(work: Path, realdata: Path, names: list[str] | None = None) -> dict[str, Path]:
    """The sets by name (``names``, default ami, dev and test): folders with ``audio/`` and
    ``rttm/`` (the simulated ones made once)."""
    from benchmarks.real_conversations import make_conversations

    sets = {"ami": realdata / "diar"}
    for name in names or ["dev", "test"]:
        if name not in SIMULATED:
            continue
        split, n, seed, duration, speakers = SIMULATED[name]
        root = work / f"conversations_{name}"
        if not (root / "manifest.csv").exists():
            make_conversations(str(root), split, n, seed, str(realdata), duration, speakers)
        sets[name] = root
    return sets


def score(ref: Path, hyp: Path) -> dict[str, float | None]:
    """The figures of ``voxflow eval diarization`` as numbers."""
    from pipelines.reports.report import evaluate_run

    report = evaluate_run(str(ref), str(hyp))
    pct = lambda v: None if v is None else round(100 * v, 2)  # noqa: E731
    return {
        "der_pct": pct(report.der),
        "der_collar0_pct": pct(report.der_collar0),
        "miss_pct": pct(report.miss),
        "false_alarm_pct": pct(report.false_alarm),
        "confusion_pct": pct(report.confusion),
        "count_exact_pct": pct(report.count_exact),
        "pair_precision_pct": pct(report.pair_precision),
        "pair_recall_pct": pct(report.pair_recall),
        "pair_f1_pct": pct(report.pair_f1),
        "true_pairs": report.true_pairs,
        "global_speakers": report.global_speakers,
    }


def run_voxflow(audio: Path, out: Path, config: Path | None) -> float:
    """``voxflow diarize`` into a fresh ``out``; returns its wall seconds (``_run.json``)."""
    cmd = [sys.executable, "-m", "pipelines.cli", "diarize", str(audio), "--out", str(out)]
    cmd += ["--overwrite", "-q"] + (["--config", str(config)] if config else [])
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return float(json.loads((out / "_run.json").read_text())["wall_seconds"])


def oracle_ceiling(root: Path, out: Path) -> None:
    """RTTMs of the segmentation method with oracle clustering (see the module docstring)."""
    from scipy.optimize import linear_sum_assignment

    from audio_ops.io import load_audio
    from audio_ops.neural_diarization import (
        SegmentationDiarizationConfig,
        binary_to_turns,
        reconstruct,
    )
    from audio_ops.segmentation import (
        chunk_starts,
        frame_offsets,
        load_segmentation,
        speaker_count,
        total_frames_of,
    )
    from pipelines.reports.evaluate import read_rttm_dir, rttm_line

    config = SegmentationDiarizationConfig(device="cpu")
    model = load_segmentation(config.segmentation_config())
    reference = read_rttm_dir(root / "rttm")
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted((root / "audio").iterdir()):
        stem = path.name.split(".")[0]
        audio = load_audio(str(path), 16000)[0]
        starts = chunk_starts(len(audio), model.chunk_samples, int(config.step * 16000))
        activity = model.activity_at(audio, starts)
        chunks, frames, local = activity.shape
        names = sorted({t.speaker for t in reference[stem]})
        hard = np.full((chunks, local), -2)
        for c, start in enumerate(starts / 16000):
            centres = start + np.arange(frames) * model.frame_step + model.frame_duration / 2
            truth = np.zeros((frames, len(names)))
            for t in reference[stem]:
                inside = (centres >= t.start) & (centres < t.start + t.duration)
                truth[inside, names.index(t.speaker)] = 1
            rows, cols = linear_sum_assignment(activity[c].T @ truth, maximize=True)
            for r, k in zip(rows, cols, strict=True):
                if activity[c, :, r].any():
                    hard[c, r] = k
        offsets = frame_offsets(starts / 16000, model.frame_step)
        total = total_frames_of(len(audio), model.frame_step, frames)
        count = speaker_count(activity, offsets, total)
        binary, support = reconstruct(activity, hard, count, offsets, total, len(names))
        turns = binary_to_turns(
            binary,
            support,
            model.frame_step,
            model.frame_duration,
            len(audio) / 16000,
            config.min_duration_off,
        )
        with open(out / f"{stem}.rttm", "w", encoding="utf-8") as f:
            for t in turns:
                f.write(rttm_line(stem, t.start, t.end - t.start, names[t.speaker]))


def audio_seconds(audio: Path) -> float:
    import soundfile as sf

    return sum(sf.info(str(p)).duration for p in sorted(audio.iterdir()) if p.is_file())


def run_senko_apart(audio_dir: Path, out: Path) -> dict | None:
    """The peer in a process of its own (``benchmarks/senko_peer.py``), so that its failing
    leaves voxflow's rows standing; ``None``, with the reason on stderr, when it fails. (Its
    bundled ``libfbank_extractor.so`` needs AVX-512; on CPUs without it ``senko_peer`` computes
    the filterbank with torchaudio instead of dying of an illegal instruction.)"""
    cmd = [sys.executable, "-m", "benchmarks.senko_peer", str(audio_dir), "--out", str(out)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode == 0:  # its JSON is the last top-level object it prints
        lines = result.stdout.splitlines()
        first = max(i for i, line in enumerate(lines) if line == "{")
        return json.loads("\n".join(lines[first:]))
    why = "illegal instruction" if result.returncode in (-4, 132) else result.stderr[-500:]
    print(f"senko failed on {audio_dir} (exit {result.returncode}: {why})", file=sys.stderr)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=["ami", "dev", "test"])
    ap.add_argument("--configs", nargs="+", default=["default"])
    ap.add_argument("--no-senko", action="store_true", help="skip the peer")
    ap.add_argument("--oracle", action="store_true", help="also score oracle clustering")
    ap.add_argument("--realdata", type=Path, default=REALDATA)
    ap.add_argument("--work", type=Path, default=Path("/tmp/diarize_real"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    sets = real_sets(args.work, args.realdata, args.sets)
    configs = [
        ("default", None) if item == "default" else (item.split("=")[0], Path(item.split("=")[1]))
        for item in args.configs
    ]
    rows = []
    header = (
        f"{'set':<9} {'system':<10} {'DER%':>6} {'DER0%':>6} {'miss':>5} {'FA':>5} {'conf':>5} "
        f"{'count%':>6} {'pairP%':>7} {'pairR%':>7} {'pairF1%':>7} {'xRT':>6}"
    )
    print(header)
    for set_name in args.sets:
        root = sets[set_name]
        seconds = audio_seconds(root / "audio")
        systems = []
        for name, config in configs:
            out = args.work / f"out_{set_name}_{name}"
            wall = run_voxflow(root / "audio", out, config.resolve() if config else None)
            systems.append((name, out, seconds / wall))
        if not args.no_senko:
            out = args.work / f"out_{set_name}_senko"
            timing = run_senko_apart(root / "audio", out)
            if timing is not None:
                systems.append(("senko", out, timing["x_real_time"]))
        if args.oracle:
            out = args.work / f"out_{set_name}_oracle"
            oracle_ceiling(root, out)
            systems.append(("oracle", out, float("nan")))
        for name, out, speed in systems:
            scores = score(root / "rttm", out)
            rows.append({"set": set_name, "system": name, "x_real_time": speed, **scores})
            fmt = lambda v: "   n/a" if v is None else f"{v:6.1f}"  # noqa: E731
            print(
                f"{set_name:<9} {name:<10} {scores['der_pct']:6.2f} {scores['der_collar0_pct']:6.2f} "
                f"{scores['miss_pct']:5.1f} {scores['false_alarm_pct']:5.1f} "
                f"{scores['confusion_pct']:5.1f} {scores['count_exact_pct']:6.0f} "
                f"{fmt(scores['pair_precision_pct'])} {fmt(scores['pair_recall_pct'])} "
                f"{fmt(scores['pair_f1_pct'])} {speed:6.1f}",
                flush=True,
            )
    path = save({"machine": machine(), "started": time.time(), "rows": rows}, "diarize_real")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
