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
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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
    with _AtomicFile(url) as f:
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


class RankedTableWriter:
    """One Parquet file of rows that arrive in any order, written in the order of their rank,
    with about ``rows_per_part`` rows held in memory however many there are.

    The ranks ``0 .. total-1`` are cut into parts of ``rows_per_part``. Rows wait in memory;
    when more than ``rows_per_part`` wait, they are spilled to one file on the local temporary
    disk, sorted, one row group per part. :meth:`close` then takes each part in turn, reads its
    row groups from every spill, sorts them by rank and appends them to the output, so the file
    is the same whatever order the rows came in. Fewer than ``rows_per_part`` rows never touch
    the disk.

    Columns: ``first`` (those any row has, in that order), then the others by name, then those of
    ``last``; a column of ``last`` is left out when no row has a non-empty value in it. Rows may
    have different keys (a missing value is null) and column types are unified across spills.

    Args:
        url: the output file (local or URL), written under a temporary name and renamed (one
            upload on object stores).
        total: how many rows will be added.
        first: columns placed first.
        last: columns placed last, and left out when empty in every row.
        rows_per_part: rows of one part (the memory bound).
    """

    RANK = "__rank__"

    def __init__(
        self,
        url: str,
        total: int,
        first: Iterable[str] = (),
        last: Iterable[str] = (),
        rows_per_part: int = 16_384,
    ):
        self.url = url
        self.total = total
        self.first = list(first)
        self.last = list(last)
        self.rows_per_part = max(1, rows_per_part)
        self.parts = max(1, -(-total // self.rows_per_part))
        self._rows: list[dict[str, Any]] = []
        self._spills: list[tuple[str, dict[int, int]]] = []  # path, part -> row group
        self._schemas: list[pa.Schema] = []
        self._nonempty: set[str] = set()
        self._added = 0
        self._ranks = bytearray(total)  # one byte a row: which ranks came
        self._tmp = tempfile.mkdtemp(prefix="voxflow-ranked-") if self.parts > 1 else None

    def add(self, rank: int, row: dict[str, Any]) -> None:
        """Queue one row (``rank`` in ``0 .. total-1``, each once: a rank out of range or
        added twice is an error)."""
        rank = int(rank)
        if not 0 <= rank < self.total:
            raise ValueError(f"rank {rank} outside 0..{self.total - 1}")
        if self._ranks[rank]:
            raise ValueError(f"rank {rank} added twice")
        self._ranks[rank] = 1
        for name in self.last:
            if row.get(name):
                self._nonempty.add(name)
        self._rows.append({**row, self.RANK: rank})
        self._added += 1
        if len(self._rows) > self.rows_per_part:
            self._spill()

    def _table(self, rows: list[dict[str, Any]]) -> pa.Table:
        """The rows as a table sorted by rank (its schema noted for the output's)."""
        names = list(dict.fromkeys(k for row in rows for k in row))
        table = pa.table({k: [row.get(k) for row in rows] for k in names})
        self._schemas.append(table.schema)
        return table.sort_by(self.RANK)

    def _part_of(self, table: pa.Table) -> np.ndarray:
        """Each row's part."""
        return pc.divide(table[self.RANK], self.rows_per_part).to_numpy()

    def _spill(self) -> None:
        table = self._table(self._rows)
        self._rows = []
        part = self._part_of(table)
        starts = np.flatnonzero(np.diff(part, prepend=-1))
        path = os.path.join(self._tmp, f"spill-{len(self._spills):05d}.parquet")
        groups = {}
        with pq.ParquetWriter(path, table.schema) as writer:
            for group, (a, b) in enumerate(zip(starts, [*starts[1:], len(part)], strict=True)):
                writer.write_table(table.slice(a, b - a))
                groups[int(part[a])] = group
        self._spills.append((path, groups))

    def close(self) -> None:
        """Write the file (every rank must have been added)."""
        if self._added != self.total:
            raise ValueError(f"{self._added} rows added, {self.total} announced")
        try:
            held = self._table(self._rows) if self._rows else None
            self._rows = []
            schema = self._schema()
            held_part = self._part_of(held) if held is not None else np.zeros(0, np.int64)
            with _AtomicFile(self.url) as f, pq.ParquetWriter(f, schema, compression="zstd") as w:
                for part in range(self.parts):
                    tables = [
                        pq.ParquetFile(path).read_row_group(groups[part])
                        for path, groups in self._spills
                        if part in groups
                    ]
                    at = np.flatnonzero(held_part == part)
                    if len(at):
                        tables.append(held.slice(int(at[0]), len(at)))
                    if not tables:
                        continue
                    table = pa.concat_tables(tables, promote_options="permissive")
                    table = table.sort_by(self.RANK)
                    columns = [
                        table.column(name)
                        if name in table.column_names
                        else pa.nulls(table.num_rows, field.type)
                        for name, field in zip(schema.names, schema, strict=True)
                    ]
                    w.write_table(pa.Table.from_arrays(columns, schema=schema))
        finally:
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)

    def _schema(self) -> pa.Schema:
        if not self._schemas:  # no rows: the first columns, as strings
            return pa.schema([(name, pa.string()) for name in self.first])
        merged = pa.unify_schemas(self._schemas, promote_options="permissive")
        names = [n for n in merged.names if n != self.RANK]
        last = [n for n in self.last if n in names and n in self._nonempty]
        rest = sorted(set(names) - set(self.first) - set(self.last))
        order = [n for n in self.first if n in names] + rest + last
        return pa.schema([merged.field(n) for n in order])


class _AtomicFile:
    """A binary file at ``url`` that readers see whole or not at all: a local file is written
    under a temporary name, synced and renamed (the temporary file is removed if the block
    raises); on an object store it is one upload, visible when complete."""

    def __init__(self, url: str):
        self.url = url

    def __enter__(self):
        if is_local(self.url):
            path = normalize_uri(self.url)
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            self._path, self._tmp = path, f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            self._file = open(self._tmp, "wb")
        else:
            fs, path = _fs(self.url)
            self._path, self._tmp = None, None
            self._file = fs.open(path, "wb")  # one PUT or multipart upload: atomic on S3/GCS
        return self._file

    def __exit__(self, kind, value, traceback) -> None:
        if self._tmp is None:
            if kind is None:
                self._file.close()
            else:  # an object store's upload abandoned: nothing appears
                discard = getattr(self._file, "discard", None)
                discard() if discard else self._file.close()
            return
        try:
            if kind is None:
                self._file.flush()
                os.fsync(self._file.fileno())
            self._file.close()
            if kind is None:
                os.replace(self._tmp, self._path)
        finally:
            if os.path.exists(self._tmp):
                os.remove(self._tmp)


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
