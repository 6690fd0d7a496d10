"""The house rules of the packages, read from the source with ``ast`` (no imports run).

``pipelines/`` has three layers over ``audio_ops/``: ``engine`` (the job lifecycle, resume,
sinks, sources, the Ray stage adapter, runtime, the run summary), ``jobs`` (one module per
``voxflow`` job) and ``reports`` (reports, inspection, evaluation); ``cli`` and ``submit`` sit on
top. A module may import its own layer and the layers below it, and no job imports another job.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Layers from the bottom up; a module may import from its own layer or one below.
LAYERS = ["audio_ops", "pipelines.engine", "pipelines.jobs", "pipelines.reports", "pipelines"]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of the longest prefix that names ``module``'s layer."""
    best = -1
    for i, name in enumerate(LAYERS):
        if (module == name or module.startswith(name + ".")) and (
            best < 0 or len(name) > len(LAYERS[best])
        ):
            best = i
    return best


def imports_of(path: Path) -> set[str]:
    """Every ``audio_ops``/``pipelines`` module a file imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in ("audio_ops", "pipelines")}


def package_modules() -> dict[str, Path]:
    files = list((ROOT / "audio_ops").rglob("*.py")) + list((ROOT / "pipelines").rglob("*.py"))
    return {module_name(p): p for p in files}


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module an imported name belongs to (``pkg.mod.Class`` -> ``pkg.mod``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def edges() -> set[tuple[str, str]]:
    modules = package_modules()
    out = set()
    for name, path in modules.items():
        for imported in imports_of(path):
            target = resolve(imported, modules)
            if (
                target
                and target != name
                and not name.startswith(target + ".")
                and target
                not in (
                    "audio_ops",
                    "pipelines",
                    "pipelines.engine",
                    "pipelines.jobs",
                    "pipelines.reports",
                )
            ):
                out.add((name, target))
    return out


def test_every_module_has_a_layer():
    assert all(layer_of(m) >= 0 for m in package_modules())


def test_nothing_imports_upward():
    upward = sorted((a, b) for a, b in edges() if layer_of(b) > layer_of(a))
    assert upward == []


def test_no_job_imports_another_job():
    jobs = [
        (a, b)
        for a, b in edges()
        if a.startswith("pipelines.jobs.") and b.startswith("pipelines.jobs.")
    ]
    assert sorted(jobs) == []


def test_no_job_or_operator_uses_the_evaluation_helpers():
    """SI-SDR, mixing at an SNR, synthetic noise and WER score voxflow in tests and benchmarks;
    the pipelines never run them."""
    users = sorted(a for a, b in edges() if b == "audio_ops.evaluation")
    assert users == []


def test_the_checker_sees_the_import_forms_it_must():
    """The rules above are only as good as the edge finder: it must see plain, from- and
    function-level imports, or the tests above pass on code that breaks the rules."""
    found = edges()
    # diarize imports the engine at module level and the evaluation scorer inside functions
    assert ("pipelines.jobs.diarize", "pipelines.engine.lifecycle") in found
    assert ("pipelines.cli", "pipelines.jobs.diarize") in found  # inside a function
    assert layer_of("pipelines.jobs.diarize") > layer_of("pipelines.engine.resume")
    assert layer_of("audio_ops.vad") < layer_of("pipelines.engine.sinks")
