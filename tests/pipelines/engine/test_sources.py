"""Corpus listing: directories, globs, manifests, missing files, loops, ids."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers import make_hostile_corpus, tone, write_audio

from audio_ops.io import file_id_for
from pipelines.engine.sources import SourceError, list_corpus


def _corpus(root):
    for rel in ("a.wav", "sub/b.flac", "sub/deeper/c.mp3", "notes.txt", "sub/d.WAV"):
        path = root / rel
        if rel.endswith(".txt"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("not audio")
        else:
            write_audio(
                path.with_suffix(path.suffix.lower()) if rel.endswith("WAV") else path,
                tone(0.2, 16000),
                16000,
            )
            if rel.endswith("WAV"):
                path.with_suffix(".wav").rename(path)
    return root


def test_directory_is_listed_recursively_by_extension(tmp_path):
    rows = list_corpus([str(_corpus(tmp_path))])
    assert sorted(r["rel_path"] for r in rows) == [
        "a.wav",
        "sub/b.flac",
        "sub/d.WAV",
        "sub/deeper/c.mp3",
    ]
    for row in rows:
        assert row["file_id"] == file_id_for(row["path"])
        assert row["source"] == str(tmp_path)


def test_listing_is_deterministic_and_deduplicated(tmp_path):
    _corpus(tmp_path)
    once = list_corpus([str(tmp_path)])
    twice = list_corpus([str(tmp_path), str(tmp_path / "a.wav"), f"file://{tmp_path}/sub"])
    assert [r["file_id"] for r in once] == [r["file_id"] for r in list_corpus([str(tmp_path)])]
    assert sorted(r["file_id"] for r in twice) == sorted(r["file_id"] for r in once)


def test_glob_and_extension_filter(tmp_path):
    _corpus(tmp_path)
    rows = list_corpus([f"{tmp_path}/**/*.flac"])
    assert [r["rel_path"] for r in rows] == ["sub/b.flac"]
    rows = list_corpus([str(tmp_path)], extensions=["mp3"])
    assert [r["rel_path"] for r in rows] == ["sub/deeper/c.mp3"]


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_manifest_carries_columns_and_keeps_missing_files(tmp_path, kind):
    _corpus(tmp_path)
    frame = pd.DataFrame(
        {
            "path": ["a.wav", str(tmp_path / "sub" / "b.flac"), "gone.wav"],
            "speaker": ["s1", "s2", "s3"],
            "split": ["train", "dev", "test"],
        }
    )
    manifest = tmp_path / f"manifest.{kind}"
    if kind == "csv":
        frame.to_csv(manifest, index=False)
    elif kind == "jsonl":
        manifest.write_text("\n".join(json.dumps(r) for r in frame.to_dict(orient="records")))
    else:
        frame.to_parquet(manifest)
    rows = list_corpus([str(manifest)])
    assert [r["speaker"] for r in rows] == ["s1", "s2", "s3"]
    assert rows[0]["path"] == str(tmp_path / "a.wav")
    assert rows[2]["path"] == str(tmp_path / "gone.wav")  # kept: the probe reports it


def test_manifest_without_path_column_is_a_clear_error(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,speaker\na.wav,s1\n")
    with pytest.raises(SourceError, match="no 'path' column"):
        list_corpus([str(manifest)])


def test_missing_input_becomes_a_row(tmp_path):
    rows = list_corpus([str(tmp_path / "nope.wav")])
    assert len(rows) == 1 and rows[0]["rel_path"] == "nope.wav"


def test_symlink_loop_and_odd_names(tmp_path):
    expected = make_hostile_corpus(tmp_path)
    rows = list_corpus([str(tmp_path)])
    assert sorted(r["rel_path"] for r in rows) == sorted(expected)
