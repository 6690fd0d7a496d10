"""Diarization and global-identity quality of ``voxflow diarize`` on synthetic evaluation sets,
with the linking cues on (the default) and off.

For each seed, makes (or reuses) ``python examples/synth_corpus.py eval --n 20 --seed S``, runs
``voxflow diarize`` and ``voxflow eval diarization``, and reads DER, speaker-count accuracy and
global identity off the report. The cues-off run sets ``linking.pitch_weight: 0`` and
``diarization.embedding.cue_stride: 0``; it also uses the old linking threshold (0.35).

    python benchmarks/diarize_quality.py --seeds 1 2 3 --work /tmp/diarize_quality

``--configs default profiles=examples/profiles.yaml`` runs those configs instead of the cues
on / off pair (``default``: no config file; ``NAME=FILE``: that YAML).

``--thresholds 0.15 0.2 ...`` also re-links each cues-on run at those linking thresholds: the
run is repeated with only ``linking.threshold`` changed, which reuses its committed files and
redoes only the linking (see pipelines/engine/resume.py), and each is scored the same way.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, save  # noqa: E402

CUES_OFF = """\
diarization:
  embedding: {cue_stride: 0}
linking: {threshold: 0.35, pitch_weight: 0}
"""


def make_set(work: Path, seed: int) -> Path:
    root = work / f"eval_seed{seed}"
    if not (root / "manifest.csv").exists():
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "examples" / "synth_corpus.py"),
                "eval",
                "--out",
                str(root),
                "--n",
                "20",
                "--seed",
                str(seed),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return root


def diarize_and_score(
    root: Path, out: Path, config: Path | None, overwrite: bool = True
) -> dict[str, float]:
    cmd = [sys.executable, "-m", "pipelines.cli", "diarize", str(root / "audio"), "--out", str(out)]
    cmd += ["--overwrite", "-q"] if overwrite else ["-q"]
    if config is not None:
        cmd += ["--config", str(config)]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "eval",
            "diarization",
            "--ref",
            str(root / "rttm"),
            "--hyp",
            str(out),
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    overall = re.search(r"^OVERALL\s+([\d.]+)", report, re.M)
    count = re.search(r"speaker count exact on ([\d.]+)%", report)
    identity = re.search(
        r"global identity: ([\d.]+)% .*?; (\d+) global ids merge distinct voices; (\d+) global",
        report,
    )
    if not (overall and count and identity):
        raise RuntimeError(f"could not read the report:\n{report}")
    return {
        "der_pct": float(overall.group(1)),
        "count_exact_pct": float(count.group(1)),
        "identity_pct": float(identity.group(1)),
        "merged_ids": int(identity.group(2)),
        "global_speakers": int(identity.group(3)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--work", type=Path, default=Path("/tmp/diarize_quality"))
    ap.add_argument("--include-sample", action="store_true", default=True)
    ap.add_argument(
        "--thresholds", type=float, nargs="*", default=[], help="also re-link at these thresholds"
    )
    ap.add_argument(
        "--configs",
        nargs="+",
        default=None,
        help="configs to run instead of cues on/off: 'default' or NAME=FILE",
    )
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    off = args.work / "cues_off.yaml"
    off.write_text(CUES_OFF)
    configs: list[tuple[str, Path | None]] = [("on", None), ("off", off)]
    if args.configs:
        configs = []
        for item in args.configs:
            name, _, file = item.partition("=")
            configs.append(("on", None) if item == "default" else (name, Path(file).resolve()))
    sets = [("sample", ROOT / "examples" / "sample")] if args.include_sample else []
    sets += [(f"seed {s}", make_set(args.work, s)) for s in args.seeds]
    rows = []
    print(
        f"{'set':<8} {'config':<8} {'DER%':>6} {'count%':>7} {'identity%':>10} {'merged':>7} {'global':>7}"
    )
    for name, root in sets:
        for cues, config in configs:
            tag = name.replace(" ", "")
            scores = diarize_and_score(root, args.work / f"out_{tag}_{cues}", config)
            rows.append({"set": name, "cues": cues, **scores})
            print(
                f"{name:<8} {cues:<8} {scores['der_pct']:6.2f} {scores['count_exact_pct']:7.1f} "
                f"{scores['identity_pct']:10.1f} {scores['merged_ids']:7d} {scores['global_speakers']:7d}",
                flush=True,
            )
            if cues != "on":
                continue
            for threshold in args.thresholds:
                relink = args.work / f"threshold_{threshold}.yaml"
                relink.write_text(f"linking: {{threshold: {threshold}}}\n")
                scores = diarize_and_score(
                    root, args.work / f"out_{tag}_{cues}", relink, overwrite=False
                )
                rows.append({"set": name, "cues": cues, "threshold": threshold, **scores})
                print(
                    f"{name:<8} {cues:<4} threshold {threshold}: identity "
                    f"{scores['identity_pct']:.1f} %, merged ids {scores['merged_ids']}, "
                    f"global {scores['global_speakers']}",
                    flush=True,
                )
    path = save({"machine": machine(), "rows": rows}, "diarize_quality")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
