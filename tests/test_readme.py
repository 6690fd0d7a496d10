"""The README's "Use it" section, run as a user would run it: every shell command in it, in
order, from a fresh folder that holds the repository's examples (and a ``separation.yaml`` naming
local weights, as the README asks of an offline user), then its Python. What the commands'
comments promise (``# out/...`` paths) must exist afterwards."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, write_tiny_hdemucs

README = REPO / "README.md"


def usage_section() -> str:
    text = README.read_text()
    return text[text.index("\n## Use it\n") : text.index("\n## Output tables\n")]


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", usage_section(), flags=re.S)


def commands() -> list[str]:
    """Every shell command of the usage section, one per line, in order."""
    lines = [line.strip() for block in blocks("bash") for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def expand(pattern: str) -> list[str]:
    """``out/lhotse/{a,b}.jsonl`` -> both names; ``<stem>`` -> ``*``."""
    pattern = re.sub(r"<[^>]+>", "*", pattern)
    parts = re.split(r"\{([^}]*)\}", pattern)
    fixed, choices = parts[0::2], [p.split(",") for p in parts[1::2]]
    out = []
    for pick in itertools.product(*choices):
        out.append("".join(f + c for f, c in itertools.zip_longest(fixed, pick, fillvalue="")))
    return out


def promised(command: str) -> list[str]:
    """The ``out/...`` paths a command's trailing comment says it writes."""
    if "#" not in command:
        return []
    comment = command.split("#", 1)[1]
    return [
        path
        for token in re.findall(r"out/[\w./<>{},*-]+", comment)
        for path in expand(token.rstrip(".,;"))
    ]


def test_the_usage_section_covers_every_job_and_promises_outputs():
    """The parse itself: a README edit that hides the commands from the test fails here."""
    cmds = commands()
    jobs = {c.split()[1] for c in cmds if c.startswith("voxflow ") and len(c.split()) > 1}
    assert {"probe", "diarize", "clean", "enhance", "separate", "vad", "transcribe"} <= jobs
    assert {"export", "eval", "report", "inspect", "doctor"} <= jobs
    assert cmds[0] == ". .venv/bin/activate"
    paths = [p for c in cmds for p in promised(c)]
    assert "out/clean/lhotse/cuts.jsonl" in paths and "out/sep/audio/*.vocals.flac" in paths
    assert len(blocks("python")) == 2


def test_the_operator_call_in_the_readme_is_the_examples():
    """The README's ``map_batches`` line is the one ``examples/ray_data_operators.py`` runs (a
    test runs that script), so it cannot drift from working code."""
    fragment = next(b for b in blocks("python") if "map_batches" in b)
    example = (REPO / "examples" / "ray_data_operators.py").read_text()
    squash = lambda text: re.sub(r"\s+", "", re.sub(r"#[^\n]*", "", text))  # noqa: E731
    assert squash(fragment) in squash(example)


@pytest.mark.integration
def test_every_usage_command_runs_on_the_bundled_files(ray_local, tmp_path):
    work = tmp_path / "user"
    work.mkdir()
    (work / "examples").symlink_to(REPO / "examples")
    (work / ".venv").symlink_to(Path(sys.prefix))  # the environment running the tests
    config = write_tiny_hdemucs(tmp_path / "weights")
    (work / "separation.yaml").write_text(config.read_text())
    env = {
        **os.environ,
        "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address,  # no Ray start per command
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    script = ["set -eo pipefail"]
    for command in commands():
        script += [f"echo {command!r} >&2", command]
    shell = subprocess.run(
        ["bash", "-c", "\n".join(script)], cwd=work, env=env, capture_output=True, text=True
    )
    assert shell.returncode == 0, shell.stderr[-4000:] + shell.stdout[-2000:]
    for command in commands():
        for path in promised(command):
            assert list(work.glob(path)), f"{command!r} promised {path}"
    assert "DER" in shell.stdout  # eval printed its table
    python = next(b for b in blocks("python") if "from pipelines import api" in b)
    run = subprocess.run(
        [str(work / ".venv" / "bin" / "python"), "-c", python],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert (work / "out" / "speech" / "segments").is_dir()
