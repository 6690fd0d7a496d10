"""The terminal side of a run: the progress bar on a terminal and the plain line in logs; and the
driver's reader that keeps the driver's own work moving while a pipeline has nothing to give."""

from __future__ import annotations

import io
import threading
import time

import pytest

from pipelines.engine.runtime import Progress, iter_while_waiting


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_with_counts_rates_and_time_left():
    stream = Terminal()
    progress = Progress("diarize", 4, stream=stream)
    progress.update(1, 3600.0, 0)
    progress.update(2, 1800.0, 1)
    progress.close()
    text = stream.getvalue()
    last = text.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("diarize:  75%|")
    assert "3/4 files" in last and "1.50 h" in last and "x real time" in last
    assert "1 errors" in last and "<" in last  # elapsed<remaining
    assert text.endswith("\n")  # the bar's last state stays on the screen


def test_logs_get_a_plain_line_per_tenth_and_a_quiet_run_nothing():
    stream = io.StringIO()
    progress = Progress("vad", 20, stream=stream)
    for _ in range(20):
        progress.update(1, 10.0, 0)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11 and all(line.startswith("vad: ") for line in lines)  # first, each 10 %
    assert lines[-1].startswith("vad: 20/20 files, 0.06 h")
    assert "\r" not in stream.getvalue() and "|" not in stream.getvalue()

    silent = Terminal()
    quiet = Progress("vad", 3, quiet=True, stream=silent)
    quiet.update(3, 1.0, 0)
    quiet.close()
    assert silent.getvalue() == ""


def slow(items, pause):
    for item in items:
        time.sleep(pause)
        yield item


def test_the_driver_does_its_own_work_while_the_pipeline_is_busy():
    calls = []
    got = list(
        iter_while_waiting(slow([1, 2, 3], 0.2), idle=lambda: calls.append(1), interval=0.02)
    )
    assert got == [1, 2, 3]
    assert len(calls) >= 10  # about 0.6 s of waiting, called every 20 ms


def test_an_error_of_the_pipeline_reaches_the_driver():
    def broken():
        yield 1
        raise RuntimeError("block lost")

    seen = []
    with pytest.raises(RuntimeError, match="block lost"):
        for item in iter_while_waiting(broken(), idle=lambda: None):
            seen.append(item)
    assert seen == [1]


def test_a_driver_that_stops_early_leaves_no_reader_behind():
    before = threading.active_count()
    for item in iter_while_waiting(iter(range(1000)), idle=lambda: None):
        if item == 2:
            break
    deadline = time.monotonic() + 3
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before


def test_a_relative_out_folder_is_made_absolute_in_the_driver(tmp_path, monkeypatch):
    """Workers write outputs of their own (clean's clips, enhanced audio); on a cluster their
    working folder is not the user's, so a relative ``--out`` must not reach them as it is."""
    from pipelines.jobs.enhance import EnhanceJob

    monkeypatch.chdir(tmp_path)
    job = EnhanceJob("out/enhanced", EnhanceJob.config_class())
    assert job.out == str(tmp_path / "out" / "enhanced")
    remote = EnhanceJob("s3://bucket/enhanced", EnhanceJob.config_class())
    assert remote.out == "s3://bucket/enhanced"
