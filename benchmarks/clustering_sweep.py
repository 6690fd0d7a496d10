"""The segmentation method's clustering and linking, swept on cached model outputs.

The model stage (segmentation-3.0, and CAM++ on the chunks the pipeline embeds, with the split
of local speakers whose halves are two voices) runs once per file and model-stage setting
(``embed_every``, ``split_threshold``, ``min_split_seconds``) and is cached as ``.npz``; every
other setting costs only the per-file clustering, the reconstruction and the global linking (about
a second per set), scored as ``voxflow eval diarization`` scores (DER with a 0.25 s collar,
overlap scored; exact counts; cross-file pair F1). With the default configuration it gives the
figures of ``diarize_real.py`` to the digit, on the same sets:

    python benchmarks/clustering_sweep.py --sets ami dev \\
        --grid threshold=0.35,0.4,0.45 min_train_seconds=0.5,1.0 embed_every=1,2

Keys of ``--grid``: any field of ``SegmentationDiarizationConfig`` (``threshold``,
``min_train_seconds``, ``min_cluster_size``, ``min_duration_off``...), plus ``embed_every`` and
``link_threshold`` (``split_threshold=none`` turns the split off). Chunks are cut over the
whole file (the pipeline cuts them per 60 s block, on the same grid); the step and the embedding
model are the defaults'.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.common import machine, save  # noqa: E402
from benchmarks.diarize_real import REALDATA, real_sets  # noqa: E402

SWEEP_KEYS = ("embed_every", "link_threshold")
#: Settings of the model stage: each combination has a cache of its own.
MODEL_KEYS = ("embed_every", "split_threshold", "min_split_seconds")


def model_options(options: dict) -> dict:
    """The model-stage part of ``options``, defaults filled in."""
    from audio_ops.neural_diarization import SegmentationDiarizationConfig

    default = SegmentationDiarizationConfig()
    return {key: options.get(key, getattr(default, key)) for key in MODEL_KEYS}


def cache_model_outputs(audio_dir: Path, cache: Path, stage: dict) -> dict[str, Path]:
    """Segmentation activity and CAM++ embeddings of the chunks of every file, as the pipeline
    makes them with the model-stage settings ``stage`` (:func:`model_options`), one ``.npz``
    each (made once)."""

    from audio_ops.embedding import make_encoder
    from audio_ops.io import ANALYSIS_RATE, load_audio
    from audio_ops.neural_diarization import (
        SegmentationDiarizationConfig,
        analyse_chunks,
        embed_mask_for,
    )
    from audio_ops.segmentation import chunk_starts, load_segmentation

    cache = cache / "_".join(f"{k}={v}" for k, v in stage.items())
    cache.mkdir(parents=True, exist_ok=True)
    paths = {p.stem: cache / f"{p.stem}.npz" for p in sorted(audio_dir.iterdir()) if p.is_file()}
    todo = [stem for stem, target in paths.items() if not target.exists()]
    if todo:
        config = dataclasses.replace(SegmentationDiarizationConfig(), **stage)
        model = load_segmentation(config.segmentation_config())
        encoder = make_encoder(config.embedding_config())
        files = {p.stem: p for p in audio_dir.iterdir()}
        for stem in todo:
            audio = load_audio(str(files[stem]), ANALYSIS_RATE)[0]
            step = int(round(config.step * ANALYSIS_RATE))
            starts = chunk_starts(len(audio), model.chunk_samples, step)
            seconds = starts / ANALYSIS_RATE
            every = embed_mask_for(seconds, config.step, config.embed_every, is_last=True)
            activity, embeddings = analyse_chunks(audio, starts, every, model, encoder, config)
            np.savez(
                paths[stem],
                seconds=seconds,
                activity=activity,
                embeddings=embeddings,
                duration=len(audio) / ANALYSIS_RATE,
                frame_step=model.frame_step,
                frame_duration=model.frame_duration,
            )
            print(f"cached {stem}", file=sys.stderr)
    return paths


def score(cached: dict[str, Path], rttm_dir: Path, options: dict) -> dict:
    """Diarize every cached file with ``options``, link across files, score."""
    from audio_ops.clustering import ClusteringConfig
    from audio_ops.linking import LinkingConfig, link_speakers
    from audio_ops.neural_diarization import SegmentationDiarizationConfig, diarize_segments
    from pipelines.reports.evaluate import RttmTurn, evaluate, read_rttm_dir

    fields = {k: v for k, v in options.items() if k not in SWEEP_KEYS}
    config = dataclasses.replace(SegmentationDiarizationConfig(), **fields)
    hypothesis, speakers = {}, []
    for index, (stem, path) in enumerate(sorted(cached.items())):
        d = np.load(path)
        result = diarize_segments(
            d["seconds"],
            d["activity"],
            d["embeddings"],
            float(d["duration"]),
            float(d["frame_step"]),
            float(d["frame_duration"]),
            config,
            ClusteringConfig(),
        )
        hypothesis[stem] = [
            RttmTurn(stem, t.start, t.end - t.start, f"S{t.speaker}") for t in result["turns"]
        ]
        for k, centroid in enumerate(result["centroids"]):
            speakers.append((index, stem, k, centroid, result["speech_seconds"][k]))
    global_ids: dict[str, dict[str, str]] = {}
    if speakers:
        labels = link_speakers(
            np.stack([s[3] for s in speakers]),
            np.array([s[4] for s in speakers]),
            np.array([s[0] for s in speakers]),
            LinkingConfig(threshold=float(options.get("link_threshold", 0.3))),
            pitch=np.full(len(speakers), np.nan),
        )
        for s, g in zip(speakers, labels, strict=True):
            global_ids.setdefault(s[1], {})[f"S{s[2]}"] = f"G{g}"
    report = evaluate(read_rttm_dir(rttm_dir), hypothesis, global_ids)
    return {
        "der": report.der,
        "der_collar0": report.der_collar0,
        "count_exact": report.count_exact,
        "pair_precision": report.pair_precision,
        "pair_recall": report.pair_recall,
        "pair_f1": report.pair_f1,
        "files": {f.file: (f.ref_speakers, f.hyp_speakers, f.der) for f in report.files},
    }


def number(text: str) -> float | int | None:
    if text.lower() in ("none", "null"):
        return None
    return float(text) if "." in text else int(text)


def parse_grid(items: list[str]) -> list[dict]:
    axes = []
    for item in items:
        key, _, values = item.partition("=")
        axes.append([(key, number(v)) for v in values.split(",")])
    return [dict(choice) for choice in itertools.product(*axes)] or [{}]


def pct(value) -> str:
    return "    -" if value is None else f"{100 * value:5.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=["ami", "dev"])
    ap.add_argument("--grid", nargs="*", default=[], help="KEY=V1,V2 ... (see the module doc)")
    ap.add_argument("--realdata", type=Path, default=REALDATA)
    ap.add_argument("--work", type=Path, default=Path("/tmp/diarize_real"))
    args = ap.parse_args()
    sets = real_sets(args.work, args.realdata, args.sets)
    rows = []
    for options in parse_grid(args.grid):
        label = " ".join(f"{k}={v}" for k, v in options.items()) or "default"
        for name in args.sets:
            cache = args.work / "model_cache" / name
            cached = cache_model_outputs(sets[name] / "audio", cache, model_options(options))
            result = score(cached, sets[name] / "rttm", options)
            rows.append({"set": name, "options": options, **result})
            print(
                f"{name:5s} {label:50s} DER {pct(result['der'])} DER0 {pct(result['der_collar0'])}"
                f" count {pct(result['count_exact'])} pair F1 {pct(result['pair_f1'])}"
            )
    save({"machine": machine(), "rows": rows}, "clustering_sweep")
    return 0


if __name__ == "__main__":
    sys.exit(main())
