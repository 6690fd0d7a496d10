"""``voxflow report`` and ``voxflow inspect``: synthetic run folders for the tables and the escaping
(no Ray, no browser), then real diarize and clean runs on the sample whose pages are rendered in
headless Chromium (every image decoded, no script error, the sections there, a non-blank
screenshot)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import SAMPLE
from PIL import Image

from pipelines.cli import main
from pipelines.reports.run_report import MAX_TIMELINE_FILES, inspect_text, load_run, run_sections

HOSTILE = '<img src=x onerror="alert(1)">&$x^{.wav'
ESCAPE = "\x1b[31mred\x1b[0m.wav"


def write_run(root: Path, job: str, tables: dict[str, pd.DataFrame], **record) -> Path:
    """A run folder as the jobs write it: ``_run.json`` and Parquet tables (shard folders, or
    single files for names ending in ``.parquet``)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        target = root / name if name.endswith(".parquet") else root / name / "part-00000.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(target)
    counts = {"inputs": 3, "ok": 2, "errors": 1, "errors_by_kind": {"decode_error": 1}}
    base = {
        "job": job,
        "inputs": ["corpus/"],
        "config": {"a": {"b": 1}},
        "config_hash": "ab" * 32,
        "versions": {"python": "3.11"},
        "started_at": "2026-01-01T00:00:00+00:00",
        "ended_at": "2026-01-01T00:01:00+00:00",
        "wall_seconds": 60.0,
        "status": "complete",
        "counts": {**counts, "audio_seconds": 7200.0},
    }
    (root / "_run.json").write_text(json.dumps({**base, **record}))
    return root


def _errors(names: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": [f"/corpus/{n}" for n in names],
            "file_id": [f"e{i}" for i in range(len(names))],
            "rel_path": names,
            "stage": ["decode"] * len(names),
            "error_kind": ["decode_error"] * len(names),
            "error": [f"cannot decode <script>{n}</script>" for n in names],
        }
    )


def _files(names: list[str], durations: list[float], statuses: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": [f"/corpus/{n}" for n in names],
            "file_id": [f"f{i}" for i in range(len(names))],
            "rel_path": names,
            "duration": durations,
            "status": statuses,
        }
    )


@pytest.fixture
def diarized(tmp_path):
    names = ["a.flac", HOSTILE, ESCAPE]
    files = _files(names, [3600.0, 3600.0, 0.0], ["ok", "ok", "error"])
    segments = pd.DataFrame(
        {
            "file_id": ["f0", "f0", "f1"],
            "start": [0.0, 1800.0, 10.0],
            "end": [1800.0, 3600.0, 900.0],
            "speaker_global": ["G00000", "G00001", "G00001"],
            "overlap": [False, True, False],
        }
    )
    speakers = pd.DataFrame(
        {
            "speaker_global": ["G00000", "G00001"],
            "name": [None, "Ada $\\frac{"],
            "speech_seconds": [1800.0, 2690.0],
            "file_count": [1, 2],
        }
    )
    tables = {"files": files, "segments": segments, "speakers": speakers}
    return write_run(tmp_path / "diar", "diarize", {**tables, "errors": _errors([ESCAPE])})


@pytest.fixture
def cleaned(tmp_path):
    funnel = pd.DataFrame(
        {
            "stage": ["no_speech", "snr", "kept"],
            "clips": [4, 7, 30],
            "hours": [0.25, 0.125, 1.625],
        }
    )
    rng = np.random.default_rng(0)
    clips = pd.DataFrame(
        {
            "clip_id": [f"c{i}" for i in range(30)],
            "duration": rng.uniform(3, 20, 30),
            "snr_db": rng.uniform(10, 40, 30),
            "loudness_lufs": rng.uniform(-30, -20, 30),
        }
    )
    files = _files(["a.flac", "b.flac", HOSTILE], [3600.0, 3600.0, 0.0], ["ok", "ok", "error"])
    tables = {"funnel.parquet": funnel, "clips.parquet": clips, "files": files}
    return write_run(tmp_path / "clean", "clean", {**tables, "errors": _errors([HOSTILE])})


def test_inspect_prints_the_tables_numbers(diarized, cleaned):
    text = inspect_text(str(diarized))
    assert "G00001" in text and "Ada" in text
    assert f"{2690 / 3600:.4f}" in text and f"{1800 / 3600:.4f}" in text
    assert "2.000 h" in text and "120.0x real time" in text and "decode_error" in text
    assert "\x1b" not in text and "\\x1b[31mred" in text  # terminal escapes shown, not sent

    text = inspect_text(str(cleaned))
    funnel = text[text.index("Cleaning funnel") : text.index("Quality scores")]
    for stage, clips, hours, share in [
        ("dropped: no_speech", 4, "0.2500", "12.5 %"),
        ("dropped: snr", 7, "0.1250", "6.2 %"),
        ("kept", 30, "1.6250", "81.2 %"),
        ("in", 41, "2.0000", "100.0 %"),
    ]:
        assert re.search(rf"^{stage}\s+{clips}\s+{hours}\s+{share}$", funnel, re.M), funnel
    assert re.search(r"^snr_db\s+30\s", text, re.M)


def test_hostile_names_are_escaped_in_the_page(diarized, cleaned):
    for run in (diarized, cleaned):
        assert main(["report", str(run)]) == 0
        page = (run / "report.html").read_text()
        assert "<img src=x" not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
        assert "<script>" not in page.replace("<script>\nwindow.voxflowErrors", "", 1)
        assert page.count("<img ") == sum(
            s.plot is not None for s in run_sections(load_run(str(run)))
        )


def test_timeline_cap_is_said_on_the_page(tmp_path):
    n = MAX_TIMELINE_FILES + 5
    names = [f"f{i:03d}.wav" for i in range(n)]
    files = _files(names, [60.0] * n, ["ok"] * n)
    segments = pd.DataFrame(
        {"file_id": files["file_id"], "start": 0.0, "end": 30.0, "speaker_global": "G00000"}
    )
    speakers = pd.DataFrame(
        {
            "speaker_global": ["G00000"],
            "name": [None],
            "speech_seconds": [30.0 * n],
            "file_count": [n],
        }
    )
    run = write_run(
        tmp_path / "many", "diarize", {"files": files, "segments": segments, "speakers": speakers}
    )
    assert main(["report", str(run)]) == 0
    assert (
        f"showing the first {MAX_TIMELINE_FILES} of {n} files" in (run / "report.html").read_text()
    )


def test_other_jobs_get_summary_files_and_errors(tmp_path):
    run = write_run(
        tmp_path / "probe",
        "probe",
        {
            "files": _files(["a.wav", "b.wav"], [1.0, 0.0], ["ok", "error"]),
            "errors": _errors(["b.wav"]),
        },
    )
    titles = [s.title for s in run_sections(load_run(str(run)))]
    assert titles == ["Summary", "Files", "Errors", "Configuration and versions"]
    assert main(["report", str(run)]) == 0


def test_not_a_run_folder_is_a_usage_error(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "not a voxflow run folder (no _run.json)" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# Real runs, real browser
# ----------------------------------------------------------------------------------------------

CLEAN_CONFIG = """
steps: [quality]
clips: {min_seconds: 2.0, max_seconds: 12.0}
filters:
  duration: "duration between 3 and 12"
  snr: "snr_db >= 30"
"""


def chromium() -> str:
    """The Chromium binary; ``make test`` and ``.ci/run`` install it (``.ci/ensure-chromium``)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise AssertionError("no chromium on PATH: run `bash .ci/ensure-chromium` (make test does)")


def render(page: Path, screenshot: Path, profile: Path) -> str:
    """Load ``page`` in headless Chromium: save a screenshot and return the DOM after load."""
    base = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}"]
    url = page.resolve().as_uri()
    subprocess.run(
        [*base, "--hide-scrollbars", "--window-size=1280,2400", f"--screenshot={screenshot}", url],
        check=True,
        capture_output=True,
        timeout=120,
    )
    dom = subprocess.run(
        [*base, "--virtual-time-budget=10000", "--dump-dom", url],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return dom.stdout


def resource_links(page: str) -> list[str]:
    """Every ``src``/``href``/``action`` value of the page's real tags (not text that looks like
    one)."""

    class Links(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.links: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.links += [v or "" for k, v in attrs if k in ("src", "href", "action")]

    parser = Links()
    parser.feed(page)
    return parser.links


@pytest.fixture(scope="module")
def real_runs(ray_local, tmp_path_factory):
    from pipelines.engine.config import load_config
    from pipelines.jobs.clean import CleanRunConfig, run_clean
    from pipelines.jobs.diarize import run_diarize

    root = tmp_path_factory.mktemp("report_in")
    for name in ("conv01_clean_3spk.flac", "conv04_mp3_2spk.mp3"):
        shutil.copy(SAMPLE / "audio" / name, root / name)
    (root / HOSTILE).write_bytes(b"not audio at all")
    out = tmp_path_factory.mktemp("report_out")
    run_diarize([str(root)], str(out / "diarize"), quiet=True)
    config = root.parent / "clean.yaml"
    config.write_text(CLEAN_CONFIG)
    run_clean([str(root)], str(out / "clean"), load_config(CleanRunConfig, str(config)), quiet=True)
    return out


@pytest.mark.integration
@pytest.mark.parametrize(
    ("job", "headings"),
    [
        ("diarize", ["Summary", "Speaker timeline", "Hours per speaker", "Files", "Errors"]),
        ("clean", ["Summary", "Cleaning funnel", "Quality scores", "Files", "Errors"]),
    ],
)
def test_report_renders_in_chromium(real_runs, tmp_path, job, headings, capsys):
    run = real_runs / job
    assert main(["report", str(run)]) == 0
    page = run / "report.html"
    html = page.read_text()
    assert not re.search(r"https?://", html), "the page refers to the network"
    links = resource_links(html)
    assert links and all(link.startswith(("data:image/png;base64,", "#")) for link in links)
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html  # the hostile input, escaped

    dom = render(page, tmp_path / "page.png", tmp_path / "profile")
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert 'data-ready="ok"' in body, body
    images = re.search(r'data-images="(\d+)/(\d+)"', body)
    assert images.group(1) == images.group(2) == "2", body
    for heading in headings:
        assert f"<h2>{heading}</h2>" in dom

    shot = Image.open(tmp_path / "page.png").convert("RGB")
    assert shot.size == (1280, 2400)
    pixels = np.asarray(shot)
    ink = (pixels < 200).any(axis=2).mean()
    assert ink > 0.02, f"screenshot nearly blank ({ink:.1%} of pixels drawn)"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # plots, not just text

    # The self-check is not vacuous: the same page with one image corrupted reports it.
    broken = tmp_path / "broken.html"
    broken.write_text(html.replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAA", 1))
    body = re.search(r"<body([^>]*)>", render(broken, tmp_path / "b.png", tmp_path / "profile"))
    assert 'data-ready="failed"' in body.group(1) and 'data-images="1/2"' in body.group(1)

    assert main(["inspect", str(run)]) == 0
    text = capsys.readouterr().out
    if job == "diarize":
        for row in pd.read_parquet(run / "speakers").itertuples():
            assert re.search(
                rf"^{row.speaker_global}\s+{row.speech_seconds / 3600:.4f}\s", text, re.M
            )
    else:
        for row in pd.read_parquet(run / "funnel.parquet").itertuples():
            assert re.search(rf"\s{row.clips}\s+{row.hours:.4f}\s", text), text
    assert "decode_error" in text
