"""The single-speaker check on a diarization's turns (``speaker.source: diarization``)."""

from __future__ import annotations

import numpy as np
import pytest

from audio_ops.clips import ClipConfig
from audio_ops.speakers import SpeakerCheckConfig, check_from_diarization

BOUNDS = ClipConfig(min_seconds=1.0, max_seconds=20.0)
CONFIG = SpeakerCheckConfig(source="diarization")


def check(turns, speech, duration=12.0, config=CONFIG):
    return check_from_diarization(turns, np.array(speech, dtype=float), duration, config, BOUNDS)


def test_one_voice_keeps_the_whole_clip():
    got = check([(0.2, 5.0, "A"), (5.6, 11.5, "A")], [(0.2, 5.0), (5.6, 11.5)])
    assert (got.speaker_count, got.overlap_ratio, got.parts) == (1, 0.0, [(0.0, 12.0)])


def test_a_change_of_voice_is_cut_in_the_pause_between_them():
    # A speaks to 5.0, B from 5.6; the VAD's pause is 4.9-5.7 (turn edges are a little off).
    got = check([(0.2, 5.0, "A"), (5.6, 11.5, "B")], [(0.2, 4.9), (5.7, 11.5)])
    assert got.speaker_count == 2
    assert got.parts == [(0.0, pytest.approx(5.3)), (pytest.approx(5.3), 12.0)]


def test_overlapped_speech_is_in_no_part_and_cuts_fall_in_pauses():
    # A: 0.2-6.0 with a pause at 3.0-3.4; B from 5.0 (one second spoken over A), pause at 8.0-8.5.
    speech = [(0.2, 3.0), (3.4, 8.0), (8.5, 11.5)]
    got = check([(0.2, 3.0, "A"), (3.4, 6.0, "A"), (5.0, 11.5, "B")], speech)
    assert got.speaker_count == 2
    assert got.overlap_ratio == pytest.approx(1.0 / 11.0, abs=0.01)
    # A's part ends at its last pause before the shared second; B's starts at its first after.
    assert got.parts == [(0.0, pytest.approx(3.2)), (pytest.approx(8.25), 12.0)]


def test_a_brief_voice_under_the_threshold_is_not_counted():
    turns = [(0.2, 11.5, "A"), (4.0, 4.3, "B")]
    assert check(turns, [(0.2, 11.5)]).speaker_count == 1
    strict = SpeakerCheckConfig(source="diarization", min_speaker_seconds=0.2)
    # Counted, B is spoken over A: no pause to cut A at, so A keeps only what a pause bounds.
    got = check(turns, [(0.2, 11.5)], config=strict)
    assert got.speaker_count == 2 and got.parts == []


def test_no_turn_in_the_clip_leaves_it_whole():
    got = check([], [(0.5, 3.0)], duration=4.0)
    assert (got.speaker_count, got.parts) == (0, [(0.0, 4.0)])


def test_parts_outside_the_bounds_are_left_out():
    got = check([(0.0, 0.6, "A"), (1.0, 11.5, "B")], [(0.0, 0.6), (1.0, 11.5)])
    assert got.parts == [(pytest.approx(0.8), 12.0)]


def test_a_wrong_source_is_refused():
    with pytest.raises(ValueError, match="speaker.source"):
        SpeakerCheckConfig(source="pyannote")
