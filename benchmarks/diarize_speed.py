"""End-to-end diarization speed against the decode limit and a plain sequential script.

    python examples/synth_corpus.py bench --out /tmp/bench1h --hours 1 --seed 3
    python benchmarks/diarize_speed.py /tmp/bench1h --runs 3

Measured in one run of this script, on the same corpus:

- decode limit: decode + downmix + resample to 16 kHz of every file, one process;
- plain script: what a user writes by hand with the same model families — silero-vad's
  ``get_speech_timestamps`` (its default JIT model), resemblyzer's ``VoiceEncoder`` on 1.5 s windows
  in batches of 64, scikit-learn agglomerative clustering — one file after another;
- voxflow operators in one process, stage by stage (the per-stage breakdown, in audio seconds per
  CPU second);
- ``voxflow diarize`` as a user runs it (a fresh process that starts a local Ray) with 1 and with 2
  CPUs, the median of ``--runs`` runs, with the peak RSS of its driver and workers.

``--configs default fast=examples/segmentation_fast.yaml windows=examples/windows.yaml`` times
each config in the same run (``default``: no config file); ``--cpus 2`` only the 2-CPU runs;
``--skip-stages`` leaves out the windows method's per-stage breakdown. A corpus of real voices:

    python -c "from benchmarks.real_conversations import make_conversations as m; \
        m('/tmp/real10h', 'dev', 400, 21)"
    python benchmarks/diarize_speed.py /tmp/real10h/audio --runs 1 --cpus 2 --skip-baseline \
        --skip-stages --configs default windows=examples/windows.yaml
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, run_measured, save  # noqa: E402

AUDIO_EXT = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus"}


def corpus_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXT)


def cpu_time() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def decode_limit(files: list[Path]) -> tuple[float, float]:
    from audio_ops.io import load_audio

    t0 = time.perf_counter()
    seconds = 0.0
    for path in files:
        audio, _ = load_audio(str(path), 16000)
        seconds += len(audio) / 16000
    return seconds, time.perf_counter() - t0


DECODE_STAGE = """
import json, sys, time
import ray
from audio_ops.diarization import DiarizationConfig
from pipelines.jobs.diarize import ChunkFiles
from pipelines.engine.runtime import configure_data_context
from pipelines.engine.sources import list_corpus

ray.init(num_cpus=int(sys.argv[2]), include_dashboard=False, logging_level="ERROR")
configure_data_context(quiet=True, preserve_order=False)
listing = list_corpus([sys.argv[1]])
t0 = time.perf_counter()
ds = ray.data.from_items([{"file_id": r["file_id"], "path": r["path"]} for r in listing],
                         override_num_blocks=len(listing))
ds = ds.map_batches(ChunkFiles(DiarizationConfig()), batch_size=1, num_cpus=0.25,
                    batch_format="numpy")
samples = sum(int(b["num_samples"].sum())
              for b in ds.select_columns(["num_samples"]).iter_batches(batch_size=None))
print(json.dumps({"audio_seconds": samples / 16000, "wall_seconds": time.perf_counter() - t0}))
"""


def decode_stage(root: Path, cpus: int) -> float:
    """x real time of voxflow's decode stage alone (the chunking tasks of ``voxflow diarize``, on
    a local Ray of ``cpus`` CPUs, Ray's start excluded), counting the overlap it decodes twice as
    audio only once."""
    result = subprocess.run(
        [sys.executable, "-c", DECODE_STAGE, str(root), str(cpus)],
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    return measured["wall_seconds"]


def plain_script(files: list[Path]) -> float:
    """The hand-written loop: same model families, their usual entry points, one file at a time."""
    import torch
    from resemblyzer import VoiceEncoder
    from resemblyzer.audio import normalize_volume, wav_to_mel_spectrogram
    from silero_vad import get_speech_timestamps, load_silero_vad
    from sklearn.cluster import AgglomerativeClustering

    from audio_ops.io import load_audio

    vad = load_silero_vad()
    encoder = VoiceEncoder(device="cpu", verbose=False)
    t0 = time.perf_counter()
    for path in files:
        audio, _ = load_audio(str(path), 16000)
        speech = get_speech_timestamps(torch.from_numpy(audio), vad, sampling_rate=16000)
        starts = []
        for seg in speech:
            s = seg["start"]
            while s + 24000 <= seg["end"] or s == seg["start"]:
                starts.append(s)
                s += 12000
        if len(starts) < 2:
            continue
        mels = np.stack(
            [
                wav_to_mel_spectrogram(
                    normalize_volume(
                        np.pad(audio[s : s + 24000], (0, max(0, s + 24000 - len(audio)))), -30
                    )
                )[:150]
                for s in starts
            ]
        )
        embeds = []
        with torch.no_grad():
            for lo in range(0, len(mels), 64):
                embeds.append(encoder(torch.from_numpy(mels[lo : lo + 64])).numpy())
        AgglomerativeClustering(
            n_clusters=None, distance_threshold=0.35, metric="cosine", linkage="average"
        ).fit(np.concatenate(embeds))
    return time.perf_counter() - t0


def staged(files: list[Path]) -> dict[str, float]:
    """voxflow's operators in this process, timed per stage (CPU seconds)."""
    from audio_ops.clustering import cluster_speakers
    from audio_ops.diarization import (
        DiarizationConfig,
        chunk_cues,
        chunk_plan,
        chunk_regions,
        diarize_windows,
        spread_narrowband,
    )
    from audio_ops.embedding import GE2EEncoder, grid_windows
    from audio_ops.io import load_audio
    from audio_ops.linking import link_speakers
    from audio_ops.vad import SileroVAD, probs_to_regions

    config = DiarizationConfig()
    vad, encoder = SileroVAD(), GE2EEncoder(device="cpu")
    times = dict.fromkeys(("decode", "vad", "embedding", "cues", "clustering", "linking"), 0.0)
    centroids, seconds, owners = [], [], []
    narrow_all, pitch_all, wide_all = [], [], []
    del cluster_speakers
    for index, path in enumerate(files):
        c0 = cpu_time()
        audio, _ = load_audio(str(path), 16000)
        c1 = cpu_time()
        times["decode"] += c1 - c0
        regions_all, starts_all, emb_all, nb_all, wp_all, band = [], [], [], [], [], np.zeros(2)
        for start, end, owned_end in chunk_plan(len(audio), config.chunk):
            chunk = audio[start:end]
            c0 = cpu_time()
            probs = vad.speech_probs(chunk)
            cs, owned = start / 16000, (owned_end - start) / 16000
            regions_all.append(chunk_regions(probs, cs, owned, config.vad, len(chunk) / 16000))
            full = probs_to_regions(probs, config.vad, total_seconds=len(chunk) / 16000) + cs
            starts = grid_windows(full, cs, cs + owned, config.embedding)
            c1 = cpu_time()
            emb_all.append(
                encoder.embed(chunk, np.round((starts - cs) * 16000).astype(np.int64), 24000)
            )
            starts_all.append(starts)
            c2 = cpu_time()
            narrow, pitch, chunk_band = chunk_cues(encoder, chunk, starts, cs, config.embedding)
            nb_all.append(spread_narrowband(narrow, starts, config.embedding, encoder.dim))
            wp_all.append(pitch)
            band = band + chunk_band
            c3 = cpu_time()
            times["vad"] += c1 - c0
            times["embedding"] += c2 - c1
            times["cues"] += c3 - c2
        c0 = cpu_time()
        result = diarize_windows(
            np.concatenate(regions_all),
            np.concatenate(starts_all),
            np.concatenate(emb_all),
            len(audio) / 16000,
            config,
            np.concatenate(nb_all),
            np.concatenate(wp_all),
            band,
        )
        times["clustering"] += cpu_time() - c0
        centroids.extend(result.centroids)
        seconds.extend(result.speech_seconds)
        owners.extend([index] * len(result.centroids))
        narrow_all.extend(result.narrowband_centroids)
        pitch_all.extend(result.pitch)
        wide_all.extend([result.wideband] * len(result.centroids))
    c0 = cpu_time()
    link_speakers(
        np.array(centroids),
        np.array(seconds),
        np.array(owners),
        narrowband=np.array(narrow_all),
        wideband=np.array(wide_all),
        pitch=np.array(pitch_all),
    )
    times["linking"] += cpu_time() - c0
    return times


def voxflow_runs(
    root: Path, work: Path, cpus: int, runs: int, name: str = "default", config: Path | None = None
) -> list[dict]:
    results = []
    for i in range(runs):
        out = work / f"out_{name}_{cpus}cpu_{i}"
        cmd = [
            sys.executable,
            "-m",
            "pipelines.cli",
            "diarize",
            str(root),
            "--out",
            str(out),
            "-q",
            "--num-cpus",
            str(cpus),
        ] + (["--config", str(config.resolve())] if config else [])
        result = run_measured(cmd)
        if result["returncode"] != 0:
            raise RuntimeError(result["output_tail"])
        run = json.loads((out / "_run.json").read_text())
        result["audio_seconds"] = run["counts"]["audio_seconds"]
        result["pipeline_wall_seconds"] = run["wall_seconds"]
        results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-stages", action="store_true")
    parser.add_argument("--cpus", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--configs", nargs="+", default=["default"])
    args = parser.parse_args()
    configs = [
        ("default", None) if item == "default" else (item.split("=")[0], Path(item.split("=")[1]))
        for item in args.configs
    ]
    files = corpus_files(args.corpus)
    work = Path(tempfile.mkdtemp(prefix="voxflow-diarize-bench-"))
    audio_seconds, decode_wall = decode_limit(files)
    hours = audio_seconds / 3600
    report: dict = {
        "corpus": str(args.corpus),
        "files": len(files),
        "hours": hours,
        "machine": machine(),
    }
    report["decode_limit_x"] = audio_seconds / decode_wall
    report["decode_stage_x"] = {
        cpus: audio_seconds / statistics.median(decode_stage(args.corpus, cpus) for _ in range(3))
        for cpus in (1, 2)
    }
    report["decode_stage_share_of_limit"] = {
        cpus: x / report["decode_limit_x"] for cpus, x in report["decode_stage_x"].items()
    }
    if not args.skip_baseline:
        report["plain_script_x"] = audio_seconds / plain_script(files)
    if not args.skip_stages:
        stage_cpu = staged(files)
        report["stage_audio_seconds_per_cpu_second"] = {
            k: audio_seconds / v if v else None for k, v in stage_cpu.items()
        }
        report["stage_cpu_share"] = {k: v / sum(stage_cpu.values()) for k, v in stage_cpu.items()}
    for (name, config), cpus in [(c, n) for c in configs for n in args.cpus]:
        runs = voxflow_runs(args.corpus, work, cpus, args.runs, name, config)
        walls = [r["wall_seconds"] for r in runs]
        key = f"voxflow_{cpus}cpu" if name == "default" else f"voxflow_{name}_{cpus}cpu"
        report[key] = {
            "x_real_time_median": audio_seconds / statistics.median(walls),
            "wall_seconds": walls,
            "pipeline_wall_seconds": [r["pipeline_wall_seconds"] for r in runs],
            "peak_rss_mib_by_role": runs[-1]["peak_rss_mib_by_role"],
            "peak_rss_total_mib": runs[-1]["peak_rss_total_mib"],
        }
    path = save(report, f"diarize_speed_{hours:.1f}h")
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=2, default=str))
    print(f"-> {path}")
    subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
