"""The jobs whose pipeline is a chain of Ray Data stages over the input files (``probe``,
``clean``, ``enhance``, ``separate``, ``vad``, ``transcribe``), on the one lifecycle of
:mod:`pipelines.engine.lifecycle`.

    list -> Ray Dataset of (path, file_id, rel_path) -> the job's stages (operators through
    :func:`pipelines.engine.stages.apply_operator`, CPU reservations fitted to the cluster) -> driver:
    one ``files/`` row per input, ``errors/``, the job's own tables, ``_run.json``

A stage may fan a file out into *parts* (the clips of a long file, say): the file's row then says
how many (``parts``) and each part row carries ``kind == "part"`` (a job may say otherwise with
:meth:`FileJob.is_part`; a part a later stage splits in several rows marks its last one with
``part_last``). The driver hands parts to the
job as they arrive and closes a file once its row and all its parts are in, so a file with a
failed part is an error row (``files/`` + ``errors/``) even though its other parts were written.
Every input ends as exactly one ``files/`` row: ``ok`` rows + ``errors/`` rows = inputs, and an
input the pipeline never returned becomes an error of kind ``lost``.

Output names are built from input names, so they are sanitised here once for every job:
``..``/``.`` components, leading slashes and drive-like prefixes are dropped, and the result must
stay inside the job's output folder. Audio outputs are written to a temporary file and moved into
place whole.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.engine.config import StageResources
from pipelines.engine.lifecycle import Job
from pipelines.engine.sinks import TableSink, is_local, join, normalize_uri
from pipelines.engine.stages import (
    apply_operator,
    check_columns,
    fit_to_cluster,
    resources_for,
    threads_for,
)

#: Columns of every ``files/`` table that say how a file ended.
STATUS_FIELDS = [
    ("status", pa.string()),
    ("error_kind", pa.string()),
    ("error", pa.string()),
    ("error_stage", pa.string()),
]
#: The listing columns every ``files/`` table starts with.
LISTING_FIELDS = [("path", pa.string()), ("file_id", pa.string()), ("rel_path", pa.string())]
#: What the first stage of a job receives.
LISTING_COLUMNS = tuple(name for name, _ in LISTING_FIELDS)


def make_files_schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    """A ``files/`` schema: the listing columns, the job's ``fields``, then the status columns."""
    return pa.schema(LISTING_FIELDS + list(fields) + STATUS_FIELDS)


def arrow_fields(columns: dict[str, Any]) -> list[tuple[str, pa.DataType]]:
    """Arrow fields of columns given with their defaults (as :func:`rows_to_batch` types them)."""
    kinds = [(bool, pa.bool_()), (int, pa.int64()), (float, pa.float64())]
    return [
        (name, next((t for kind, t in kinds if isinstance(default, kind)), pa.string()))
        for name, default in columns.items()
    ]


# ----------------------------------------------------------------------------------------------
# Output names and audio outputs
# ----------------------------------------------------------------------------------------------


class UnsafePathError(ValueError):
    """An input name that cannot be turned into a path inside the output folder."""


def safe_relative_path(rel_path: str, suffix: str = ".flac") -> str:
    """A relative output path for an input's ``rel_path``: POSIX separators, no ``..``/``.``
    parts, no leading slash, the extension replaced by ``suffix``.

    Args:
        rel_path: the input's path below its input root.
        suffix: what replaces the extension (``.flac``, ``.vocals.flac``...).

    Raises:
        UnsafePathError: nothing usable is left (``..``, ``/``, an empty name).
    """
    parts = [p for p in str(rel_path).replace("\\", "/").split("/") if p not in ("", ".", "..")]
    parts = [p.replace(":", "_") for p in parts]
    if not parts:
        raise UnsafePathError(f"input name {rel_path!r} gives no usable output name")
    stem, _ = posixpath.splitext(parts[-1])
    if not stem.strip(". "):
        raise UnsafePathError(f"input name {rel_path!r} gives no usable output name")
    parts[-1] = stem + suffix
    return "/".join(parts)


def output_location(out: str, rel_path: str, suffix: str = ".flac", folder: str = "audio") -> str:
    """Where an input's audio output goes; always inside ``out/folder``.

    Args:
        out: the run's output folder.
        rel_path: the input's path below its input root.
        suffix: what replaces the input's extension.
        folder: the subfolder of ``out`` that mirrors the inputs.
    """
    relative = safe_relative_path(rel_path, suffix)
    root = join(out, folder)
    target = join(root, *relative.split("/"))
    if is_local(out):
        root_abs = os.path.abspath(normalize_uri(root))
        target_abs = os.path.abspath(normalize_uri(target))
        if os.path.commonpath([root_abs, target_abs]) != root_abs:
            raise UnsafePathError(f"input name {rel_path!r} would write outside {root_abs}")
    return target


def publish_file(tmp: str, target: str) -> None:
    """Move a finished file into place: a rename locally, one upload elsewhere."""
    if is_local(target):
        path = normalize_uri(target)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        staging = f"{path}.tmp-{os.getpid()}"
        shutil.move(tmp, staging)  # across filesystems too; the final rename is atomic
        os.replace(staging, path)
        return
    import fsspec

    fs, path = fsspec.core.url_to_fs(target)
    fs.put_file(tmp, path)


@contextlib.contextmanager
def flac_output(target: str, sample_rate: int, channels: int = 1) -> Iterator[Any]:
    """A 16-bit FLAC writer (``soundfile.SoundFile``) whose file appears at ``target`` only when
    the block exits without an error; a failure leaves nothing behind.

    Args:
        target: the final location (local path or URL).
        sample_rate: rate in Hz.
        channels: channel count.
    """
    import soundfile as sf

    fd, tmp = tempfile.mkstemp(suffix=".flac")
    os.close(fd)
    try:
        with sf.SoundFile(tmp, "w", sample_rate, channels, format="FLAC", subtype="PCM_16") as f:
            yield f
        publish_file(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ----------------------------------------------------------------------------------------------
# Batches of heterogeneous rows
# ----------------------------------------------------------------------------------------------


def rows_to_batch(rows: list[dict[str, Any]], defaults: dict[str, Any]) -> dict[str, np.ndarray]:
    """Row dicts -> a numpy batch with one column per key of ``defaults`` (missing values take
    the default), typed by the default: bool, int64, float64, else object. Every batch a stage
    returns then has the same columns, whatever mix of rows it holds.

    Args:
        rows: the rows.
        defaults: every column and its default value.
    """
    out = {}
    for key, default in defaults.items():
        values = [row.get(key, default) for row in rows]
        if isinstance(default, bool):
            out[key] = np.array(values, dtype=bool)
        elif isinstance(default, int):
            out[key] = np.array(values, dtype=np.int64)
        elif isinstance(default, float):
            out[key] = np.array(values, dtype=np.float64)
        else:
            out[key] = np.array(values, dtype=object)
    return out


def batch_rows(batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """A numpy batch as row dicts (numpy scalars as Python values)."""
    n = len(next(iter(batch.values()))) if batch else 0
    return [
        {k: (v[i].item() if isinstance(v[i], np.generic) else v[i]) for k, v in batch.items()}
        for i in range(n)
    ]


class WholeFileOperator:
    """A stage that processes each input file whole (streaming it) and adds one row of results.

    Subclasses implement :meth:`process` and list their result columns, with the value a column
    takes when absent, in :attr:`columns`.
    """

    uses_model = True
    batch_size = 1
    inputs = ("path", "rel_path")
    #: Result columns and their defaults.
    columns: dict[str, Any] = {}

    def process(self, path: str, rel_path: str) -> dict[str, Any]:
        """The results of one file.

        Args:
            path: the file's normalised location.
            rel_path: its path below its input root (outputs mirror it).
        """
        raise NotImplementedError

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [
            self.process(str(p), str(r))
            for p, r in zip(batch["path"], batch["rel_path"], strict=True)
        ]
        return {**batch, **rows_to_batch(rows, self.columns)}


# ----------------------------------------------------------------------------------------------
# The job
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One operator of a job's pipeline.

    Args:
        name: the stage's name (error rows, ``resources:`` overrides).
        operator: the operator class (see :mod:`pipelines.engine.stages`).
        kwargs: its constructor arguments.
        use_actors: force actors (True) or tasks (False); default from ``uses_model``.
    """

    name: str
    operator: type
    kwargs: dict[str, Any] = field(default_factory=dict)
    use_actors: bool | None = None


@dataclass
class FileState:
    """A file in flight on the driver: its row (once it arrived), its parts so far, and the rows
    of the job's tables it will be committed with.

    Args:
        listing: the file's listing row.
        row: the file's row from the pipeline, None until it arrives.
        parts: parts seen (a part that a stage split into several rows counts once, on the row
            whose ``part_last`` is true).
        failures: the part rows that failed.
        totals: sums the job keeps per file (seconds transcribed, say).
        rows: the file's rows of the job's tables, by table.
    """

    listing: dict[str, Any]
    row: dict[str, Any] | None = None
    parts: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    totals: Counter[str] = field(default_factory=Counter)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, table: str, rows) -> None:
        """Rows of ``table`` to commit with this file."""
        self.rows.setdefault(table, []).extend(rows)

    @property
    def complete(self) -> bool:
        """The file's row and all the parts it announced are in."""
        return self.row is not None and self.parts >= self.expected

    @property
    def expected(self) -> int:
        """Parts the file's row announced (0 before it arrives, or when it has none)."""
        value = (self.row or {}).get("parts")
        try:
            return max(int(value), 0)
        except (TypeError, ValueError):  # None, or NaN from a row without the column
            return 0


class FileJob(Job):
    """A job whose pipeline is a chain of Ray Data stages over the input files, each file
    turned into one ``files/`` row plus the job's own tables, on the one lifecycle of
    :class:`pipelines.engine.lifecycle.Job`.

    Subclasses set :attr:`name`, :attr:`files_schema` and :attr:`tables`, list their
    :meth:`stages`, and may override :meth:`preflight`, :meth:`part` (a part row),
    :meth:`file_record` (a file's ``files/`` row, made once all its parts are in) and
    :meth:`counts`.
    """

    #: Columns of ``files/``.
    files_schema: pa.Schema = make_files_schema()
    #: The job's own tables: folder under ``out`` -> schema (rows carry ``file_id``).
    tables: dict[str, pa.Schema] = {}

    @classmethod
    def table_locations(cls) -> dict[str, str]:
        return {**super().table_locations(), **{name: name for name in cls.tables}}

    #: Other folders under ``out`` the job writes (audio); ``overwrite`` deletes them too.
    output_folders: tuple[str, ...] = ()
    #: A failed part makes its file an error (else the job accounts for it in its tables).
    failed_part_fails_file = True

    @property
    def outputs(self) -> tuple[str, ...]:  # type: ignore[override]
        return (*self.tables, *self.output_folders)

    # -- hooks --------------------------------------------------------------------------------

    def stages(self) -> list[Stage]:
        """The operators every file goes through, in order."""
        raise NotImplementedError

    def is_part(self, row: dict[str, Any]) -> bool:
        """Whether a row the pipeline returned is a part of its file (else the file's row)."""
        return row.get("kind") == "part"

    def part(self, row: dict[str, Any], file: FileState) -> None:
        """Take one part row of ``file`` (``status`` ok or error); failures are already noted."""

    def file_record(self, row: dict[str, Any], file: FileState) -> dict[str, Any]:
        """The ``files/`` row of a finished file (its listing row under the pipeline's row)."""
        return {**file.listing, **row}

    def counts(self) -> dict[str, Any]:
        """Job-specific counts for ``_run.json`` (the tables are written when it is called)."""
        return {}

    # -- the lifecycle's hooks --------------------------------------------------------------------

    def schemas(self, listing: list[dict[str, Any]]) -> dict[str, pa.Schema | None]:
        return {"files": self.files_schema, **self.tables}

    def check(self) -> None:
        check_columns([(s.name, s.operator) for s in self.stages()], LISTING_COLUMNS)

    def threads_for(self, operator: type, stage: str) -> int:
        """CPU threads an actor of ``stage`` runs its model with (see
        :func:`pipelines.engine.stages.threads_for`)."""
        return threads_for(operator, getattr(self.config, "resources", {}) or {}, stage)

    def _fitted_stages(self, stages: list[Stage], total_cpus: float) -> dict[str, StageResources]:
        overrides = getattr(self.config, "resources", {}) or {}
        plans = {
            s.name: (
                resources_for(s.operator, overrides, s.name),
                getattr(s.operator, "uses_model", False) if s.use_actors is None else s.use_actors,
            )
            for s in stages
        }
        return fit_to_cluster(plans, total_cpus)

    def execute(self, todo: list[dict[str, Any]]) -> None:
        import ray
        import ray.data

        self._pending = {row["file_id"]: FileState(row) for row in todo}
        stages = self.stages()
        fitted = self._fitted_stages(stages, float(ray.cluster_resources().get("CPU", 1.0)))
        ds = ray.data.from_items(
            [{k: r[k] for k in LISTING_COLUMNS} for r in todo],
            override_num_blocks=min(len(todo), 1000),
        )
        for s in stages:
            ds = apply_operator(
                ds,
                s.operator,
                stage=s.name,
                kwargs=s.kwargs,
                resources=fitted[s.name],
                use_actors=s.use_actors,
            )
        for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
            for row in batch.to_dict(orient="records"):
                self._route(row)

    def unfinished(
        self, listing: dict[str, Any], error: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        state = getattr(self, "_pending", {}).pop(listing["file_id"], None) or FileState(listing)
        if state.row is not None:
            error = {
                **error,
                "error": f"the pipeline returned {state.parts} of {state.expected} parts",
            }
        state.row = {
            **(state.row or {}),
            "file_id": listing["file_id"],
            "path": listing["path"],
            "rel_path": listing.get("rel_path"),
            **error,
        }
        return self._record(state)

    def finalise(self, seen: set[str]) -> dict[str, Any]:
        """Rebuild the job's own tables from every committed shard (this run's and earlier
        ones'), rows of the inputs in ``seen`` only; :meth:`counts` reads them afterwards."""
        self.sinks: dict[str, TableSink] = {}
        for name, schema in self.tables.items():
            sink = TableSink(join(self.out, name), schema)
            for table in self.store.read(name):
                sink.add(r for r in table.to_pylist() if r["file_id"] in seen)
            sink.close()
            self.sinks[name] = sink
        return self.counts()

    def record(self) -> dict[str, Any]:
        return {"tables": {name: sink.shards for name, sink in self.sinks.items()}}

    # -- routing rows to files --------------------------------------------------------------------

    def _route(self, row: dict[str, Any]) -> None:
        state = self._pending.get(row.get("file_id"))
        if state is None:  # already closed (or unknown): nothing may be counted twice
            return
        if self.is_part(row):
            state.parts += int(bool(row.get("part_last", True)))
            if row.get("status") not in ("ok", "skip"):
                state.failures.append(row)
            self.part(row, state)
        else:
            state.row = row
        if state.complete:
            del self._pending[row["file_id"]]
            self.commit(row["file_id"], *self._record(state))

    def _record(self, state: FileState) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        row = dict(state.row or {})
        if state.failures and row.get("status") == "ok" and self.failed_part_fails_file:
            first = state.failures[0]
            row.update(
                status="error",
                error_kind=first.get("error_kind") or "error",
                error_stage=first.get("error_stage") or "",
                error=(
                    f"{len(state.failures)} of {state.parts} parts failed; first at "
                    f"{float(first.get('start') or 0.0):.2f}s: {first.get('error') or ''}"
                ),
            )
        return self.file_record(row, state), state.rows
