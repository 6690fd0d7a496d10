"""The skeleton every per-file job shares (``enhance``, ``separate``, ``vad``, ``transcribe``).

    list -> Ray Dataset of (path, file_id, rel_path) -> the job's stages (operators through
    :func:`pipelines.engine.stages.apply_operator`, CPU reservations fitted to the cluster) -> driver:
    one ``files/`` row per input, ``errors/``, the job's own tables, ``_run.json``

A stage may fan a file out into *parts* (the clips of a long file, say): the file's row then says
how many (``parts``) and each part row carries ``kind == "part"``. The driver hands parts to the
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
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.engine.config import StageResources
from pipelines.engine.resume import ShardStore, open_run
from pipelines.engine.runtime import ErrorPolicy, Progress, RaySession
from pipelines.engine.sinks import TableSink, is_local, join, normalize_uri, utc_now
from pipelines.engine.sources import list_corpus
from pipelines.engine.stages import apply_operator, fit_to_cluster, resources_for, threads_for
from pipelines.engine.summary import JobSummary


class _RowsByFile:
    """Where a job's ``part`` hook adds its table rows while the run is going: held per file
    until the file closes and is committed with them (see :mod:`pipelines.engine.resume`)."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {}

    def add(self, rows) -> None:
        for row in rows:
            self.rows.setdefault(row["file_id"], []).append(row)

    def pop(self, file_id: str) -> list[dict[str, Any]]:
        return self.rows.pop(file_id, [])


#: Columns of every ``files/`` table that say how a file ended.
STATUS_FIELDS = [
    ("status", pa.string()),
    ("error_kind", pa.string()),
    ("error", pa.string()),
    ("error_stage", pa.string()),
]
#: The listing columns every ``files/`` table starts with.
LISTING_FIELDS = [("path", pa.string()), ("file_id", pa.string()), ("rel_path", pa.string())]


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
    """A file in flight on the driver: its row (once it arrived) and its parts so far.

    Args:
        listing: the file's listing row.
        row: the file's row from the pipeline, None until it arrives.
        parts: part rows seen.
        failures: the part rows that failed.
        totals: sums the job keeps per file (seconds transcribed, say).
    """

    listing: dict[str, Any]
    row: dict[str, Any] | None = None
    parts: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    totals: Counter[str] = field(default_factory=Counter)

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


class FileJob:
    """A job that turns every input file into one ``files/`` row (plus the job's own tables).

    Subclasses set :attr:`name` and :attr:`files_schema`, list their :meth:`stages`, and may
    override :meth:`preflight` (checks on the driver before Ray starts), :meth:`part` (a part
    row) and :meth:`file_record` (a file's ``files/`` row, written once all its parts are in).

    Args:
        out: output folder, local or URL.
        config: the run's configuration (its ``resources`` and ``extensions`` are honoured).
        policy: when failures abort the job.
        quiet: no progress line.
    """

    #: The job's name, as in ``voxflow NAME``.
    name = ""
    #: Columns of ``files/``.
    files_schema: pa.Schema = make_files_schema()
    #: The job's own tables: folder under ``out`` -> schema (rows carry ``file_id``).
    tables: dict[str, pa.Schema] = {}
    #: Other folders under ``out`` the job writes (audio); ``overwrite`` deletes them too.
    output_folders: tuple[str, ...] = ()
    #: The run's config dataclass (its defaults when a caller gives no config).
    config_class: type = object
    #: Finished files per committed shard (resume granularity).
    commit_files = 64

    def __init__(
        self,
        out: str,
        config: Any,
        *,
        policy: ErrorPolicy | None = None,
        quiet: bool = False,
        overwrite: bool = False,
    ):
        self.out, self.config = out, config
        self.policy = policy or ErrorPolicy()
        self.quiet = quiet
        self.overwrite = overwrite
        self.sinks: dict[str, Any] = {}

    # -- hooks --------------------------------------------------------------------------------

    def stages(self) -> list[Stage]:
        """The operators every file goes through, in order."""
        raise NotImplementedError

    def preflight(self) -> None:
        """Checks that must pass before any work starts (models that cannot be had, say)."""

    def part(self, row: dict[str, Any], file: FileState) -> None:
        """Take one part row of ``file`` (``status`` ok or error); failures are already noted."""

    def file_record(self, row: dict[str, Any], file: FileState) -> dict[str, Any]:
        """The ``files/`` row of a finished file (its listing row under the pipeline's row)."""
        return {**file.listing, **row}

    def counts(self) -> dict[str, Any]:
        """Job-specific counts for ``_run.json``."""
        return {}

    # -- the run --------------------------------------------------------------------------------

    @classmethod
    def launch(
        cls,
        inputs: list[str],
        out: str,
        config: Any = None,
        *,
        address: str | None = None,
        quiet: bool = False,
        num_cpus: int | None = None,
        policy: ErrorPolicy | None = None,
        overwrite: bool = False,
    ) -> JobSummary:
        """Run the job on ``inputs`` into ``out`` (each job module exports this as ``run_NAME``).

        Args:
            inputs: directories, globs, files or manifests.
            out: output folder, local or URL.
            config: the run's configuration (an instance of :attr:`config_class`; None: defaults).
            address: Ray address; None starts (and stops) a local Ray.
            quiet: no progress line.
            num_cpus: CPUs of a local Ray started for this job.
            policy: when failures abort the job.
            overwrite: replace a previous run's outputs in ``out`` made with another config
                (otherwise refused); with the same config the run resumes.

        Returns:
            The job's summary; ``ok + errors == inputs``.
        """
        job = cls(
            out,
            config if config is not None else cls.config_class(),
            policy=policy,
            quiet=quiet,
            overwrite=overwrite,
        )
        return job.run(inputs, address=address, num_cpus=num_cpus)

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

    def run(
        self, inputs: list[str], *, address: str | None = None, num_cpus: int | None = None
    ) -> JobSummary:
        """List ``inputs``, run every file through the stages, write the tables.

        Args:
            inputs: directories, globs, files or manifests.
            address: Ray address; None starts (and stops) a local Ray.
            num_cpus: CPUs of a local Ray started for this job.

        Returns:
            The job's summary; ``ok + errors == inputs``.
        """
        self.preflight()
        started_at, t0 = utc_now(), time.perf_counter()
        listing = list_corpus(inputs, getattr(self.config, "extensions", ()) or None)
        by_id = {row["file_id"]: row for row in listing}
        self._store = ShardStore(
            self.out, {"files": self.files_schema, **self.tables}, self.commit_files
        )
        owned = ("files", "errors", *self.tables, *self.output_folders)
        state = open_run(
            self.out, self.name, self.config, self._store, overwrite=self.overwrite, owned=owned
        )
        if state.finished(by_id):
            return state.previous_summary(len(listing), self.quiet)
        todo = state.start(listing, self.quiet, started_at)
        self.sinks = {name: _RowsByFile() for name in self.tables}
        self._progress = Progress(self.name, len(todo), quiet=self.quiet)
        self._pending = {row["file_id"]: FileState(row) for row in todo}
        if todo:
            with RaySession(address=address, num_cpus=num_cpus, quiet=self.quiet):
                import ray
                import ray.data

                stages = self.stages()
                fitted = self._fitted_stages(stages, float(ray.cluster_resources().get("CPU", 1.0)))
                ds = ray.data.from_items(
                    [{k: r[k] for k in ("path", "file_id", "rel_path")} for r in todo],
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
        for file_id, pending in list(self._pending.items()):
            self._lost(file_id, pending)
        self._store.flush()
        self._progress.close()
        summary, seen = state.rebuild_files(self._store, by_id)
        self._rebuild_tables(seen)
        summary.wall_seconds = time.perf_counter() - t0
        tables = {name: sink.shards for name, sink in self.sinks.items()}
        state.complete(
            summary.run_record(
                inputs,
                self.config,
                started_at,
                counts={**self.counts(), "skipped_committed": state.skipped},
                tables=tables,
            )
        )
        return summary

    def _rebuild_tables(self, keep: set[str]) -> None:
        """Rebuild the job's own tables from every committed shard (this run's and earlier
        ones'), rows of the inputs in ``keep`` only; :meth:`counts` reads them afterwards."""
        self.sinks = {}
        for name, schema in self.tables.items():
            sink = TableSink(join(self.out, name), schema)
            for table in self._store.read(name):
                sink.add(r for r in table.to_pylist() if r["file_id"] in keep)
            sink.close()
            self.sinks[name] = sink

    def _route(self, row: dict[str, Any]) -> None:
        state = self._pending.get(row.get("file_id"))
        if state is None:  # already closed (or unknown): nothing may be counted twice
            return
        if row.get("kind") == "part":
            state.parts += 1
            if row.get("status") != "ok":
                state.failures.append(row)
            self.part(row, state)
        else:
            state.row = row
        if state.complete:
            del self._pending[row["file_id"]]
            self._close(state)

    def _close(self, state: FileState) -> None:
        row = dict(state.row or {})
        if state.failures and row.get("status") == "ok":
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
        record = self.file_record(row, state)
        failed = record.get("status") != "ok"
        duration = 0.0 if failed else float(record.get("duration") or 0.0)
        if failed:
            record["error_kind"] = record.get("error_kind") or "error"
        file_id = state.listing["file_id"]
        rows = {name: sink.pop(file_id) for name, sink in self.sinks.items()}
        self._store.add(file_id, {"files": [record], **rows})
        self._progress.update(1, duration, int(failed))
        self.policy.record(failed, f"{record.get('path')}: {record.get('error')}")

    def _lost(self, file_id: str, state: FileState) -> None:
        del self._pending[file_id]
        state.row = {
            **(state.row or {}),
            "file_id": file_id,
            "path": state.listing["path"],
            "rel_path": state.listing.get("rel_path"),
            "status": "error",
            "error_kind": "lost",
            "error_stage": "pipeline",
            "error": (
                f"the pipeline returned {state.parts} of {state.expected} parts"
                if state.row
                else "the pipeline returned no result for this file"
            ),
        }
        self._close(state)
