"""Speaker ids for clips from a diarization, and hours capped per speaker."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audio_ops.balance import BalanceConfig, TurnIndex, assign_speakers, balance


def test_each_clip_gets_the_speaker_who_speaks_most_in_it():
    turns = [
        ("f1", 0.0, 4.0, "G00001"),
        ("f1", 4.0, 5.0, "G00002"),
        ("f1", 6.0, 9.0, "G00002"),
        ("f2", 0.0, 3.0, "G00001"),
        ("f2", 1.0, 2.0, "G00003"),  # overlapped speech counts for both
        ("f3", 0.0, 2.0, ""),  # a turn without a global id is ignored
    ]
    clips = [
        ("f1", 0.5, 4.5),  # 3.5 s of G00001, 0.5 s of G00002
        ("f1", 6.5, 8.0),  # one speaker
        ("f2", 0.0, 3.0),  # 3 s + 1 s
        ("f1", 10.0, 12.0),  # nobody
        ("f3", 0.0, 2.0),
        ("f9", 0.0, 1.0),  # a file the diarization does not have
        ("f1", 3.0, 5.0),  # 1 s each: the tie goes to the lower id
    ]
    got = assign_speakers(clips, turns)
    assert got[0] == ("G00001", pytest.approx(3.5 / 4.0))
    assert got[1] == ("G00002", 1.0)
    assert got[2] == ("G00001", pytest.approx(0.75))
    assert got[3] == got[4] == got[5] == (None, 0.0)
    assert got[6] == ("G00001", pytest.approx(0.5))


def _brute_force(turns, file_id, start, end):
    return sorted(
        (a, b, s) for f, a, b, s in turns if f == file_id and s and min(end, b) - max(start, a) > 0
    )


def test_turn_index_finds_the_same_turns_as_a_scan_of_all_of_them():
    # Long turns that reach past many short ones, overlaps, and shuffled input: the slice found
    # by the running maximum of the ends must still hold every overlapping turn.
    rng = random.Random(7)
    turns = []
    for f in range(5):
        for _ in range(200):
            start = rng.uniform(0, 600)
            length = rng.choice([0.3, 1.0, 3.0, 40.0, 300.0])
            turns.append((f"file{f}", start, start + length, rng.choice(["A", "B", "C", ""])))
    rng.shuffle(turns)
    shuffled = TurnIndex.from_tuples(turns)
    in_order = TurnIndex.from_tuples(sorted(turns))  # as a diarize run writes them: no sort
    for index in (shuffled, in_order):
        assert len(index) == sum(1 for t in turns if t[3])
        assert "file0" in index and "file5" not in index
    for _ in range(500):
        f = f"file{rng.randrange(6)}"  # file5 has no turns
        start = rng.uniform(-10, 650)
        end = start + rng.choice([0.01, 2.0, 6.0, 30.0])
        got = shuffled.overlapping(f, start, end)
        assert sorted(got) == _brute_force(turns, f, start, end)
        assert [t[0] for t in got] == sorted(t[0] for t in got)  # in order of start
        assert in_order.overlapping(f, start, end) == got


def test_turn_index_reads_arrow_dictionary_columns_with_nulls(tmp_path):
    # What voxflow clean reads: a diarize run's segments/ parts, ids dictionary-encoded per part
    # (each part its own dictionary), a null global id where the linking gave none.
    parts = [
        {
            "file_id": ["a", "a", "b"],
            "start": [0.0, 2.0, 0.0],
            "end": [2.0, 4.0, 5.0],
            "speaker_global": ["G1", None, "G2"],
        },
        {
            "file_id": ["c", "a"],
            "start": [1.0, 4.0],
            "end": [2.0, 6.0],
            "speaker_global": ["G2", "G3"],
        },
    ]
    folder = tmp_path / "segments"
    folder.mkdir()
    for k, part in enumerate(parts):
        pq.write_table(pa.table(part), folder / f"part-{k}.parquet")
    table = pq.read_table(folder, read_dictionary=["file_id", "speaker_global"])
    assert pa.types.is_dictionary(table["file_id"].type)

    def batches():
        for k in range(len(parts)):
            reader = pq.ParquetFile(
                folder / f"part-{k}.parquet", read_dictionary=["file_id", "speaker_global"]
            )
            yield from reader.iter_batches(batch_size=2)

    indices = [
        TurnIndex(table["file_id"], table["start"], table["end"], table["speaker_global"]),
        TurnIndex.from_batches(batches(), "speaker_global"),
        TurnIndex.from_batches(batches(), "speaker_global", rows=5),  # filled in place
    ]
    for index in indices:
        assert len(index) == 4  # the null speaker's turn is left out
        assert index.overlapping("a", 0.0, 10.0) == [(0.0, 2.0, "G1"), (4.0, 6.0, "G3")]
        assert index.assign("a", 1.0, 5.0) == ("G1", 0.5)
        assert index.assign("b", 1.0, 2.0) == ("G2", 1.0)
        assert index.assign("c", 3.0, 4.0) == (None, 0.0)
        assert index.nbytes() == 4 * (8 + 8 + 8 + 4)
    with pytest.raises(ValueError, match="differ in length"):
        TurnIndex(["a"], np.zeros(2), np.ones(2), ["G1", "G2"])
    with pytest.raises(ValueError, match="not the 6 given"):
        TurnIndex.from_batches(batches(), "speaker_global", rows=6)
    with pytest.raises(ValueError, match="more than the 4 rows"):
        TurnIndex.from_batches(batches(), "speaker_global", rows=4)


def clips(speaker: str, n: int, seconds: float, file: str = "f") -> list[dict]:
    return [
        {"clip_id": f"{file}{speaker}_{i:03d}", "duration": seconds, "speaker_global": speaker}
        for i in range(n)
    ]


def test_hours_are_capped_per_speaker_the_same_way_in_any_order():
    rows = clips("A", 30, 600.0) + clips("B", 4, 600.0) + clips("C", 2, 10.0)
    rows.append({"clip_id": "x", "duration": 9999.0, "speaker_global": None})
    config = BalanceConfig(max_hours_per_speaker=2.0)
    reasons = balance(rows, config)
    kept_hours = {}
    for row, reason in zip(rows, reasons, strict=True):
        assert reason in ("", "speaker_cap")
        if not reason and row["speaker_global"]:
            kept_hours[row["speaker_global"]] = (
                kept_hours.get(row["speaker_global"], 0) + row["duration"] / 3600
            )
    assert kept_hours == {
        "A": pytest.approx(2.0),
        "B": pytest.approx(2 / 3),
        "C": pytest.approx(20 / 3600),
    }
    assert reasons[-1] == ""  # a clip without a speaker is not balanced
    assert reasons.count("speaker_cap") == 18
    # The choice depends on the clips, not on the order they come in.
    shuffled = rows[:]
    random.Random(7).shuffle(shuffled)
    again = dict(zip((r["clip_id"] for r in shuffled), balance(shuffled, config), strict=True))
    assert again == dict(zip((r["clip_id"] for r in rows), reasons, strict=True))
    # The kept clips of A are spread over its ids, not its first 12.
    kept_a = [
        r["clip_id"]
        for r, why in zip(rows, reasons, strict=True)
        if r["speaker_global"] == "A" and not why
    ]
    assert kept_a != [r["clip_id"] for r in rows[:12]]


def test_a_speaker_with_too_few_clips_is_dropped():
    rows = clips("A", 5, 5.0) + clips("B", 2, 5.0)
    reasons = balance(rows, BalanceConfig(min_clips_per_speaker=3))
    assert reasons == [""] * 5 + ["speaker_min_clips"] * 2
    # After the cap: A keeps 2 clips of 5 s under a 10 s cap, then is below the floor too.
    reasons = balance(rows, BalanceConfig(max_hours_per_speaker=10 / 3600, min_clips_per_speaker=3))
    assert sorted(reasons[:5]) == ["speaker_cap"] * 3 + ["speaker_min_clips"] * 2
    assert balance(rows, BalanceConfig()) == [""] * 7  # nothing asked, nothing dropped


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_hours_per_speaker": 0.0}, "max_hours_per_speaker"),
        ({"max_hours_per_speaker": float("inf")}, "max_hours_per_speaker"),
        ({"min_clips_per_speaker": -1}, "min_clips_per_speaker"),
        ({"by": ""}, "balance.by"),
    ],
)
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BalanceConfig(**kwargs)
