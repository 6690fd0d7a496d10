"""Reading a run's tables back: RTTM export and evaluation against references."""

from __future__ import annotations

import json
import os
import posixpath
from collections import defaultdict
from pathlib import Path

import pandas as pd

from pipelines.evaluate import Report, RttmTurn, evaluate, read_rttm_dir, report_dict, rttm_line


def _stem(path: str) -> str:
    name = posixpath.basename(str(path).rstrip("/"))
    return name.rsplit(".", 1)[0] if "." in name else name


def read_table(run: str, table: str) -> pd.DataFrame:
    """One table (``files``, ``segments``, ``speakers``...) of a run folder."""
    path = os.path.join(run, table)
    if "://" not in run and not os.path.isdir(path):
        raise FileNotFoundError(
            f"{run} has no {table}/ table: is it a voxflow diarize output folder?"
        )
    return pd.read_parquet(path)


def run_turns(run: str, use_global: bool = False) -> dict[str, list[RttmTurn]]:
    """Turns of a diarize run by file stem; labels are local, or global ids / enrolled names."""
    segments = read_table(run, "segments")
    files = read_table(run, "files")
    names: dict[str, str] = {}
    if use_global:
        speakers = read_table(run, "speakers")
        names = {
            g: n
            for g, n in zip(speakers["speaker_global"], speakers["name"], strict=True)
            if isinstance(n, str) and n
        }
    out: dict[str, list[RttmTurn]] = {
        _stem(p): [] for p, s in zip(files["path"], files["status"], strict=True) if s == "ok"
    }
    for row in segments.sort_values(["path", "start"]).itertuples(index=False):
        stem = _stem(row.path)
        label = row.speaker
        if use_global:
            label = names.get(row.speaker_global, row.speaker_global)
        out.setdefault(stem, []).append(
            RttmTurn(stem, float(row.start), float(row.end - row.start), str(label))
        )
    return out


def export_rttm(run: str, directory: str, use_global: bool = False) -> list[str]:
    """Write ``<stem>.rttm`` per ok input of a diarize run; returns the paths.

    Two inputs with the same stem (``a/x.wav`` and ``b/x.flac``) would overwrite each other, so
    that is refused.
    """
    files = read_table(run, "files")
    stems = [_stem(p) for p in files.loc[files["status"] == "ok", "path"]]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise ValueError(
            f"inputs share the file stem(s) {clashes[:5]}: RTTM files would overwrite each other"
        )
    Path(directory).mkdir(parents=True, exist_ok=True)
    written = []
    for stem, turns in run_turns(run, use_global).items():
        path = os.path.join(directory, f"{stem}.rttm")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            for t in turns:
                f.write(rttm_line(stem, t.start, t.duration, t.speaker))
        os.replace(path + ".tmp", path)
        written.append(path)
    return written


def evaluate_run(ref_dir: str, hyp: str, json_path: str | None = None) -> Report:
    """Score a diarize run (or a folder of RTTM files) against reference RTTM files."""
    reference = read_rttm_dir(ref_dir)
    global_ids = None
    if os.path.isdir(os.path.join(hyp, "segments")):
        hypothesis = run_turns(hyp)
        segments = read_table(hyp, "segments")
        global_ids = defaultdict(dict)
        for path, local, glob in zip(
            segments["path"], segments["speaker"], segments["speaker_global"], strict=True
        ):
            global_ids[_stem(path)][local] = glob
    else:
        hypothesis = read_rttm_dir(hyp)
    missing = sorted(set(reference) - set(hypothesis))
    report = evaluate(reference, hypothesis, dict(global_ids) if global_ids is not None else None)
    if missing:
        print(
            f"note: {len(missing)} reference file(s) have no hypothesis and count as missed: {missing[:5]}"
        )
    if json_path:
        Path(json_path).write_text(json.dumps(report_dict(report), indent=2))
    return report
