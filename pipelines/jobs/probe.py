"""``voxflow probe``: the corpus inventory job.

list -> Ray Dataset of paths -> ProbeOperator tasks (0.5 CPU each, streaming decode) -> driver
sink. Only paths flow into the cluster and one small row per file flows back, so memory stays
bounded by a block of audio per task whatever the corpus or file size.
"""

from __future__ import annotations

import time
from collections import Counter

from audio_ops.probe import ProbeOperator
from pipelines.engine.config import ProbeRunConfig
from pipelines.engine.runtime import ErrorPolicy, Progress, RaySession
from pipelines.engine.sinks import TableSink, join, utc_now, write_run_json
from pipelines.engine.sources import list_corpus
from pipelines.engine.stages import apply_operator, resources_for
from pipelines.engine.summary import ERRORS_SCHEMA, JobSummary, error_record, files_schema


def run_probe(
    inputs: list[str],
    out: str,
    config: ProbeRunConfig | None = None,
    *,
    address: str | None = None,
    quiet: bool = False,
    num_cpus: int | None = None,
    policy: ErrorPolicy | None = None,
) -> JobSummary:
    """Inventory a corpus: one row per input file in ``out/files``, failures in ``out/errors``.

    Args:
        inputs: directories, globs, files or manifests (see :func:`pipelines.engine.sources.list_corpus`).
        out: output folder, local or URL.
        config: the run's configuration; defaults when None.
        address: Ray address; None starts (and stops) a local Ray.
        quiet: no progress line.
        num_cpus: CPUs of a local Ray started for this job (None: all cores).

    Returns:
        The job's summary; ``ok + errors == inputs`` always.
    """
    config = config or ProbeRunConfig()
    policy = policy or ErrorPolicy()
    started_at, t0 = utc_now(), time.perf_counter()
    listing = list_corpus(inputs, config.extensions or None)
    summary = JobSummary(job="probe", out=out, inputs=len(listing))
    files = TableSink(join(out, "files"), files_schema(listing))
    errors = TableSink(join(out, "errors"), ERRORS_SCHEMA)
    kinds: Counter[str] = Counter()
    progress = Progress("probe", len(listing), quiet=quiet)
    if listing:
        with RaySession(address=address, num_cpus=num_cpus, quiet=quiet):
            import ray.data

            ds = ray.data.from_items(listing, override_num_blocks=min(len(listing), 200))
            ds = apply_operator(
                ds,
                ProbeOperator,
                stage="probe",
                kwargs={"config": config.probe},
                resources=resources_for(ProbeOperator, config.resources, "probe"),
            )
            for batch in ds.iter_batches(batch_size=64, batch_format="pyarrow"):
                rows = batch.to_pylist()
                files.add(rows)
                failed = [r for r in rows if r.get("status") != "ok"]
                errors.add(error_record(r) for r in failed)
                kinds.update(r.get("error_kind") or "error" for r in failed)
                seconds = sum(
                    float(r.get("duration") or 0.0) for r in rows if r.get("status") == "ok"
                )
                summary.ok += len(rows) - len(failed)
                summary.errors += len(failed)
                summary.audio_seconds += seconds
                progress.update(len(rows), seconds, len(failed))
                for r in rows:
                    policy.record(r.get("status") != "ok", f"{r.get('path')}: {r.get('error')}")
    files.close()
    errors.close()
    progress.close()
    summary.errors_by_kind = dict(kinds)
    summary.wall_seconds = time.perf_counter() - t0
    write_run_json(
        out,
        summary.run_record(
            inputs, config, started_at, tables={"files": files.shards, "errors": errors.shards}
        ),
    )
    return summary
