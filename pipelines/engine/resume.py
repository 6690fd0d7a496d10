"""Resume: per-shard atomic commits of finished inputs, and the guard that keeps runs apart.

A job's driver gathers the rows of every finished input (its ``files`` row, its segments, its
centroids...) and commits them in shards under ``OUT/_shards/<table>/``. A shard holds the rows of
a group of whole inputs; each of its tables is written under a temporary name and renamed, and the
``files`` table (the marker) is written last, so a shard counts as committed exactly when its
marker exists. Shard names are derived from the file ids they hold, so a re-run that commits the
same inputs writes the same names.

When a job starts, :func:`open_run` reads ``OUT/_run.json``:

- same job, same config hash: resume. Committed inputs are skipped (and said so); orphans of a
  shard that was cut off (tables written before the marker) and temporary files are removed.
- another config: refused with a message naming both hashes, unless ``overwrite``, which deletes
  the previous run's outputs first. A job whose committed shards depend on only part of its
  config (``voxflow diarize``: everything but the global ``linking`` stage) passes that part as
  ``shard_config``; a run that changes only the rest reuses every committed input and redoes only
  the corpus-wide step (re-linking 10,000 hours then takes seconds, not hours).
- a finished run whose inputs are all committed: nothing to do, and nothing is written.

The final tables (``files/``, ``segments/``...) are rebuilt from the shards at the end of a run.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.engine.config import ConfigError, config_hash
from pipelines.engine.sinks import (
    TableSink,
    _fs,
    is_local,
    join,
    normalize_uri,
    read_run_json,
    utc_now,
    write_run_json,
    write_table_atomic,
)
from pipelines.engine.summary import ERRORS_SCHEMA, JobSummary, error_record

SHARDS_DIR = "_shards"
#: The table whose presence marks a shard as committed.
MARKER = "files"


def _list(directory: str) -> list[str]:
    """Names (not paths) of the entries of ``directory``; empty when it does not exist."""
    if is_local(directory):
        path = normalize_uri(directory)
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    fs, path = _fs(directory)
    if not fs.exists(path):
        return []
    return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))


def remove(url: str, recursive: bool = False) -> None:
    """Delete a file (or, ``recursive``, a folder), local or URL; nothing if it is absent. A
    local folder without ``recursive`` is an error, not deleted."""
    if is_local(url):
        path = normalize_uri(url)
        if os.path.isdir(path):
            if not recursive:
                raise IsADirectoryError(f"{path} is a folder (remove it with recursive=True)")
            import shutil

            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
        return
    fs, path = _fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


def read_table(url: str, columns: list[str] | None = None, skip: tuple[str, ...] = ()) -> pa.Table:
    """One Parquet file, local or URL: only ``columns`` when given (those the file has: a
    table written without rows may have none), never those in ``skip``; the file is opened once."""
    if is_local(url):
        source, fs = normalize_uri(url), None
    else:
        fs, source = _fs(url)
    if columns is None and not skip:
        return pq.read_table(source, filesystem=fs)
    with fs.open(source, "rb") if fs is not None else open(source, "rb") as f:
        parquet = pq.ParquetFile(f)
        names = parquet.schema_arrow.names
        return parquet.read(columns=[c for c in (columns or names) if c in names and c not in skip])


def shard_name(file_ids: Iterable[str]) -> str:
    """The deterministic name of the shard holding ``file_ids``."""
    digest = hashlib.sha256("\n".join(sorted(file_ids)).encode("utf-8")).hexdigest()
    return f"shard-{digest[:20]}.parquet"


class ShardStore:
    """Buffers finished inputs' rows and commits them as shards of whole inputs.

    Args:
        out: the run's output folder.
        schemas: table name -> Arrow schema (None: inferred from the rows); must include
            ``files`` (the marker).
        files_per_shard: commit after this many finished inputs ...
        seconds_per_shard: ... or when the oldest uncommitted input waited this long.
    """

    def __init__(
        self,
        out: str,
        schemas: dict[str, pa.Schema | None],
        files_per_shard: int = 64,
        seconds_per_shard: float = 30.0,
    ):
        if MARKER not in schemas:
            raise ValueError(f"a shard store needs a {MARKER!r} table")
        self.root = join(out, SHARDS_DIR)
        self.schemas = schemas
        self.files_per_shard = max(1, files_per_shard)
        self.seconds_per_shard = seconds_per_shard
        self._ids: list[str] = []
        self._rows: dict[str, list[dict[str, Any]]] = {name: [] for name in schemas}
        self._oldest = 0.0
        self.committed_shards = 0

    # -- reading what earlier runs committed -------------------------------------------------
    def committed(self) -> list[str]:
        """Names of the committed shards (their marker exists), after removing leftovers: temporary
        files and the tables of shards whose marker was never written."""
        names = [n for n in _list(join(self.root, MARKER)) if ".tmp-" not in n]
        keep = set(names)
        for table in self.schemas:
            for name in _list(join(self.root, table)):
                if ".tmp-" in name or (table != MARKER and name not in keep):
                    remove(join(self.root, table, name))
        return names

    def committed_ids(self) -> set[str]:
        """File ids of every committed input."""
        ids: set[str] = set()
        for name in self.committed():
            ids.update(read_table(join(self.root, MARKER, name)).column("file_id").to_pylist())
        return ids

    def read(
        self, table: str, columns: list[str] | None = None, skip: tuple[str, ...] = ()
    ) -> Iterator[pa.Table]:
        """The committed shards of ``table``, one Arrow table each, in name order (a shard whose
        table is absent, because that table was optional then, is skipped), with ``columns``
        and ``skip`` as :func:`read_table` takes them (``skip``: large payloads a caller reads
        apart)."""
        present = set(_list(join(self.root, table)))
        for name in self.committed():
            if name not in present:
                continue
            yield read_table(join(self.root, table, name), columns, skip)

    # -- committing ---------------------------------------------------------------------------
    def add(self, file_id: str, rows: dict[str, list[dict[str, Any]]]) -> bool:
        """Buffer one finished input's rows (``rows[MARKER]`` is its ``files`` row); commits a
        shard when one is due and returns whether it did."""
        if not self._ids:
            self._oldest = time.monotonic()
        self._ids.append(file_id)
        for name, table_rows in rows.items():
            self._rows[name].extend(table_rows)
        due = len(self._ids) >= self.files_per_shard or (
            time.monotonic() - self._oldest >= self.seconds_per_shard
        )
        if due:
            self.flush()
        return due

    def flush(self) -> None:
        """Commit the buffered inputs as one shard: every table first, the marker last."""
        if not self._ids:
            return
        name = shard_name(self._ids)
        for table in sorted(self.schemas, key=lambda t: t == MARKER):
            schema = self.schemas[table]
            rows = self._rows[table]
            if schema is None:  # columns vary with the config: inferred
                data = pa.Table.from_pylist(rows)
            else:
                data = pa.Table.from_pylist(
                    [{k: row.get(k) for k in schema.names} for row in rows], schema=schema
                )
            write_table_atomic(join(self.root, table, name), data)
        self._ids = []
        self._rows = {table: [] for table in self.schemas}
        self.committed_shards += 1

    def remove_all(self) -> None:
        """Delete every shard (after an ``overwrite``)."""
        remove(self.root, recursive=True)


@dataclass
class RunState:
    """What :func:`open_run` found in the output folder.

    Args:
        out: the output folder.
        job: the job's name.
        config_hash: hash of this run's config.
        previous: the ``_run.json`` found there, if any.
        committed: file ids committed by earlier runs with this config.
        skipped: inputs of this run that were committed already (set by :meth:`start`).
        shards_hash: hash of the part of the config the committed shards depend on (None: all
            of it).
    """

    out: str
    job: str
    config_hash: str
    previous: dict[str, Any] | None = None
    committed: set[str] = field(default_factory=set)
    skipped: int = 0
    shards_hash: str | None = None

    def finished(self, file_ids: Iterable[str]) -> bool:
        """True when an earlier run completed and committed every one of ``file_ids``: there is
        nothing to do and nothing must be written."""
        return bool(
            self.previous
            and self.previous.get("status", "complete") == "complete"
            and self.previous.get("config_hash") == self.config_hash
            and set(file_ids) <= self.committed
        )

    def start(
        self, listing: list[dict[str, Any]], quiet: bool, started_at: str | None = None
    ) -> list[dict[str, Any]]:
        """The listing rows still to run (the others are skipped, and said so), after recording
        in ``_run.json`` that this run owns the folder (see :meth:`mark_running`)."""
        todo = [row for row in listing if row["file_id"] not in self.committed]
        self.skipped = len(listing) - len(todo)
        if self.skipped and not quiet:
            print(
                f"voxflow {self.job}: resuming: {self.skipped} of {len(listing)} inputs were "
                f"committed by an earlier run; {len(todo)} to go",
                file=sys.stderr,
            )
        self.mark_running(started_at)
        return todo

    def rebuild_files(
        self, store: ShardStore, by_id: dict[str, dict[str, Any]]
    ) -> tuple[JobSummary, set[str]]:
        """Write ``files/`` and ``errors/`` from every committed shard (earlier runs' and this
        one's) for the inputs listed now, each input once. Returns the whole run's summary and the
        ids written, which the job's other tables keep."""
        summary = JobSummary(job=self.job, out=self.out, inputs=len(by_id), skipped=self.skipped)
        kinds: Counter[str] = Counter()
        files = TableSink(join(self.out, "files"), store.schemas[MARKER])
        errors = TableSink(join(self.out, "errors"), ERRORS_SCHEMA)
        seen: set[str] = set()
        for table in store.read(MARKER):
            for row in table.to_pylist():
                if row["file_id"] not in by_id or row["file_id"] in seen:
                    continue
                seen.add(row["file_id"])
                files.add([row])
                if row.get("status") == "ok":
                    summary.ok += 1
                    summary.audio_seconds += float(row.get("duration") or 0.0)
                else:
                    errors.add([error_record(row)])
                    kinds[row.get("error_kind") or "error"] += 1
                    summary.errors += 1
        files.close()
        errors.close()
        summary.errors_by_kind = dict(kinds)
        return summary, seen

    def complete(self, record: dict[str, Any]) -> None:
        """Write the finished run's ``_run.json`` (``record`` marked complete)."""
        extra = {} if self.shards_hash is None else {"shards_hash": self.shards_hash}
        # The hash this run was opened with (a job may hash more than its config).
        extra["config_hash"] = self.config_hash
        write_run_json(self.out, {**record, **extra, "status": "complete"})

    def previous_summary(self, inputs: int, quiet: bool) -> JobSummary:
        """The summary of the finished run found in ``out``, when there is nothing to do (nothing
        is run and nothing written)."""
        counts = (self.previous or {}).get("counts", {})
        if not quiet:
            print(
                f"voxflow {self.job}: all {inputs} inputs were committed by a finished run with "
                "the same config; nothing to do (--overwrite runs it again)",
                file=sys.stderr,
            )
        return JobSummary(
            job=self.job,
            out=self.out,
            inputs=inputs,
            ok=int(counts.get("ok", 0)),
            errors=int(counts.get("errors", 0)),
            audio_seconds=float(counts.get("audio_seconds", 0.0)),
            errors_by_kind=dict(counts.get("errors_by_kind", {})),
            skipped=inputs,
        )

    def mark_running(self, started_at: str | None = None) -> None:
        """Record in ``_run.json`` that a run with this config hash owns the folder, so a run cut
        off from here on can be resumed (and a different config is refused)."""
        record = dict(self.previous or {})
        record.update(
            job=self.job,
            config_hash=self.config_hash,
            status="running",
            started_at=started_at or utc_now(),
        )
        if self.shards_hash is not None:
            record["shards_hash"] = self.shards_hash
        write_run_json(self.out, record)


def open_run(
    out: str,
    job: str,
    config: Any,
    store: ShardStore,
    *,
    overwrite: bool = False,
    owned: Iterable[str] = (),
    shard_config: Any = None,
    quiet: bool = True,
) -> RunState:
    """Check ``out`` against this run and load what earlier runs committed.

    Args:
        out: the output folder.
        job: the job's name.
        config: the run's config (its hash decides whether earlier outputs may be reused).
        store: the job's shard store.
        overwrite: delete a previous run's outputs instead of refusing a different config.
        owned: the folders and files (relative to ``out``) this job writes; ``overwrite`` deletes
            them, and nothing else.
        shard_config: the part of ``config`` that the committed shards depend on. A previous run
            of the same job whose config differs from this one only outside that part is not
            refused: its committed inputs are reused, and only the job's final step runs again.
        quiet: do not say so when that happens.

    Raises:
        ConfigError: ``out`` holds outputs of another job or config and ``overwrite`` is False.
    """
    digest = config_hash(config)
    shards = None if shard_config is None else config_hash(shard_config)
    previous = read_run_json(out)
    if previous is not None and overwrite:
        for rel in [*owned, SHARDS_DIR, "_run.json"]:
            remove(join(out, rel), recursive=True)
        previous = None
    if previous is not None:
        same_shards = shards is not None and previous.get("shards_hash") == shards
        if previous.get("job") == job and previous.get("config_hash") != digest and same_shards:
            committed = store.committed_ids()
            if not quiet:
                print(
                    f"voxflow {job}: the config changed (hash "
                    f"{str(previous.get('config_hash'))[:12]} -> {digest[:12]}) in nothing the "
                    f"{len(committed)} committed inputs depend on: reusing them, redoing the "
                    "corpus-wide step",
                    file=sys.stderr,
                )
            return RunState(out, job, digest, previous, committed, shards_hash=shards)
        if previous.get("job") != job or previous.get("config_hash") != digest:
            raise ConfigError(
                f"{out} holds a {previous.get('job')} run with config hash "
                f"{str(previous.get('config_hash'))[:12]}, this {job} run's is {digest[:12]}: "
                "refusing to mix their outputs (pass --overwrite to replace them, or choose "
                "another --out)"
            )
        return RunState(out, job, digest, previous, store.committed_ids(), shards_hash=shards)
    # No run record: shards without one belong to nobody we can vouch for.
    store.remove_all()
    return RunState(out, job, digest, shards_hash=shards)
