"""``voxflow vad``: where the speech is, in every file.

    list -> scan actors (each file streamed once at 16 kHz in chunks of ``chunk_seconds`` plus
            2 s of overlap: Silero VAD or the energy VAD per chunk, regions merged across chunk
            edges, BS.1770 loudness) -> driver: segments/, files/, errors/, _run.json

Memory holds one chunk of audio whatever a file's length (a 3-hour file is 180 chunks, never one
array). The scan is the one ``voxflow clean`` starts with (:func:`audio_ops.clips.segment_file`),
so both jobs find the same speech.

Output in DIR: ``segments/`` (``file_id``, ``path``, ``start``, ``end``, ``duration``: one row per
speech region, seconds), ``files/`` (``duration``, ``speech_seconds``, ``speech_ratio``,
``num_segments``, ``loudness_lufs``, status), ``errors/``, ``_run.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from audio_ops.vad import VadConfig
from pipelines.engine.config import ConfigError, StageResources
from pipelines.engine.filejob import FileJob, FileState, Stage, make_files_schema
from pipelines.engine.scan import SpeechScanOperator


@dataclass(frozen=True)
class VadRunConfig:
    """Everything ``voxflow vad`` runs with.

    Args:
        vad: the detector (``backend: silero`` or ``energy``) and its thresholds.
        chunk_seconds: audio scanned per step (bounds memory on long files).
        resources: scheduling override of the ``vad`` stage.
        extensions: audio extensions a directory listing picks up.
    """

    vad: VadConfig = field(default_factory=VadConfig)
    chunk_seconds: float = 60.0
    resources: dict[str, StageResources] = field(default_factory=dict)
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.chunk_seconds >= 5.0:
            raise ConfigError("chunk_seconds must be >= 5")


class VadJob(FileJob):
    """``voxflow vad`` on the per-file job skeleton: one scan stage, ``segments/`` per region."""

    name = "vad"
    config_class = VadRunConfig
    files_schema = make_files_schema(
        ("duration", pa.float64()),
        ("speech_seconds", pa.float64()),
        ("speech_ratio", pa.float64()),
        ("num_segments", pa.int64()),
        ("loudness_lufs", pa.float64()),
    )
    tables = {
        "segments": pa.schema(
            [
                ("file_id", pa.string()),
                ("path", pa.string()),
                ("start", pa.float64()),
                ("end", pa.float64()),
                ("duration", pa.float64()),
            ]
        )
    }

    def stages(self) -> list[Stage]:
        kwargs = {"vad": self.config.vad, "chunk_seconds": self.config.chunk_seconds}
        return [Stage("vad", SpeechScanOperator, kwargs)]

    def file_record(self, row: dict[str, Any], file: FileState) -> dict[str, Any]:
        from audio_ops.packing import unpack

        if row.get("status") == "ok" and row.get("regions"):
            regions = unpack(row["regions"]).reshape(-1, 2)
            file.add(
                "segments",
                (
                    {
                        "file_id": row["file_id"],
                        "path": row["path"],
                        "start": float(s),
                        "end": float(e),
                        "duration": float(e - s),
                    }
                    for s, e in regions
                ),
            )
        duration = float(row.get("duration") or 0.0)
        speech = float(row.get("speech_seconds") or 0.0)
        return {
            **file.listing,
            **row,
            "speech_ratio": speech / duration if duration > 0 else float("nan"),
        }

    def counts(self) -> dict[str, Any]:
        return {"segments": self.sinks["segments"].rows_written}


#: ``voxflow vad``: see :meth:`pipelines.engine.filejob.FileJob.launch`.
run_vad = VadJob.launch
