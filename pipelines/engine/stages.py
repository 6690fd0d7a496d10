"""The one adapter: any ``audio_ops`` operator -> a Ray Data stage with its declared resources.

An operator is a class whose constructor loads what it needs (a model, once per actor) and whose
``__call__(batch) -> batch`` maps a dict of numpy columns. It declares ``num_cpus``, ``num_gpus``,
``batch_size``, ``inputs`` and ``outputs``; a :class:`StageResources` from the run's config
overrides the scheduling part.

The adapter adds the guarantee every pipeline needs: a batch that raises is retried row by row,
and a row that still raises becomes an error row (``status="error"``, ``error_kind``, ``error``,
``error_stage``) instead of failing the job. Nothing is dropped.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np

from audio_ops.errors import error_kind
from pipelines.engine.config import ConfigError, StageResources

log = logging.getLogger(__name__)

ERROR_COLUMNS = ("status", "error_kind", "error", "error_stage")

#: Restarts of one actor after its process died (a lost node, an OOM kill, a crash). Ray Data's
#: default is unbounded: an operator whose constructor kills its process (a native crash or an
#: OOM kill while loading weights) was restarted forever here (16 constructor attempts in 40 s and
#: counting), and so is a batch that kills its process. Bounded, such a stage fails the job naming
#: the dead actor, while an actor that dies a few times (nodes lost, a crash once) is replaced and
#: its batches retried.
ACTOR_MAX_RESTARTS = 3


def resources_for(
    operator_cls: type, overrides: dict[str, StageResources], stage: str
) -> StageResources:
    """The resources of ``stage``: the operator's declared defaults, then the config's override.

    Args:
        operator_cls: the operator class (its ``num_cpus``/``num_gpus``/``batch_size``...).
        overrides: ``resources:`` section of the run config, by stage name.
        stage: the stage's name in that section.
    """
    if stage in overrides:
        return overrides[stage]
    declared = StageResources()
    for name in ("num_cpus", "num_gpus", "batch_size", "min_actors", "max_actors", "memory"):
        if hasattr(operator_cls, name):
            declared = replace(declared, **{name: getattr(operator_cls, name)})
    return declared


def threads_for(operator_cls: type, overrides: dict[str, StageResources], stage: str) -> int:
    """CPU threads an actor of ``stage`` runs its model with: the CPUs the stage reserves
    (declared or configured, before fitting to a small cluster), at least one."""
    return max(1, int(round(resources_for(operator_cls, overrides, stage).num_cpus)))


def _slice(batch: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    return {k: v[i : i + 1] for k, v in batch.items()}


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    keys: list[str] = []
    for part in parts:
        keys.extend(k for k in part if k not in keys)
    out = {}
    for key in keys:
        columns = []
        for part in parts:
            n = len(next(iter(part.values())))
            columns.append(part[key] if key in part else np.array([None] * n, dtype=object))
        try:
            out[key] = np.concatenate(columns)
        except (ValueError, TypeError):
            out[key] = np.concatenate([c.astype(object) for c in columns])
    return out


class StageStartError(RuntimeError):
    """An operator's constructor failed (a model that cannot load, a bad config): the stage
    cannot run at all, so the job stops instead of turning every row into an error row."""


class SafeOperator:
    """Wraps an operator so that one bad row never fails the batch or the job.

    Args:
        operator_cls: the operator class, constructed once (per actor) here.
        stage: stage name written into ``error_stage`` of error rows.
        kwargs: constructor arguments.
    """

    def __init__(self, operator_cls: type, stage: str, kwargs: dict[str, Any] | None = None):
        self.stage = stage
        try:
            self.operator = operator_cls(**(kwargs or {}))
        except Exception as exc:
            # Ray Data fails the job when an actor's constructor raises (no restart, no retry);
            # this line, last in the error the driver sees, names the stage and the cause.
            raise StageStartError(
                f"stage {stage!r}: {operator_cls.__name__} could not start: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _mark(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(next(iter(batch.values()))) if batch else 0
        if "status" not in batch:
            batch["status"] = np.array(["ok"] * n, dtype=object)
        for column in ("error_kind", "error", "error_stage"):
            if column not in batch:
                batch[column] = np.array([""] * n, dtype=object)
        failed = (batch["status"] == "error") & (batch["error_stage"] == "")
        if failed.any():
            batch["error_stage"] = np.where(failed, self.stage, batch["error_stage"]).astype(object)
        return batch

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Only rows with status "ok" are processed: rows an earlier stage failed ("error") or set
        # aside ("skip") pass through untouched. (No recursion through __call__: Ray Data runs a
        # callable class's __call__ on one thread and a nested call would wait on itself forever.)
        if "status" in batch and (batch["status"] != "ok").any():
            live = np.flatnonzero(batch["status"] == "ok")
            if live.size == 0:
                return batch
            rest = np.flatnonzero(batch["status"] != "ok")
            return _concat([self._process(_take(batch, live)), _take(batch, rest)])
        return self._process(batch)

    def _process(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(next(iter(batch.values()))) if batch else 0
        try:
            return self._mark(dict(self.operator(batch)))
        except Exception as exc:
            if n <= 1:
                return self._error_rows(batch, exc)
            log.warning("%s: batch of %d failed (%s); retrying row by row", self.stage, n, exc)
        parts = []
        for i in range(n):
            row = _slice(batch, i)
            try:
                parts.append(self._mark(dict(self.operator(row))))
            except Exception as exc:  # a failing row becomes an error row
                parts.append(self._error_rows(row, exc))
        return _concat(parts)

    def _error_rows(
        self, batch: dict[str, np.ndarray], exc: BaseException
    ) -> dict[str, np.ndarray]:
        n = len(next(iter(batch.values())))
        out = dict(batch)
        out["status"] = np.array(["error"] * n, dtype=object)
        out["error_kind"] = np.array([error_kind(exc)] * n, dtype=object)
        out["error"] = np.array([str(exc) or repr(exc)] * n, dtype=object)
        out["error_stage"] = np.array([self.stage] * n, dtype=object)
        return out


def _take(batch: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in batch.items()}


def _restart_limit(map_batches: Any) -> dict[str, Any]:
    """``max_restarts`` for an actor stage, where this Ray's ``map_batches`` still takes extra
    remote arguments (Ray 2.64 is to remove them; then Ray Data's own default applies)."""
    parameters = inspect.signature(map_batches).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return {"max_restarts": ACTOR_MAX_RESTARTS}
    return {}


def apply_operator(
    ds: Any,
    operator_cls: type,
    *,
    stage: str,
    kwargs: dict[str, Any] | None = None,
    resources: StageResources | None = None,
    use_actors: bool | None = None,
) -> Any:
    """Add ``operator_cls`` to a Ray Dataset as a stage.

    Operators that hold a model (``uses_model = True``) run in an actor pool sized
    ``[min_actors, max_actors]`` so the model loads once per actor; model-free ones run as tasks.

    Args:
        ds: the ``ray.data.Dataset``.
        operator_cls: the operator class.
        stage: the stage's name (for errors and resource overrides).
        kwargs: constructor arguments of the operator.
        resources: scheduling; the operator's declared defaults when None.
        use_actors: force actors (True) or tasks (False); default from ``uses_model``.
    """
    res = resources or resources_for(operator_cls, {}, stage)
    actors = getattr(operator_cls, "uses_model", False) if use_actors is None else use_actors
    options: dict[str, Any] = {
        "batch_size": res.batch_size,
        "num_cpus": res.num_cpus,
        "batch_format": "numpy",
        "zero_copy_batch": True,
    }
    if res.num_gpus:
        options["num_gpus"] = res.num_gpus
    if res.memory:
        options["memory"] = res.memory
    if actors:
        from ray.data import ActorPoolStrategy

        with warnings.catch_warnings():
            # max_restarts has no named parameter yet (Ray 2.60): it travels in the deprecated
            # **ray_remote_args, whose warning would print once per stage of every job.
            warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated", DeprecationWarning)
            return ds.map_batches(
                SafeOperator,
                fn_constructor_kwargs={
                    "operator_cls": operator_cls,
                    "stage": stage,
                    "kwargs": kwargs,
                },
                compute=ActorPoolStrategy(min_size=res.min_actors, max_size=res.max_actors),
                **_restart_limit(ds.map_batches),
                **options,
            )
    wrapper = _TaskOperator(operator_cls, stage, kwargs)
    return ds.map_batches(wrapper, **options)


class _TaskOperator:
    """A picklable task function that builds the operator lazily once per worker process."""

    def __init__(self, operator_cls: type, stage: str, kwargs: dict[str, Any] | None):
        self.operator_cls, self.stage, self.kwargs = operator_cls, stage, kwargs
        self._safe: SafeOperator | None = None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._safe is None:
            self._safe = SafeOperator(self.operator_cls, self.stage, self.kwargs)
        return self._safe(batch)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "operator_cls": self.operator_cls,
            "stage": self.stage,
            "kwargs": self.kwargs,
            "_safe": None,
        }


def fit_to_cluster(
    plans: dict[str, tuple[StageResources, bool]], total_cpus: float, reserve: float = 0.5
) -> dict[str, StageResources]:
    """Scale the CPU reservations of actor stages so that all of them, at their largest pool
    size, fit the cluster with ``reserve`` CPUs left for the task stages.

    An actor pool that cannot start its first actor stalls the whole pipeline, and pools that
    take every CPU starve the read and load tasks (seen on 2-core machines: five model stages at
    their declared 0.25-1 CPU each hang forever). CPUs here are scheduling tokens, so scaling them
    down on a small machine keeps every stage running; on a large cluster nothing changes.

    Args:
        plans: stage name -> (resources, runs as actors).
        total_cpus: CPUs of the cluster.
        reserve: CPUs kept free for task stages.
    """
    demand = sum(
        res.num_cpus * res.max_actors
        for res, actors in plans.values()
        if actors and not res.num_gpus
    )
    budget = max(total_cpus - reserve, 0.1)
    if demand <= budget:
        return {stage: res for stage, (res, _) in plans.items()}
    factor = budget / demand
    log.info("scaling actor CPU reservations by %.2f to fit %.1f CPUs", factor, total_cpus)
    out = {}
    for stage, (res, actors) in plans.items():
        if actors and not res.num_gpus:
            res = replace(res, num_cpus=max(round(res.num_cpus * factor, 3), 0.01))
        out[stage] = res
    return out


def declared_outputs(operator: type) -> tuple[str, ...] | None:
    """The columns an operator says it adds: ``outputs``, else the keys of ``columns`` (None when
    it declares neither)."""
    outputs = getattr(operator, "outputs", None)
    if outputs is None and isinstance(getattr(operator, "columns", None), dict):
        outputs = tuple(operator.columns)
    return None if outputs is None else tuple(outputs)


def check_columns(stages: Iterable[tuple[str, type]], given: Iterable[str]) -> set[str] | None:
    """Check a job's chain of operators before anything launches, as NeMo Curator's
    ``validate_input`` does: every operator's declared ``inputs`` must be among the columns
    ``given`` (the listing's) or declared as ``outputs`` by an earlier stage.

    Args:
        stages: (stage name, operator class) in the order they run.
        given: the columns of the rows the first stage receives.

    Returns:
        The columns after the last stage (None when a stage declares no outputs: from there on
        nothing is known, and nothing more is checked).

    Raises:
        ConfigError: a stage needs a column that nothing before it gives.
    """
    available = set(given)
    for name, operator in stages:
        missing = [c for c in getattr(operator, "inputs", ()) if c not in available]
        if missing:
            raise ConfigError(
                f"stage {name!r} ({operator.__name__}) needs column(s) {', '.join(missing)} that "
                f"no stage before it gives (available: {', '.join(sorted(available))})"
            )
        outputs = declared_outputs(operator)
        if outputs is None:
            return None
        available |= set(outputs)
    return available
