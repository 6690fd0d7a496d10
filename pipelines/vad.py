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

import numpy as np
import pyarrow as pa

from audio_ops.clips import ClipConfig
from audio_ops.vad import VadConfig
from pipelines.config import ConfigError, StageResources
from pipelines.filejob import (
    FileJob,
    FileState,
    Stage,
    batch_rows,
    make_files_schema,
    rows_to_batch,
)


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


#: Columns (and their defaults) of the rows the scan stages return.
SCAN_COLUMNS: dict[str, Any] = {
    "path": "",
    "file_id": "",
    "rel_path": "",
    "kind": "file",
    "parts": 0,
    "start": 0.0,
    "end": 0.0,
    "duration": 0.0,
    "speech_seconds": 0.0,
    "num_segments": 0,
    "loudness_lufs": float("nan"),
    "regions": b"",
    "status": "ok",
    "error_kind": "",
    "error": "",
    "error_stage": "",
}


class SpeechScanOperator:
    """Scan stage: each file streamed once at 16 kHz (VAD per chunk, loudness, a 50 ms energy
    profile; see :func:`audio_ops.clips.segment_file`), its speech regions packed into the file's
    row. A file that cannot be read becomes an error row here, with every column present.

    Subclasses turn a scanned file into rows of their own (:meth:`rows`).

    Args:
        vad: the detector.
        clips: how speech is cut into clips (for jobs that use the clips).
        chunk_seconds: audio scanned per step.
        stage: the stage's name, for error rows.
    """

    uses_model = True
    num_cpus = 0.5
    batch_size = 1
    max_actors = 2
    columns = SCAN_COLUMNS

    def __init__(
        self,
        vad: VadConfig,
        clips: ClipConfig | None = None,
        chunk_seconds: float = 60.0,
        stage: str = "vad",
    ):
        from audio_ops.vad import make_vad

        self.vad_config, self.clips = vad, clips or ClipConfig()
        self.chunk_seconds, self.stage = chunk_seconds, stage
        self.detector = make_vad(vad)

    def rows(self, file: dict[str, Any], scan: Any) -> list[dict[str, Any]]:
        """The rows of one scanned file: here its one row, regions packed.

        Args:
            file: the file's ``path``, ``file_id``, ``rel_path``.
            scan: its :class:`audio_ops.clips.FileSegmentation`.
        """
        from audio_ops.packing import pack

        regions = scan.regions
        speech = float(np.sum(regions[:, 1] - regions[:, 0])) if regions.size else 0.0
        return [
            {
                **file,
                "duration": scan.duration,
                "speech_seconds": speech,
                "num_segments": len(regions),
                "loudness_lufs": scan.loudness_lufs,
                "regions": pack(regions.astype(np.float64)),
            }
        ]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from audio_ops.clips import segment_file
        from audio_ops.errors import error_kind

        out: list[dict[str, Any]] = []
        for row in batch_rows(batch):
            file = {k: str(row[k]) for k in ("path", "file_id", "rel_path")}
            try:
                scan = segment_file(
                    file["path"], self.detector, self.vad_config, self.clips, self.chunk_seconds
                )
            except Exception as exc:  # one unreadable file is an error row, not a failed batch
                out.append(
                    {
                        **file,
                        "status": "error",
                        "error_kind": error_kind(exc),
                        "error": str(exc) or repr(exc),
                        "error_stage": self.stage,
                    }
                )
                continue
            out.extend(self.rows(file, scan))
        return rows_to_batch(out, self.columns)


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
            self.sinks["segments"].add(
                {
                    "file_id": row["file_id"],
                    "path": row["path"],
                    "start": float(s),
                    "end": float(e),
                    "duration": float(e - s),
                }
                for s, e in regions
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


#: ``voxflow vad``: see :meth:`pipelines.filejob.FileJob.launch`.
run_vad = VadJob.launch
