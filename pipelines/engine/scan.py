"""The speech scan stage that ``voxflow vad`` and ``voxflow transcribe`` start with: each file
streamed once at 16 kHz, speech regions found chunk by chunk (:func:`audio_ops.clips.segment_file`,
the same scan ``voxflow clean`` runs), one row per file."""

from __future__ import annotations

from typing import Any

import numpy as np

from audio_ops.clips import ClipConfig
from audio_ops.vad import VadConfig, speech_seconds
from pipelines.engine.filejob import batch_rows, rows_to_batch

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
    inputs = ("path", "file_id", "rel_path")
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
        speech = speech_seconds(regions)
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
