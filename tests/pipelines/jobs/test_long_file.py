"""A 3-hour file diarizes on a 2-CPU Ray whose object store is capped at 1 GB, with every worker
under 2 GB of RSS: audio travels in bounded chunks, never whole."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import psutil
import pytest
import soundfile as sf
from helpers import REPO, SAMPLE

from audio_ops.io import load_audio

pytestmark = pytest.mark.integration

HOURS = 3.0

CHILD = """
import json, sys
import ray
from pipelines.jobs.diarize import run_diarize
ray.init(address="local", num_cpus=2, object_store_memory=10**9, include_dashboard=False,
         logging_level="ERROR")
store = ray.cluster_resources()["object_store_memory"]
summary = run_diarize([sys.argv[1]], sys.argv[2], quiet=True)
print(json.dumps({"ok": summary.ok, "errors": summary.errors, "seconds": summary.audio_seconds,
                  "object_store_bytes": store}))
ray.shutdown()
"""


def _long_flac(path, hours: float) -> float:
    """The sample's conversations looped into one ``hours``-long 16 kHz FLAC, written in pieces."""
    clips = [load_audio(str(p), 16000)[0] for p in sorted((SAMPLE / "audio").glob("*.flac"))]
    target, written, i = int(hours * 3600 * 16000), 0, 0
    with sf.SoundFile(str(path), "w", 16000, 1, format="FLAC", subtype="PCM_16") as f:
        while written < target:
            clip = clips[i % len(clips)][: target - written]
            f.write(clip * np.float32(0.8 + 0.05 * (i % 5)))  # no two loops bit-identical
            written, i = written + len(clip), i + 1
    return written / 16000


def _peak_worker_rss(proc: subprocess.Popen, stop: threading.Event, peak: dict) -> None:
    root = psutil.Process(proc.pid)
    while not stop.is_set():
        try:
            children = root.children(recursive=True)
        except psutil.Error:
            break
        for child in children:
            try:
                if "ray::" in child.name() or "default_worker" in " ".join(child.cmdline()[:3]):
                    peak["worker"] = max(peak.get("worker", 0), child.memory_info().rss)
            except psutil.Error:
                continue
        time.sleep(0.2)


def test_three_hour_file_with_object_store_capped_at_1gb(tmp_path):
    flac = tmp_path / "long.flac"
    duration = _long_flac(flac, HOURS)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(flac), str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stop, peak = threading.Event(), {}
    sampler = threading.Thread(target=_peak_worker_rss, args=(proc, stop, peak), daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate(timeout=900)
    stop.set()
    sampler.join()
    assert proc.returncode == 0, stderr[-3000:]
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["object_store_bytes"] <= 10**9
    assert result["ok"] == 1 and result["errors"] == 0
    assert result["seconds"] == pytest.approx(duration, abs=0.1)
    segments = pd.read_parquet(out / "segments")
    assert segments["end"].max() > duration - 120  # turns to the very end: no chunk lost
    # Speech all along: every 10 minutes of the file holds turns.
    assert set((segments["start"] // 600).astype(int)) == set(range(int(duration // 600)))
    print(f"3 h file: peak worker RSS {peak['worker'] / 2**20:.0f} MiB, object store 1 GB")
    assert 0 < peak["worker"] < 2 * 2**30, peak
