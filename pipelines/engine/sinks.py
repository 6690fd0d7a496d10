"""Output tables: Parquet shards committed atomically, ``_run.json``, error rows.

A shard is written under a temporary name and renamed when complete (on object stores, where a
single PUT is already atomic, it is written in place). Shard names are deterministic
(``part-00000.parquet``...), so a re-run replaces the tables rather than adding to them.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import posixpath
import uuid
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from audio_ops.io import is_local, normalize_uri

#: Packages whose versions go into ``_run.json``.
TRACKED_PACKAGES = (
    "voxflow",
    "ray",
    "numpy",
    "torch",
    "torchaudio",
    "soundfile",
    "soxr",
    "av",
    "pyarrow",
    "fsspec",
    "scikit-learn",
    "silero-vad",
    "resemblyzer",
    "onnxruntime",
    "transformers",
)


def join(base: str, *parts: str) -> str:
    """Join path parts onto a local path or URL."""
    if is_local(base):
        return os.path.join(normalize_uri(base), *parts)
    return posixpath.join(base, *parts)


def _fs(url: str) -> tuple[Any, str]:
    import fsspec

    return fsspec.core.url_to_fs(url)


def write_bytes_atomic(url: str, data: bytes) -> None:
    """Write ``data`` to ``url`` so that readers see the old file or the whole new one."""
    if is_local(url):
        path = normalize_uri(url)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return
    fs, path = _fs(url)
    with fs.open(path, "wb") as f:  # one PUT: atomic on S3/GCS
        f.write(data)


def write_table_atomic(url: str, table: pa.Table) -> None:
    """Write a Parquet file atomically (see :func:`write_bytes_atomic`)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_bytes_atomic(url, sink.getvalue().to_pybytes())


def remove_shards(directory: str, prefix: str = "part-") -> None:
    """Delete the shards (and stray temporary files) a previous run left in ``directory``."""
    if is_local(directory):
        path = normalize_uri(directory)
        if not os.path.isdir(path):
            return
        for name in os.listdir(path):
            if name.startswith(prefix) or ".tmp-" in name:
                os.remove(os.path.join(path, name))
        return
    fs, path = _fs(directory)
    if fs.exists(path):
        for name in fs.ls(path, detail=False):
            if posixpath.basename(name).startswith(prefix):
                fs.rm(name)


class TableSink:
    """Accumulates rows and writes them as Parquet shards of at most ``rows_per_shard`` rows.

    Args:
        directory: output folder (local or URL), e.g. ``OUT/files``.
        schema: Arrow schema of the table; rows are cast to it, so every shard agrees.
        rows_per_shard: rows per Parquet file.
    """

    def __init__(self, directory: str, schema: pa.Schema, rows_per_shard: int = 50_000):
        self.directory = directory
        self.schema = schema
        self.rows_per_shard = rows_per_shard
        self.rows_written = 0
        self.shards: list[str] = []
        self._pending: list[dict[str, Any]] = []
        remove_shards(directory)
        if is_local(directory):
            os.makedirs(normalize_uri(directory), exist_ok=True)
        else:
            fs, path = _fs(directory)
            fs.makedirs(path, exist_ok=True)

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        """Queue rows; full shards are written at once."""
        self._pending.extend(rows)
        while len(self._pending) >= self.rows_per_shard:
            self._flush(self._pending[: self.rows_per_shard])
            self._pending = self._pending[self.rows_per_shard :]

    def _flush(self, rows: list[dict[str, Any]]) -> None:
        table = pa.Table.from_pylist(
            [{name: row.get(name) for name in self.schema.names} for row in rows],
            schema=self.schema,
        )
        url = join(self.directory, f"part-{len(self.shards):05d}.parquet")
        write_table_atomic(url, table)
        self.shards.append(url)
        self.rows_written += len(rows)

    def close(self) -> None:
        """Write the last rows. An empty table still gets one (empty) shard, so readers find a
        schema."""
        if self._pending or not self.shards:
            self._flush(self._pending)
        self._pending = []


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape a run's results."""
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def utc_now() -> str:
    """The current time as an ISO-8601 UTC string."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def write_run_json(out_dir: str, record: dict[str, Any]) -> str:
    """Write ``OUT/_run.json`` atomically and return its URL."""
    url = join(out_dir, "_run.json")
    write_bytes_atomic(url, json.dumps(record, indent=2, sort_keys=True, default=str).encode())
    return url


def read_run_json(out_dir: str) -> dict[str, Any] | None:
    """The ``_run.json`` of a previous run in ``out_dir``, or None."""
    url = join(out_dir, "_run.json")
    if is_local(url):
        if not os.path.exists(normalize_uri(url)):
            return None
        with open(normalize_uri(url)) as f:
            return json.load(f)
    fs, path = _fs(url)
    if not fs.exists(path):
        return None
    with fs.open(path, "r") as f:
        return json.load(f)
