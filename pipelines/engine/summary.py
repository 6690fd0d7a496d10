"""What every job writes besides its own tables: the run summary (printed and kept in
``_run.json``), ``errors/`` rows and their schema, and the columns of a listing's ``files/``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from audio_ops.probe import PROBE_COLUMNS
from pipelines.engine.config import config_hash, to_dict
from pipelines.engine.sinks import package_versions, utc_now

_ARROW = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}

ERRORS_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("file_id", pa.string()),
        ("rel_path", pa.string()),
        ("stage", pa.string()),
        ("error_kind", pa.string()),
        ("error", pa.string()),
    ]
)


@dataclass
class JobSummary:
    """What a job did, as printed at its end and stored in ``_run.json``.

    Args:
        job: the job's name.
        out: output folder.
        inputs: files listed.
        ok: files processed without error.
        errors: files that became error rows.
        audio_seconds: audio processed (ok files).
        wall_seconds: the job's wall time.
        errors_by_kind: error counts by ``error_kind``.
        skipped: inputs an earlier run of the same config had committed (resumed, not rerun).
    """

    job: str
    out: str
    inputs: int = 0
    ok: int = 0
    errors: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    skipped: int = 0

    def run_record(
        self,
        inputs: list[str],
        config: Any,
        started_at: str,
        counts: dict[str, Any] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """The ``_run.json`` record every job writes: resolved config and its hash, versions, times,
        counts (plus the job's own ``counts`` and top-level ``extra`` entries)."""
        return {
            "job": self.job,
            "inputs": list(inputs),
            "config": to_dict(config),
            "config_hash": config_hash(config),
            "versions": package_versions(),
            "started_at": started_at,
            "ended_at": utc_now(),
            "wall_seconds": self.wall_seconds,
            "counts": {
                "inputs": self.inputs,
                "ok": self.ok,
                "errors": self.errors,
                "errors_by_kind": self.errors_by_kind,
                "audio_seconds": self.audio_seconds,
                **(counts or {}),
            },
            **extra,
        }

    def text(self) -> str:
        """The short summary a person reads at the end of a run."""
        speed = self.audio_seconds / self.wall_seconds if self.wall_seconds else 0.0
        lines = [
            f"voxflow {self.job}: {self.inputs} files ({self.ok} ok, {self.errors} errors), "
            f"{self.audio_seconds / 3600:.3f} h of audio in {self.wall_seconds:.1f}s "
            f"({speed:.1f}x real time)",
        ]
        if self.skipped:
            lines.append(f"  resumed: {self.skipped} inputs were committed by an earlier run")
        for kind, count in sorted(self.errors_by_kind.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  errors: {count} {kind}")
        lines.append(f"  output: {self.out}")
        return "\n".join(lines)


def files_schema(listing: list[dict[str, Any]]) -> pa.Schema:
    """Schema of ``files/``: the listing's columns, then the probe columns."""
    fields = [
        pa.field("path", pa.string()),
        pa.field("file_id", pa.string()),
        pa.field("rel_path", pa.string()),
        pa.field("source", pa.string()),
    ]
    names = {f.name for f in fields}
    if listing:
        inferred = pa.Table.from_pylist(listing).schema
        for f in inferred:
            if f.name not in names and f.name not in PROBE_COLUMNS:
                fields.append(pa.field(f.name, pa.string() if pa.types.is_null(f.type) else f.type))
                names.add(f.name)
    fields += [pa.field(name, _ARROW[kind]) for name, kind in PROBE_COLUMNS.items()]
    fields.append(pa.field("error_stage", pa.string()))
    return pa.schema(fields)


def error_record(row: dict[str, Any]) -> dict[str, Any]:
    """The ``errors/`` row of a failed file row."""
    return {
        "path": row.get("path"),
        "file_id": row.get("file_id"),
        "rel_path": row.get("rel_path"),
        "stage": row.get("error_stage") or "",
        "error_kind": row.get("error_kind") or "error",
        "error": row.get("error") or "",
    }
