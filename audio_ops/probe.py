"""The inventory operator: one row of facts per audio file, measured in one streaming pass."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from audio_ops.errors import EmptyAudioError, TooShortError, error_kind
from audio_ops.io import DEFAULT_BLOCK_FRAMES, AudioReader, check_finite, normalize_uri
from audio_ops.levels import LevelMeter

#: Columns :class:`ProbeOperator` writes, with their Arrow-friendly Python types.
PROBE_COLUMNS: dict[str, type] = {
    "format": str,
    "codec": str,
    "sample_rate": int,
    "channels": int,
    "num_frames": int,
    "duration": float,
    "bytes": int,
    "peak": float,
    "peak_dbfs": float,
    "rms_dbfs": float,
    "loudness_lufs": float,
    "clipping_ratio": float,
    "silence_ratio": float,
    "is_silent": bool,
    "is_clipped": bool,
    "status": str,
    "error_kind": str,
    "error": str,
    "probe_seconds": float,
}


@dataclass(frozen=True)
class ProbeConfig:
    """Parameters of the inventory.

    Args:
        min_duration: files shorter than this (seconds) are errors of kind ``too_short``.
        silent_ratio: a file whose digital-silence ratio reaches this is flagged ``is_silent``
            (flagged, not an error: it decodes fine and the user decides).
        clipped_ratio: a file whose clipping ratio reaches this is flagged ``is_clipped``.
        block_frames: native frames decoded per step (bounds memory on long files).
    """

    min_duration: float = 0.01
    silent_ratio: float = 0.999
    clipped_ratio: float = 0.001
    block_frames: int = DEFAULT_BLOCK_FRAMES

    def __post_init__(self) -> None:
        if self.min_duration < 0:
            raise ValueError("min_duration must be >= 0")
        if not 0 < self.silent_ratio <= 1 or not 0 < self.clipped_ratio <= 1:
            raise ValueError("silent_ratio and clipped_ratio must lie in (0, 1]")
        if self.block_frames <= 0:
            raise ValueError("block_frames must be positive")


def _empty_row() -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name, kind in PROBE_COLUMNS.items():
        row[name] = {str: "", int: 0, float: math.nan, bool: False}[kind]
    return row


def probe_file(url: str, config: ProbeConfig | None = None) -> dict[str, Any]:
    """Measure one file; never raises for a bad input.

    Args:
        url: a local path or fsspec URL.
        config: thresholds; defaults when None.

    Returns:
        A dict with every key of :data:`PROBE_COLUMNS`. ``status`` is ``ok`` or ``error``; an
        error row names its ``error_kind`` and a readable ``error`` message, and keeps whatever
        the header told before the failure.
    """
    config = config or ProbeConfig()
    row = _empty_row()
    began = time.perf_counter()
    try:
        with AudioReader(url) as reader:
            info = reader.info
            row.update(
                format=info.format,
                codec=info.codec,
                sample_rate=info.sample_rate,
                channels=info.channels,
                num_frames=info.num_frames,
                duration=info.duration,
                bytes=info.bytes,
            )
            meter = LevelMeter(info.sample_rate, info.channels)
            for block in reader.blocks(config.block_frames):
                check_finite(block, f"block at {meter.frames / info.sample_rate:.2f}s")
                meter.update(block)
        stats = meter.result()
        # The decoded length is the truth (FFmpeg containers only estimate it in the header).
        row["num_frames"] = stats.frames
        row["duration"] = stats.frames / info.sample_rate
        if stats.frames == 0:
            raise EmptyAudioError(f"no samples decoded from {normalize_uri(url)}")
        if row["duration"] < config.min_duration:
            raise TooShortError(
                f"{stats.frames} frame(s) = {row['duration']:.4f}s, shorter than the minimum "
                f"{config.min_duration}s"
            )
        row.update(
            peak=stats.peak,
            peak_dbfs=stats.peak_dbfs,
            rms_dbfs=stats.rms_dbfs,
            loudness_lufs=stats.loudness_lufs,
            clipping_ratio=stats.clipping_ratio,
            silence_ratio=stats.silence_ratio,
            is_silent=bool(stats.silence_ratio >= config.silent_ratio),
            is_clipped=bool(stats.clipping_ratio >= config.clipped_ratio),
            status="ok",
        )
    except Exception as exc:  # one bad file becomes an error row, never a crashed job
        row.update(status="error", error_kind=error_kind(exc), error=str(exc) or repr(exc))
    row["probe_seconds"] = time.perf_counter() - began
    return row


class ProbeOperator:
    """Batched inventory: reads ``path`` and adds :data:`PROBE_COLUMNS` to every row.

    Stateless and model-free, so it runs as plain Ray tasks; memory per file is bounded by
    ``config.block_frames``.

    Args:
        config: thresholds of the inventory.
    """

    inputs = ("path",)
    outputs = tuple(PROBE_COLUMNS)
    num_cpus = 0.5
    num_gpus = 0.0
    batch_size = 4

    def __init__(self, config: ProbeConfig | None = None):
        self.config = config or ProbeConfig()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Probe every ``path`` of ``batch``; the other columns pass through."""
        rows = [probe_file(str(p), self.config) for p in batch["path"]]
        out = dict(batch)
        for name, kind in PROBE_COLUMNS.items():
            dtype = {str: object, int: np.int64, float: np.float64, bool: np.bool_}[kind]
            out[name] = np.array([r[name] for r in rows], dtype=dtype)
        return out
