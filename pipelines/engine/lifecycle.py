"""The one job lifecycle: every ``voxflow`` job (probe, diarize, clean, enhance, separate, vad,
transcribe) runs through :meth:`Job.run`.

    list the inputs -> open the output folder (a previous run with another config is refused
    unless ``overwrite``; with the same config its committed inputs are skipped)
    -> the job's Ray pipeline (:meth:`Job.execute`, inside a :class:`RaySession`), which hands
       each finished file to :meth:`Job.commit` with its rows
    -> every input the pipeline never finished becomes an error of kind ``lost``
    -> ``files/`` and ``errors/`` rebuilt from every committed shard, then the job's own tables
       (:meth:`Job.finalise`) -> ``_run.json``

A job declares what it is (``name``, ``config_class``, the folders it owns, its shard tables)
and fills in the hooks; it never opens the run folder, counts progress or writes ``_run.json``
itself. Every input ends as exactly one ``files/`` row: ``ok`` rows + ``errors/`` rows = inputs.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from typing import Any

import pyarrow as pa

from pipelines.engine.resume import RunState, ShardStore, open_run
from pipelines.engine.runtime import ErrorPolicy, Progress, RaySession, console_to_log
from pipelines.engine.sinks import is_local, normalize_uri, utc_now
from pipelines.engine.sources import list_corpus
from pipelines.engine.summary import JobSummary

#: The run's console log under ``out``: what Ray and the libraries print during a run.
LOG_NAME = "_run.log"

#: The error every input gets when the pipeline never finished it.
LOST = {"status": "error", "error_kind": "lost", "error_stage": "pipeline"}


class Job:
    """A job's declaration and hooks; :meth:`run` is the lifecycle around them.

    Args:
        out: output folder, local or URL.
        config: the run's configuration (an instance of :attr:`config_class`).
        policy: when failures abort the job.
        quiet: no progress line.
        overwrite: replace a previous run's outputs in ``out`` made with another config
            (otherwise refused); with the same config the run resumes.
    """

    #: The job's name, as in ``voxflow NAME``.
    name = ""
    #: The run's config dataclass (its defaults when a caller gives no config).
    config_class: type = object
    #: What the job writes under ``out`` besides ``files/`` and ``errors/``; ``overwrite``
    #: deletes these, and nothing else.
    outputs: tuple[str, ...] = ()
    #: The tables a caller reads back besides ``files`` and ``errors``: name -> location under
    #: ``out`` (a folder of Parquet parts or one Parquet file); see :meth:`table_locations`.
    result_tables: dict[str, str] = {}
    #: Finished files per committed shard (resume granularity), unless the config says ...
    commit_files = 64
    #: ... or commit when the oldest uncommitted file waited this long (seconds).
    commit_seconds = 30.0

    def __init__(
        self,
        out: str,
        config: Any,
        *,
        policy: ErrorPolicy | None = None,
        quiet: bool = False,
        overwrite: bool = False,
    ):
        # A relative local folder is made absolute here, in the driver: workers write outputs of
        # their own (clips, enhanced audio) and on a cluster their working folder is not ours.
        self.out = normalize_uri(out) if is_local(out) else out
        self.config = config
        self.policy = policy or ErrorPolicy()
        self.quiet = quiet
        self.overwrite = overwrite
        self.done: set[str] = set()

    # -- hooks --------------------------------------------------------------------------------

    def preflight(self) -> None:
        """Checks that must pass before anything is listed or written (a model that cannot be
        had, a bad filter rule)."""

    def check(self) -> None:
        """Checks of the job's pipeline itself before it launches (after :meth:`preflight`):
        that every stage's declared input columns are given by the stages before it."""

    def schemas(self, listing: list[dict[str, Any]]) -> dict[str, pa.Schema | None]:
        """The shard tables: ``files`` (required) and the job's own, by name; a None schema
        takes its rows as they come."""
        raise NotImplementedError

    def identity(self) -> Any:
        """What the run's hash is taken of: a different one in ``out`` is refused."""
        return self.config

    def shard_config(self) -> Any:
        """The part of :meth:`identity` a committed file's rows depend on (None: all of it). A
        run that differs only outside it reuses the committed files and redoes
        :meth:`finalise`."""
        return None

    def execute(self, todo: list[dict[str, Any]]) -> None:
        """Run the pipeline on ``todo`` (listing rows) inside a Ray session, handing each
        finished file to :meth:`commit`."""
        raise NotImplementedError

    def unfinished(
        self, listing: dict[str, Any], error: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        """The ``files/`` row and table rows of an input the pipeline never finished: ``error``
        (kind ``lost``) over its listing row, and no table rows. A job that holds part of such a
        file's rows overrides this to keep them."""
        return {**listing, **error}, {}

    def finalise(self, seen: set[str]) -> dict[str, Any]:
        """Write the job's own tables from the committed shards, rows of the inputs in ``seen``
        only (``files/`` and ``errors/`` are written already). Returns counts for
        ``_run.json``."""
        return {}

    def record(self) -> dict[str, Any]:
        """Top-level entries the job adds to ``_run.json``."""
        return {}

    def result(self, summary: JobSummary) -> Any:
        """What :meth:`run` returns (the summary, unless the job returns more)."""
        return summary

    def previous_result(self, summary: JobSummary) -> Any:
        """What :meth:`run` returns when a finished run in ``out`` left nothing to do."""
        return self.result(summary)

    # -- services for the hooks -----------------------------------------------------------------

    def commit(
        self,
        file_id: str,
        row: dict[str, Any],
        tables: dict[str, list[dict[str, Any]]] | None = None,
    ) -> None:
        """A finished file: its ``files/`` row and its rows of the job's tables, committed
        together (in the next shard), counted in the progress line and by the error policy."""
        if file_id in self.done:  # nothing may be counted twice
            return
        self.done.add(file_id)
        failed = row.get("status") != "ok"
        if failed:
            row["error_kind"] = row.get("error_kind") or "error"
        self._store.add(file_id, {"files": [row], **(tables or {})})
        self._progress.update(1, 0.0 if failed else float(row.get("duration") or 0.0), int(failed))
        self.policy.record(failed, f"{row.get('path')}: {row.get('error')}")

    # -- the run --------------------------------------------------------------------------------

    @classmethod
    def table_locations(cls) -> dict[str, str]:
        """Every table the job writes: name -> location under ``out``."""
        return {"files": "files", "errors": "errors", **cls.result_tables}

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
        **options: Any,
    ) -> Any:
        """Run the job on ``inputs`` into ``out`` (each job module exports this as ``run_NAME``).

        Args:
            inputs: directories, globs, files or manifests.
            out: output folder, local or URL.
            config: the run's configuration (None: :attr:`config_class`'s defaults).
            address: Ray address; None starts (and stops) a local Ray.
            quiet: no progress line.
            num_cpus: CPUs of a local Ray started for this job.
            policy: when failures abort the job.
            overwrite: replace a previous run's outputs in ``out`` made with another config
                (otherwise refused); with the same config the run resumes.
            options: the job's own constructor options.

        Returns:
            :meth:`result`: the job's summary (``ok + errors == inputs``), or more.
        """
        job = cls(
            out,
            config if config is not None else cls.config_class(),
            policy=policy,
            quiet=quiet,
            overwrite=overwrite,
            **options,
        )
        return job.run(inputs, address=address, num_cpus=num_cpus)

    def run(
        self, inputs: list[str], *, address: str | None = None, num_cpus: int | None = None
    ) -> Any:
        """List ``inputs``, run what is left to do, write the tables and ``_run.json``.

        Args:
            inputs: directories, globs, files or manifests.
            address: Ray address; None starts (and stops) a local Ray.
            num_cpus: CPUs of a local Ray started for this job.
        """
        self.preflight()
        self.check()
        started_at, t0 = utc_now(), time.perf_counter()
        listing = list_corpus(inputs, getattr(self.config, "extensions", ()) or None)
        self.by_id = by_id = {row["file_id"]: row for row in listing}
        self._store = ShardStore(
            self.out,
            self.schemas(listing),
            getattr(self.config, "commit_files", self.commit_files),
            getattr(self.config, "commit_seconds", self.commit_seconds),
        )
        self.state: RunState = open_run(
            self.out,
            self.name,
            self.identity(),
            self._store,
            overwrite=self.overwrite,
            owned=("files", "errors", LOG_NAME, *self.outputs),
            shard_config=self.shard_config(),
            quiet=self.quiet,
        )
        if self.state.finished(by_id):
            return self.previous_result(self.state.previous_summary(len(listing), self.quiet))
        todo = self.state.start(listing, self.quiet, started_at)
        log_path = self._log_path()
        with console_to_log(log_path) as (terminal, moved):
            self._progress = Progress(self.name, len(todo), quiet=self.quiet, stream=terminal)
            try:
                if todo:
                    with RaySession(address=address, num_cpus=num_cpus, quiet=self.quiet):
                        self.execute(todo)
            except BaseException:
                self._progress.close()  # the message below starts a line of its own
                if moved:
                    print(
                        f"voxflow {self.name}: Ray's own messages are in {log_path}", file=terminal
                    )
                raise
            for row in todo:  # never silently lost
                if row["file_id"] not in self.done:
                    error = {**LOST, "error": "the pipeline returned no result for this file"}
                    self.commit(row["file_id"], *self.unfinished(row, error))
            self._progress.close()
        self.log = log_path if moved else None
        self._store.flush()
        summary, seen = self.state.rebuild_files(self._store, by_id)
        counts = self.finalise(seen)
        summary.wall_seconds = time.perf_counter() - t0
        record = summary.run_record(
            inputs,
            self.config,
            started_at,
            counts={**counts, "skipped_committed": self.state.skipped},
            **({"log": self.log} if self.log else {}),
            **self.record(),
        )
        self.state.complete(record)
        return self.result(summary)

    def _log_path(self) -> str | None:
        """Where the run's console messages go: ``OUT/_run.log`` for a local folder, a
        temporary file for a remote one; None with ``--verbose`` (debug logging), which leaves
        them on the terminal."""
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            return None
        if is_local(self.out):
            return os.path.join(normalize_uri(self.out), LOG_NAME)
        fd, path = tempfile.mkstemp(prefix=f"voxflow-{self.name}-", suffix=".log")
        os.close(fd)
        return path

    @property
    def store(self) -> ShardStore:
        """The run's shard store (what :meth:`finalise` reads)."""
        return self._store
