"""Speed of every operator of ``voxflow clean``, and of the job end to end.

    HF_HUB_OFFLINE=1 python benchmarks/clean_speed.py [--corpus DIR] [--minutes 12] [--runs 3]

- Corpus: synthetic conversations (``examples/synth_corpus.py`` voices, 2-4 speakers, some
  overlap), every file under background noise at 5-20 dB SNR (pink, brown, white, tones, hum),
  1.5-3 min each, at least ``--minutes`` in all; one file in three is 44.1 kHz stereo, the rest
  16 kHz mono, all FLAC. Generated once into ``--corpus`` (reused when its manifest exists).
- Stages: the operators ``voxflow clean`` runs, built from ``examples/clean.yaml`` exactly as the
  job builds them (``pipelines.jobs.clean._step_operator``), run one after another in this process on
  one thread each, every stage fed the previous stage's rows: segment (decode + Silero VAD +
  loudness + cutting at pauses), load (each clip decoded with its file's loudness gain: clean's
  standardisation), enhance, speaker check, transcribe, quality; plus ``audio_ops.standardize``
  on whole files, and separation with a *randomly initialised* HDemucs of the real size
  (``hdemucs_high``, 48 channels, 44.1 kHz, 10 s chunks: the real compute, not the real output),
  on the first ``--separate-seconds`` of clips. For each: audio seconds processed per CPU second,
  and x real time (audio seconds per wall second) of the audio the stage sees (the clip stages
  see only the clips) and of the whole corpus.
- End to end: ``voxflow clean CORPUS --config examples/clean.yaml`` in a fresh process that starts
  (and stops) its own local Ray on every core, median of ``--runs`` runs, with peak RSS.

Writes ``benchmarks/results/clean_speed.json`` and ``clean_speed.md`` (the table in
``benchmarks/README.md``). The machine's load average is recorded: on a shared machine speeds move
by tens of percent between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.common import machine, run_measured, save  # noqa: E402

CLEAN_YAML = REPO / "examples" / "clean.yaml"
AUDIO_EXT = {".wav", ".flac", ".ogg", ".mp3"}


def make_corpus(root: Path, minutes: float, seed: int) -> None:
    """Noisy synthetic conversations, at least ``minutes`` long in all."""
    sys.path.insert(0, str(REPO / "examples"))
    import synth_corpus as sc

    rng = np.random.default_rng(seed)
    voices = sc._working_voices(None)
    print(f"synthesizing an utterance pool: {len(voices)} voices", flush=True)
    pool = sc.build_pool(voices, rng, per_voice=10)
    writer = sc.CorpusWriter(root)
    total, i = 0.0, 0
    while total < minutes * 60:
        frng = np.random.default_rng(rng.integers(2**32))
        k = int(frng.integers(2, 5))
        speakers = [voices[j].name for j in frng.choice(len(voices), k, replace=False)]
        stereo = i % 3 == 2
        spec = sc.FileSpec(
            rel_path=f"audio/noisy_{i:02d}.flac",
            speakers=speakers,
            duration_s=float(np.round(frng.uniform(90, 180), 1)),
            sample_rate=44100 if stereo else 16000,
            channels=2 if stereo else 1,
            overlap_prob=0.1,
            noise_snr_db=float(frng.choice([5, 10, 15, 20])),
            noise_kind=sc.NOISE_KINDS[i % len(sc.NOISE_KINDS)],
        )
        row = writer.add(spec, frng, pool=pool)
        total += float(row["duration"])
        i += 1
        print(f"{row['path']:28s} {row['duration']:>8s}s {row['condition']}", flush=True)
    writer.finish()


def corpus_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "audio").rglob("*") if p.suffix.lower() in AUDIO_EXT)


def cpu_time() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Timer:
    """CPU and wall time of the stages, and the audio each one saw."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, float]] = {}

    def run(self, name: str, audio_seconds: float, fn, *args):
        c0, w0 = cpu_time(), time.perf_counter()
        result = fn(*args)
        entry = self.stages.setdefault(name, {"audio_s": 0.0, "cpu_s": 0.0, "wall_s": 0.0})
        entry["cpu_s"] += cpu_time() - c0
        entry["wall_s"] += time.perf_counter() - w0
        entry["audio_s"] += audio_seconds
        return result


def in_batches(rows: dict[str, np.ndarray], size: int):
    n = len(rows["file_id"])
    for i in range(0, n, size):
        yield {k: v[i : i + size] for k, v in rows.items()}


def concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    from pipelines.engine.stages import _concat

    return _concat(parts)


def ok_rows(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    keep = np.flatnonzero(rows["status"] == "ok")
    return {k: v[keep] for k, v in rows.items()}


def random_hdemucs_high(directory: Path) -> Path:
    """A randomly initialised ``hdemucs_high`` (the default bundle's architecture), saved."""
    import torch
    from safetensors.torch import save_file

    from audio_ops.separation import MUSDB_SOURCES, build_hdemucs

    torch.manual_seed(0)
    model = build_hdemucs("hdemucs_high", MUSDB_SOURCES, 48)
    path = directory / "hdemucs_high_random.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def staged(files: list[Path], corpus_seconds: float, separate_seconds: float, work: Path):
    """clean's operators in this process, one thread each, stage by stage."""
    import torch

    from audio_ops.io import audio_info, load_audio
    from audio_ops.separation import SeparateOperator, SeparationConfig
    from audio_ops.standardize import standardize
    from pipelines.engine.config import load_config
    from pipelines.jobs.clean import (
        CleanRunConfig,
        LoadClipOperator,
        SegmentOperator,
        _step_operator,
    )

    torch.set_num_threads(1)
    config = load_config(CleanRunConfig, str(CLEAN_YAML))
    config = replace(config, transcription={**config.transcription, "cpu_threads": 1})
    timer = Timer()

    # Whole files: decode alone (the floor), then standardisation of the decoded audio.
    for path in files:
        seconds = audio_info(str(path)).duration
        audio, rate = timer.run(
            "decode (whole files, native rate)", seconds, load_audio, str(path), None
        )
        timer.run("standardize (whole files)", seconds, standardize, audio, rate)

    segment = SegmentOperator(config)
    parts = []
    for path in files:
        seconds = audio_info(str(path)).duration
        batch = {"file_id": np.array([path.stem], object), "path": np.array([str(path)], object)}
        parts.append(timer.run("segment: decode + VAD + loudness + cut", seconds, segment, batch))
    rows = ok_rows(concat(parts))
    clip_seconds = float(rows["duration"].sum())
    print(f"{len(rows['file_id'])} clips, {clip_seconds:.0f} s", flush=True)

    loader = LoadClipOperator(config.sample_rate)
    rows = concat(
        [
            timer.run("load clips: decode + loudness gain", float(b["duration"].sum()), loader, b)
            for b in in_batches(rows, LoadClipOperator.batch_size)
        ]
    )
    sample = rows  # what separation is measured on (a prefix of it)
    for step in config.steps:
        cls, kwargs = _step_operator(step, config)
        operator = cls(**kwargs)
        batches = list(in_batches(ok_rows(rows), cls.batch_size))
        out = [timer.run(step, float(b["duration"].sum()), operator, b) for b in batches]
        rows = concat(out)

    weights = random_hdemucs_high(work)
    separator = SeparateOperator(
        SeparationConfig(
            model=str(weights),
            architecture="hdemucs_high",
            model_sample_rate=44100,
            chunk_seconds=10.0,
            overlap_seconds=1.0,
            device="cpu",
        )
    )
    done = 0.0
    for batch in in_batches(sample, 1):
        if done >= separate_seconds:
            break
        seconds = float(batch["duration"].sum())
        timer.run("separate (HDemucs high, random weights)", seconds, separator, batch)
        done += seconds

    report = {}
    for name, v in timer.stages.items():
        report[name] = {
            **v,
            "audio_s_per_cpu_s": v["audio_s"] / v["cpu_s"] if v["cpu_s"] else None,
            "x_real_time": v["audio_s"] / v["wall_s"],
            # Seconds of corpus per second of this stage's wall time; separation saw a sample of
            # the clips, so its time is scaled up to all of them.
            "corpus_x_real_time": corpus_seconds
            / (v["wall_s"] * (clip_seconds / v["audio_s"] if name.startswith("separate") else 1)),
        }
    add_cpu_shares(report)
    return report, clip_seconds


#: Stages measured beside clean's own (the decode floor, whole-file standardisation, separation).
NOT_IN_CLEAN = ("decode", "standardize", "separate")


def add_cpu_shares(stages: dict[str, dict[str, Any]]) -> None:
    """Each of clean's stages' share of the CPU time of all of clean's stages."""
    total = sum(v["cpu_s"] for k, v in stages.items() if not k.startswith(NOT_IN_CLEAN))
    for name, v in stages.items():
        v["cpu_share_of_clean"] = None if name.startswith(NOT_IN_CLEAN) else v["cpu_s"] / total


def end_to_end(corpus: Path, work: Path, runs: int) -> list[dict[str, Any]]:
    results = []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": "local"}
    for i in range(runs):
        out = work / f"clean_{i}"
        cmd = [sys.executable, "-m", "pipelines.cli", "clean", str(corpus / "audio")]
        cmd += ["--out", str(out), "--config", str(CLEAN_YAML), "-q"]
        result = run_measured(cmd, env)
        if result["returncode"] != 0:
            raise RuntimeError(result["output_tail"])
        run = json.loads((out / "_run.json").read_text())
        result["audio_seconds"] = run["counts"]["audio_seconds"]
        result["pipeline_wall_seconds"] = run["wall_seconds"]
        result["hours_kept"] = run.get("funnel", {}).get("hours_kept")
        results.append(result)
        print(
            f"clean run {i}: {result['wall_seconds']:.1f} s, {result['cpu_seconds']:.0f} CPU s, "
            f"load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    return results


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Corpus: {report['files']} files, {report['corpus_seconds'] / 60:.1f} min of noisy "
        f"synthetic conversations; {report['clip_seconds'] / 60:.1f} min in clips. "
        f"Machine: {report['machine']['cores']} cores ({report['machine']['cpu_model']}), "
        f"load average {report['load_average_before'][0]:.1f} before the run.",
        "",
        "| stage (one thread, in one process) | audio seen (s) | audio-s per CPU-s | x real time"
        " of the audio seen | x real time of the corpus | share of clean's CPU |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in report["stages"].items():
        share = v["cpu_share_of_clean"]
        lines.append(
            f"| {name} | {v['audio_s']:.0f} | {v['audio_s_per_cpu_s']:.1f} | "
            f"{v['x_real_time']:.1f} | {v['corpus_x_real_time']:.1f} | "
            f"{'' if share is None else f'{100 * share:.0f} %'} |"
        )
    e2e = report["end_to_end"]
    lines += [
        f"| **`voxflow clean` end to end** ({e2e['cpus']} CPUs, fresh process, Ray start "
        f"included; median of {len(e2e['wall_seconds'])}; CPU of the whole process tree) | "
        f"{report['corpus_seconds']:.0f} | "
        f"{e2e['audio_s_per_cpu_s']:.1f} | {e2e['x_real_time_median']:.1f} | "
        f"{e2e['x_real_time_median']:.1f} | |",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/voxflow_clean_bench"))
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--separate-seconds", type=float, default=60.0)
    parser.add_argument("--skip-stages", action="store_true")
    args = parser.parse_args()
    if not (args.corpus / "manifest.csv").exists():
        make_corpus(args.corpus, args.minutes, args.seed)
    files = corpus_files(args.corpus)
    from audio_ops.io import audio_info

    corpus_seconds = sum(audio_info(str(p)).duration for p in files)
    work = Path(tempfile.mkdtemp(prefix="voxflow-clean-bench-"))
    report: dict[str, Any] = {
        "corpus": str(args.corpus),
        "files": len(files),
        "corpus_seconds": corpus_seconds,
        "machine": machine(),
        "load_average_before": os.getloadavg(),
    }
    if not args.skip_stages:
        report["stages"], report["clip_seconds"] = staged(
            files, corpus_seconds, args.separate_seconds, work
        )
    runs = end_to_end(args.corpus, work, args.runs)
    walls = [r["wall_seconds"] for r in runs]
    cpus = os.cpu_count() or 1
    report["end_to_end"] = {
        "cpus": cpus,
        "wall_seconds": walls,
        "pipeline_wall_seconds": [r["pipeline_wall_seconds"] for r in runs],
        "x_real_time_median": corpus_seconds / statistics.median(walls),
        "cpu_seconds": [r["cpu_seconds"] for r in runs],
        "audio_s_per_cpu_s": corpus_seconds / statistics.median(r["cpu_seconds"] for r in runs),
        "hours_kept": [r["hours_kept"] for r in runs],
        "peak_rss_total_mib": max(r["peak_rss_total_mib"] for r in runs),
        "peak_rss_mib_by_role": runs[-1]["peak_rss_mib_by_role"],
    }
    report["load_average_after"] = os.getloadavg()
    path = save(report, "clean_speed")
    if "stages" in report:
        md = markdown(report)
        path.with_suffix(".md").write_text(md)
        print(md)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
