"""Speaker ids for clips from a diarization, and hours capped per speaker."""

from __future__ import annotations

import random

import pytest

from audio_ops.balance import BalanceConfig, assign_speakers, balance


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
