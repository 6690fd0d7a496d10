"""The last step of ``voxflow clean`` on a store of committed shards, without Ray: the
corpus-wide decisions and clips.parquet written in parts, as a corpus too large for memory is."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from audio_ops.balance import BalanceConfig
from pipelines.engine.config import ConfigError
from pipelines.engine.resume import ShardStore
from pipelines.jobs import clean


def _store(out, files=12, clips=5, seed=0):
    """Shards of 4 files with ``clips`` kept clips each; clip 3 of every file but the first
    carries the prints of file 0's clip 3 (a copy of it)."""
    rng = np.random.default_rng(seed)
    store = ShardStore(str(out), clean.CleanJob(str(out), clean.CleanRunConfig()).schemas([]), 4)
    copied = None
    for f in range(files):
        file_id = f"{(f * 7919) % 1000:016x}"
        kept, funnel = [], []
        for c in range(clips):
            start = c * 5.0
            audio_path = f"clips/{file_id}_{int(start * 1000):09d}.flac"
            (out / audio_path).parent.mkdir(parents=True, exist_ok=True)
            (out / audio_path).write_bytes(b"flac")
            fp = rng.integers(0, 2**32, 250, dtype=np.uint32)
            lm = (rng.integers(0, 2**31, 700, dtype=np.uint64) << np.uint64(32)) | np.sort(
                rng.integers(0, 250, 700, dtype=np.uint64)
            )
            if c == 3:
                copied = copied or (fp.tobytes(), lm.tobytes())
                fp_bytes, lm_bytes = copied
            else:
                fp_bytes, lm_bytes = fp.tobytes(), lm.tobytes()
            text = f"file {f} clip {c}"
            kept.append(
                {
                    "file_id": file_id,
                    "path": f"/corpus/{f}.flac",
                    "clip_id": clean.clip_id(file_id, start),
                    "audio_path": audio_path,
                    "start": start,
                    "end": start + 4.0,
                    "duration": 4.0 + 0.01 * f,
                    "sample_rate": 16000,
                    "text": text,
                    "segments": json.dumps(
                        [
                            {
                                "text": text,
                                "words": [
                                    {"word": "file", "start": 0.1, "end": 0.4, "probability": 0.9}
                                ],
                            }
                        ]
                        if c % 2
                        else []
                    ),
                    "speaker": f"s{(f + c) % 3}",
                    "funnel_seconds": 4.0,
                    "fingerprint": fp_bytes,
                    "landmarks": lm_bytes,
                }
            )
            funnel.append({"file_id": file_id, "seconds": 4.0, "reason": ""})
        funnel.append({"file_id": file_id, "seconds": 3.0, "reason": "no_speech"})
        store.add(file_id, {"files": [{"file_id": file_id}], "kept": kept, "funnel": funnel})
    store.flush()


def _finalise(out, **config):
    job = clean.CleanJob(str(out), clean.CleanRunConfig(**config))
    job._store = ShardStore(str(out), job.schemas([]))
    counts = job.finalise(job.store.committed_ids())
    return job, counts


@pytest.mark.parametrize("per_part", [4, 1000])
def test_duplicates_and_balance_in_clips_in_id_order_with_every_second_counted(
    tmp_path, monkeypatch, per_part
):
    monkeypatch.setattr(clean, "CLIPS_PER_PART", per_part)
    _store(tmp_path)
    cap = BalanceConfig(by="speaker", max_hours_per_speaker=50 / 3600)
    job, counts = _finalise(tmp_path, balance=cap)
    clips = pq.read_table(tmp_path / "clips.parquet").to_pylist()
    rejected = pq.read_table(tmp_path / "rejected").to_pylist()
    ids = [c["clip_id"] for c in clips]
    assert ids == sorted(ids) and counts["clips_kept"] == len(clips)
    # the 12 copies form one group: the longest (the last file's) stays, 11 go
    dups = [r for r in rejected if r["reason"] == "duplicate"]
    assert len(dups) == 11
    keeper = {r["duplicate_group"] for r in dups}
    assert len(keeper) == 1 and keeper <= set(ids)
    assert all(not (tmp_path / r["audio_path"]).exists() for r in rejected)
    assert all((tmp_path / c["audio_path"]).exists() for c in clips)
    # no speaker keeps more than 50 s; the capped clips say so
    for speaker in {c["speaker"] for c in clips}:
        assert sum(c["duration"] for c in clips if c["speaker"] == speaker) <= 50 + 1e-9
    capped = [r for r in rejected if r["reason"] == "speaker_cap"]
    assert capped and len(clips) + len(capped) + len(dups) == 60
    dropped = {"no_speech": 12, "duplicate": 11, "speaker_cap": len(capped)}
    assert job.funnel.clips_dropped == dropped
    funnel = {r["stage"]: r for r in pq.read_table(tmp_path / "funnel.parquet").to_pylist()}
    hours = sum(r["hours"] for r in funnel.values())
    assert hours == pytest.approx(12 * 23 / 3600)
    # words from the segments of clips that have them; internal columns gone
    assert [w["word"] for w in clips[1]["words"]] == ["file"] and clips[0]["words"] == []
    assert not {"fingerprint", "landmarks", "funnel_seconds"} & set(clips[0])


def test_parts_give_the_same_file_as_memory(tmp_path, monkeypatch):
    for name, per_part in (("a", 3), ("b", 100_000)):
        _store(tmp_path / name)
        monkeypatch.setattr(clean, "CLIPS_PER_PART", per_part)
        _finalise(tmp_path / name)
    a = pq.read_table(tmp_path / "a" / "clips.parquet")
    b = pq.read_table(tmp_path / "b" / "clips.parquet")
    assert a.num_rows == 49 and a.equals(b)


def test_balance_by_a_column_the_clips_lack_is_a_clear_error(tmp_path):
    _store(tmp_path)
    with pytest.raises(ConfigError, match="no column 'narrator'.*speaker"):
        _finalise(tmp_path, balance=BalanceConfig(by="narrator", max_hours_per_speaker=1.0))
