"""voxflow from Python: every job as a function that runs it and returns its tables.

    from pipelines import api

    result = api.diarize(["examples/sample/audio"], max_speakers=4)
    result.summary.ok                  # files diarized
    result.table("segments")           # pandas: who spoke when, with speaker_global
    result.out                         # the run folder (resume, voxflow report, export)

Each function runs the same job as the command line, on the same lifecycle: a local Ray is
started for the call (and stopped after it) unless Ray is already initialised in the process or
``address`` names a cluster; the run folder resumes and refuses another config as the CLI's does.
Without ``out`` the run goes to a new temporary folder, which is left for the caller.

``config`` is a YAML file's path, a mapping shaped as the YAML, or the job's config object;
keyword ``overrides`` set single options with ``__`` for the YAML's nesting
(``vad__onset=0.6`` is ``vad.onset``). Bad keys and values raise
:class:`pipelines.engine.config.ConfigError` before anything runs.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any

from pipelines.engine.config import build_config
from pipelines.engine.runtime import ErrorPolicy
from pipelines.engine.sinks import is_local, join
from pipelines.engine.summary import JobSummary

__all__ = ["Result", "clean", "diarize", "probe", "run", "transcribe", "vad"]


@dataclass
class Result:
    """What a job run from Python gives back.

    Args:
        job: the job's name.
        out: its run folder (local path or URL).
        summary: the run's summary (``ok + errors == inputs``).
        extra: job-specific results (``funnel`` for ``clean``).
    """

    job: str
    out: str
    summary: JobSummary
    extra: dict[str, Any]

    @property
    def locations(self) -> dict[str, str]:
        """Every table the job writes: name -> location under :attr:`out` (the job declares
        them)."""
        return _job_class(self.job).table_locations()

    @property
    def table_names(self) -> tuple[str, ...]:
        """The tables this run wrote (``embeddings`` only when asked for)."""
        return tuple(n for n in self.locations if self._exists(self._location(n)))

    def table(self, name: str):
        """One table as a pandas DataFrame.

        Args:
            name: one of :attr:`table_names`.

        Raises:
            KeyError: the job writes no such table, or this run did not.
        """
        import pandas as pd

        if name not in self.locations:
            raise KeyError(f"voxflow {self.job} writes no table {name!r} ({tuple(self.locations)})")
        location = self._location(name)
        if not self._exists(location):
            raise KeyError(f"{location}: this run wrote no {name!r} table")
        return pd.read_parquet(location)

    def tables(self) -> dict[str, Any]:
        """Every table this run wrote, as pandas DataFrames by name."""
        return {name: self.table(name) for name in self.table_names}

    def _location(self, name: str) -> str:
        return join(self.out, self.locations[name])

    @staticmethod
    def _exists(location: str) -> bool:
        if is_local(location):
            return os.path.exists(location)
        import fsspec

        fs, path = fsspec.core.url_to_fs(location)
        return fs.exists(path)


def _job_class(job: str) -> type:
    import importlib

    classes = {
        "probe": "ProbeJob",
        "diarize": "DiarizeJob",
        "clean": "CleanJob",
        "transcribe": "TranscribeJob",
        "vad": "VadJob",
        "enhance": "EnhanceJob",
        "separate": "SeparateJob",
    }
    if job not in classes:
        raise ValueError(f"unknown job {job!r} (known: {', '.join(classes)})")
    return getattr(importlib.import_module(f"pipelines.jobs.{job}"), classes[job])


def run(
    job: str,
    inputs: str | list[str],
    out: str | os.PathLike | None = None,
    config: Any = None,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    quiet: bool = True,
    overwrite: bool = False,
    max_error_rate: float = 1.0,
    job_options: dict[str, Any] | None = None,
    **overrides: Any,
) -> Result:
    """Run any job (``probe``, ``diarize``, ``clean``, ``transcribe``, ``vad``, ``enhance``,
    ``separate``) and return its :class:`Result`.

    Args:
        job: the job's name, as in ``voxflow NAME``.
        inputs: directories, globs, files or manifests (local or URLs).
        out: the run folder; None: a new temporary folder.
        config: a YAML path, a mapping, or the job's config object; None: the defaults.
        address: a Ray cluster's address; None: a local Ray for this call (or the Ray already
            initialised in this process).
        num_cpus: CPUs of a local Ray started for this call.
        quiet: no progress line (the default here, unlike the CLI).
        overwrite: replace a previous run in ``out`` made with another config.
        max_error_rate: abort when more than this share of inputs fail (judged after 20).
        job_options: the job's own options (``speakers`` for ``diarize``).
        overrides: single options, ``__`` for nesting (``diarization__clustering__num_speakers=2``).
    """
    cls = _job_class(job)
    dotted = {key.replace("__", "."): value for key, value in overrides.items()}
    run_config = build_config(cls.config_class, config, dotted)
    folder = os.fspath(out) if out is not None else tempfile.mkdtemp(prefix=f"voxflow-{job}-")
    launch = {
        "address": address,
        "quiet": quiet,
        "num_cpus": num_cpus,
        "policy": ErrorPolicy(max_error_rate=max_error_rate),
        "overwrite": overwrite,
    }
    if job == "clean":
        diarize_for_clean(inputs, folder, run_config, **launch)
    returned = cls.launch(
        [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs),
        folder,
        run_config,
        **launch,
        **(job_options or {}),
    )
    summary, extra = (
        (returned[0], {"funnel": returned[1]}) if isinstance(returned, tuple) else (returned, {})
    )
    return Result(job, folder, summary, extra)


def diarize_for_clean(inputs, out: str, config: Any, **launch: Any) -> None:
    """``clean`` with ``speaker_ids: diarize``: run ``voxflow diarize`` (its defaults) on the
    same inputs into ``OUT/diarization`` first, a resumable run of its own; the clean run reads
    its ``segments/`` in its speaker step and its final step. Nothing to do for other configs.

    Args:
        inputs: the clean run's inputs.
        out: the clean run's folder.
        config: the clean run's :class:`pipelines.jobs.clean.CleanRunConfig`.
        launch: :meth:`pipelines.engine.lifecycle.Job.launch`'s options (address, quiet...).
    """
    if getattr(config, "speaker_ids", None) != "diarize":
        return
    from pipelines.engine.sinks import join

    _job_class("diarize").launch(
        [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs),
        join(os.fspath(out), "diarization"),
        None,
        **launch,
    )


def probe(inputs, out=None, config=None, **options: Any) -> Result:
    """``voxflow probe``: one row per file (format, duration, levels, loudness, errors). See
    :func:`run` for the arguments."""
    return run("probe", inputs, out, config, **options)


def diarize(
    inputs,
    out=None,
    config=None,
    *,
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    speakers: str | None = None,
    **options: Any,
) -> Result:
    """``voxflow diarize``: who spoke when in every file, one speaker id across the corpus.

    Args:
        num_speakers: exact speakers per file.
        min_speakers: at least this many per file.
        max_speakers: at most this many per file.
        speakers: a table of known speakers (name + embedding, or name + reference audio).
        options: as :func:`run` (``out``, ``config``, ``num_cpus``, overrides...).
    """
    counts = {
        "diarization__clustering__num_speakers": num_speakers,
        "diarization__clustering__min_speakers": min_speakers,
        "diarization__clustering__max_speakers": max_speakers,
    }
    return run(
        "diarize",
        inputs,
        out,
        config,
        job_options={"speakers": speakers},
        **counts,
        **options,
    )


def clean(inputs, out=None, config=None, **options: Any) -> Result:
    """``voxflow clean``: a training set of clips, every dropped second with its reason
    (``result.extra["funnel"]``). See :func:`run` for the arguments."""
    return run("clean", inputs, out, config, **options)


def transcribe(inputs, out=None, config=None, **options: Any) -> Result:
    """``voxflow transcribe``: files cut at pauses and transcribed. See :func:`run`."""
    return run("transcribe", inputs, out, config, **options)


def vad(inputs, out=None, config=None, **options: Any) -> Result:
    """``voxflow vad``: speech regions of every file. See :func:`run`."""
    return run("vad", inputs, out, config, **options)
