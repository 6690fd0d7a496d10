"""Reading a run's tables back: RTTM export and evaluation against references."""

from __future__ import annotations

import json
import os
import posixpath
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.reports.evaluate import (
    Report,
    RttmTurn,
    evaluate,
    read_rttm_dir,
    report_dict,
    rttm_line,
)


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


def _clips(run: str) -> pd.DataFrame:
    path = os.path.join(run, "clips.parquet")
    if "://" not in run and not os.path.exists(path):
        raise FileNotFoundError(f"{run} has no clips.parquet: is it a voxflow clean output folder?")
    return pd.read_parquet(path)


def _words(row: Any) -> list[dict[str, Any]]:
    """A kept clip's word timings (clip time), or none when the run did not ask for them."""
    words = getattr(row, "words", None)
    return [dict(w) for w in words] if words is not None else []


def _audio_location(run: str, audio_path: str) -> str:
    return (
        os.path.join(os.path.abspath(run), audio_path)
        if "://" not in run
        else f"{run.rstrip('/')}/{audio_path}"
    )


def export_nemo(run: str, target: str | None = None) -> str:
    """A NeMo manifest (JSON lines: ``audio_filepath``, ``duration``, ``text``, ``lang``...) of a
    clean run's kept clips; returns its path (default ``DIR/nemo_manifest.jsonl``)."""
    clips = _clips(run)
    target = target or os.path.join(run, "nemo_manifest.jsonl")
    with open(target + ".tmp", "w", encoding="utf-8") as f:
        for row in clips.itertuples(index=False):
            record = {
                "audio_filepath": _audio_location(run, row.audio_path),
                "duration": round(float(row.duration), 3),
                "text": getattr(row, "text", "") or "",
                "offset": 0.0,
            }
            if isinstance(getattr(row, "language", None), str):
                record["lang"] = row.language
            record["source"] = row.path
            record["source_offset"] = round(float(row.start), 3)
            speaker = getattr(row, "speaker_global", None)
            if isinstance(speaker, str):  # clean's speaker_ids: the corpus-wide speaker
                record["speaker"] = speaker
            words = _words(row)
            if words:  # an extra key: NeMo's ASR datasets read only the ones they know
                record["words"] = [
                    {"word": w["word"], "start": w["start"], "end": w["end"]} for w in words
                ]
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(target + ".tmp", target)
    return target


def export_lhotse(run: str, directory: str | None = None) -> dict[str, str]:
    """Lhotse manifests of a clean run's kept clips: ``recordings.jsonl``, ``supervisions.jsonl``
    and ``cuts.jsonl`` (MonoCut), in ``directory`` (default ``DIR/lhotse``)."""
    import soundfile as sf

    clips = _clips(run)
    directory = directory or os.path.join(run, "lhotse")
    Path(directory).mkdir(parents=True, exist_ok=True)
    paths = {
        name: os.path.join(directory, f"{name}.jsonl")
        for name in ("recordings", "supervisions", "cuts")
    }
    handles = {name: open(path + ".tmp", "w", encoding="utf-8") for name, path in paths.items()}
    try:
        for row in clips.itertuples(index=False):
            location = _audio_location(run, row.audio_path)
            info = sf.info(location) if "://" not in location else None
            rate = int(info.samplerate) if info else int(row.sample_rate)
            frames = int(info.frames) if info else int(round(float(row.duration) * rate))
            recording = {
                "id": row.clip_id,
                "sources": [{"type": "file", "channels": [0], "source": location}],
                "sampling_rate": rate,
                "num_samples": frames,
                "duration": frames / rate,
                "channel_ids": [0],
            }
            supervision = {
                "id": row.clip_id,
                "recording_id": row.clip_id,
                "start": 0.0,
                "duration": frames / rate,
                "channel": 0,
                "text": getattr(row, "text", None),
                "language": getattr(row, "language", None),
                "custom": {"source": row.path, "source_start": float(row.start)},
            }
            speaker = getattr(row, "speaker_global", None)
            if isinstance(speaker, str):  # clean's speaker_ids: the corpus-wide speaker
                supervision["speaker"] = speaker
            words = _words(row)
            if words:  # Lhotse AlignmentItem lists: symbol, start, duration, score
                supervision["alignment"] = {
                    "word": [
                        [
                            w["word"],
                            w["start"],
                            round(w["end"] - w["start"], 3),
                            round(float(w["probability"]), 4),
                        ]
                        for w in words
                    ]
                }
            cut = {
                "id": row.clip_id,
                "start": 0.0,
                "duration": frames / rate,
                "channel": 0,
                "supervisions": [supervision],
                "recording": recording,
                "type": "MonoCut",
            }
            handles["recordings"].write(json.dumps(recording, ensure_ascii=False) + "\n")
            handles["supervisions"].write(json.dumps(supervision, ensure_ascii=False) + "\n")
            handles["cuts"].write(json.dumps(cut, ensure_ascii=False) + "\n")
    finally:
        for handle in handles.values():
            handle.close()
    for path in paths.values():
        os.replace(path + ".tmp", path)
    return paths
