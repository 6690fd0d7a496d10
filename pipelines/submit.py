"""``voxflow submit`` and ``voxflow jobs``: run voxflow jobs on a Ray cluster through the Jobs API.

The job's runtime environment carries voxflow's own code (``audio_ops`` and ``pipelines`` as
``py_modules``, so the cluster runs exactly the submitter's version), the run's config file if one
is named, and optionally extra pip packages. Secrets never travel in it: credentials come from
the cluster nodes' environment, and the Ray token from ``RAY_AUTH_TOKEN_PATH`` / ``RAY_AUTH_TOKEN``
on the submitting machine.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

#: Environment variables a job may carry to the cluster (settings, never secrets).
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "VOXFLOW_CACHE")


def _client(address: str):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)


def build_runtime_env(
    args: list[str], workdir: Path, pip: list[str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The runtime_env of a job and its argument list with a local ``--config`` file replaced by
    its copy inside the job's working directory."""
    import audio_ops
    import pipelines

    args = list(args)
    if "--config" in args:
        i = args.index("--config")
        if i + 1 >= len(args):
            raise ValueError("--config needs a file")
        source = args[i + 1]
        if "://" not in source:
            if not os.path.isfile(source):
                raise FileNotFoundError(f"config file not found: {source}")
            shutil.copy(source, workdir / "voxflow_run.yaml")
            args[i + 1] = "voxflow_run.yaml"
    env: dict[str, Any] = {
        "working_dir": str(workdir),
        "py_modules": [os.path.dirname(audio_ops.__file__), os.path.dirname(pipelines.__file__)],
        "env_vars": {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ},
    }
    if pip:
        env["pip"] = list(pip)
    return env, args


def submit(
    address: str,
    args: list[str],
    *,
    wait: bool = False,
    pip: list[str] | None = None,
    timeout: float = 3600.0,
) -> tuple[str, str]:
    """Submit ``voxflow ARGS...`` as a Ray job; returns ``(job_id, final status or current one)``.

    Args:
        address: the cluster's dashboard address (``http://127.0.0.1:8265`` through
            ``ray dashboard cluster.yaml``).
        args: the voxflow command line to run there (``diarize s3://... --out s3://...``).
        wait: follow the job until it ends, printing its logs.
        pip: extra pip requirements installed for the job.
        timeout: seconds to wait with ``wait``.
    """
    if not args:
        raise ValueError(
            "nothing to run: give the voxflow command after --, e.g. -- diarize s3://b/in --out s3://b/out"
        )
    workdir = Path(tempfile.mkdtemp(prefix="voxflow-job-"))
    try:
        runtime_env, job_args = build_runtime_env(args, workdir, pip)
        client = _client(address)
        entrypoint = "python -m pipelines.cli " + " ".join(shlex.quote(a) for a in job_args)
        job_id = _submit_with_retry(
            client, entrypoint, runtime_env, {"voxflow": " ".join(args)[:500]}
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if not wait:
        return job_id, str(client.get_job_status(job_id))
    return job_id, follow(address, job_id, timeout=timeout)


def _submit_with_retry(
    client,
    entrypoint: str,
    runtime_env: dict[str, Any],
    metadata: dict[str, str],
    patience: float = 90.0,
) -> str:
    """Submit, retrying while a just-started cluster has no job agent ready yet."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return client.submit_job(
                entrypoint=entrypoint, runtime_env=runtime_env, metadata=metadata
            )
        except RuntimeError as exc:
            if "try again later" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(2.0)


def follow(address: str, job_id: str, timeout: float = 3600.0, stream=None) -> str:
    """Print a job's new log lines until it ends; returns its final status."""
    from ray.job_submission import JobStatus

    client = _client(address)
    stream = stream or sys.stdout
    printed = 0
    deadline = time.monotonic() + timeout
    while True:
        status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        if len(logs) > printed:
            stream.write(logs[printed:])
            stream.flush()
            printed = len(logs)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return str(status)
        if time.monotonic() > deadline:
            return str(status)
        time.sleep(1.0)


def job_status(address: str, job_id: str) -> str:
    """A job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)."""
    return str(_client(address).get_job_status(job_id))


def job_logs(address: str, job_id: str) -> str:
    """A job's logs so far."""
    return _client(address).get_job_logs(job_id)


def stop_job(address: str, job_id: str) -> bool:
    """Ask a job to stop; True when the request was accepted."""
    return bool(_client(address).stop_job(job_id))
