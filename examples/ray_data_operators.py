#!/usr/bin/env python3
"""voxflow operators inside your own Ray Data pipeline.

Every operator in ``audio_ops`` is a callable class with a documented contract: it reads the
columns its ``inputs`` attribute names from a numpy batch, adds the columns ``outputs`` names, and
passes every other column through; a row whose ``status`` is not ``ok`` is left untouched by the
pipelines' adapter, but used directly an operator sees every row. Audio travels as raw float32
bytes (``audio``) with its ``sample_rate``. The class attributes ``num_cpus``, ``batch_size`` and
``uses_model`` say how voxflow itself schedules it. Hand the class to ``map_batches`` (Ray builds
one instance per actor, so models load once per actor) with its constructor arguments in
``fn_constructor_kwargs``; add ``num_gpus=1`` for a model operator on a GPU cluster.

This example inventories files (``ProbeOperator``), keeps the readable ones, decodes them at
16 kHz with a function of its own, scores them (``QualityOperator``) and keeps the clean ones:

    python examples/ray_data_operators.py examples/sample/audio
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audio_ops.io import load_audio  # noqa: E402
from audio_ops.probe import ProbeConfig, ProbeOperator  # noqa: E402
from audio_ops.quality import QualityConfig, QualityOperator  # noqa: E402


def decode_16k(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Your own step: each file's first 20 s at 16 kHz, as the operators expect it."""
    audio = [load_audio(str(p), 16000, end=20.0)[0].tobytes() for p in batch["path"]]
    return {
        **batch,
        "audio": np.array(audio, dtype=object),
        "sample_rate": np.full(len(audio), 16000, dtype=np.int64),
    }


def clean_files(paths: list[str], min_snr_db: float = 15.0) -> list[dict]:
    """Probe, decode and score ``paths``; the rows of the readable files with at least
    ``min_snr_db`` estimated SNR (audio dropped)."""
    import ray

    ds = ray.data.from_items([{"path": p} for p in paths])
    ds = ds.map_batches(  # model-free: plain tasks
        ProbeOperator(ProbeConfig()), batch_size=ProbeOperator.batch_size, batch_format="numpy"
    )
    ds = ds.filter(lambda row: row["status"] == "ok")
    ds = ds.map_batches(decode_16k, batch_size=4, batch_format="numpy")
    ds = ds.map_batches(  # a callable class: an actor pool, the scorer built once per actor
        QualityOperator,
        fn_constructor_kwargs={"config": QualityConfig(squim=None)},
        batch_size=QualityOperator.batch_size,
        concurrency=1,
        batch_format="numpy",
    )
    ds = ds.filter(lambda row: row["snr_db"] >= min_snr_db).drop_columns(["audio"])
    return ds.take_all()


def main(argv: list[str]) -> int:
    import ray

    folder = Path(argv[0] if argv else "examples/sample/audio")
    paths = sorted(str(p) for p in folder.rglob("*") if p.is_file() and p.suffix != ".md")
    ray.init(logging_level="ERROR")  # RAY_ADDRESS: that cluster; else a local Ray
    try:
        for row in clean_files(paths):
            print(
                f"{Path(row['path']).name}: SNR {row['snr_db']:.1f} dB over its first {row['duration']:.1f} s"
            )
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
