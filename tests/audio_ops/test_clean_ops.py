"""Cleaning operators without Ray: clip cutting, filter rules, the funnel."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import SAMPLE

from audio_ops.clips import ClipConfig, boundaries_in_silence, cut_clips, frame_energy, segment_file
from audio_ops.filters import FilterError, Funnel, first_failure, parse_rule, parse_rules
from audio_ops.probe import probe_file
from audio_ops.speakers import SpeakerCheck, split_clip
from audio_ops.vad import VadConfig, make_vad
from pipelines.reports.evaluate import read_rttm


def test_clips_respect_bounds_and_cut_in_pauses():
    regions = np.array(
        [[0.5, 4.0], [4.6, 9.0], [9.8, 20.0], [21.0, 33.0], [34.5, 36.0], [50.0, 51.0]]
    )
    clips = cut_clips(regions, 60.0, ClipConfig(min_seconds=3, max_seconds=15))
    kept = [c for c in clips if not c.reason]
    assert all(3 <= c.duration <= 15 for c in kept)
    # The 1.5 s at 34.5 s fits no neighbour under 15 s, and the lone 1 s burst at 50 s: too short.
    assert [(c.reason, round(c.duration, 1)) for c in clips if c.reason] == [
        ("too_short", 1.9),
        ("too_short", 1.4),
    ]
    assert boundaries_in_silence(clips, regions) == 1.0
    for a, b in zip(clips, clips[1:], strict=False):
        assert a.end <= b.start  # no overlap between clips


def test_speech_without_pauses_is_split_at_its_quietest_points():
    rate = 16000
    t = np.arange(rate * 70) / rate
    audio = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    for quiet in (22.0, 47.0):  # two dips where a split belongs
        audio[int(quiet * rate) : int((quiet + 0.2) * rate)] *= 0.01
    clips = cut_clips(
        np.array([[0.0, 70.0]]), 70.0, ClipConfig(max_seconds=30), energy=frame_energy(audio, rate)
    )
    cuts = [c.end for c in clips[:-1]]
    assert len(clips) == 3 and all(c.duration <= 30 for c in clips)
    assert abs(cuts[0] - 22.1) < 0.2 and abs(cuts[1] - 47.1) < 0.2


@pytest.mark.parametrize("path", sorted((SAMPLE / "audio").iterdir()), ids=lambda p: p.name)
def test_sample_clips_start_and_end_in_silence(path):
    config = ClipConfig()
    seg = segment_file(str(path), make_vad(VadConfig()), VadConfig(), config)
    reference = read_rttm(SAMPLE / "rttm" / f"{path.stem}.rttm")
    speech = np.array([[t.start, t.start + t.duration] for t in reference])
    kept = [c for c in seg.clips if not c.reason]
    assert kept and all(config.min_seconds <= c.duration <= config.max_seconds for c in kept)
    # Against the ground-truth turns, not the VAD that made the cuts.
    assert boundaries_in_silence(kept, speech) >= 0.95
    assert seg.duration == pytest.approx(probe_file(str(path))["duration"], abs=0.01)
    assert np.isfinite(seg.loudness_lufs)


def test_filter_rules_parse_and_evaluate():
    row = {
        "duration": 12.0,
        "snr_db": 18.5,
        "language": "en",
        "language_prob": 0.93,
        "hallucination": False,
    }
    assert parse_rule("duration between 3 and 30").passes(row)
    assert parse_rule("snr_db >= 15").passes(row)
    assert not parse_rule("snr_db > 20").passes(row)
    assert parse_rule("language == en").passes(row)
    assert parse_rule("language in [en, de]").passes(row)
    assert not parse_rule("language != en").passes(row)
    assert parse_rule("hallucination == false").passes(row)
    assert not parse_rule("missing >= 1").passes(row)  # a missing value fails the rule
    assert not parse_rule("snr_db >= 15").passes({**row, "snr_db": float("nan")})
    rules = parse_rules(
        {"long_enough": "duration >= 3", "clean": "snr_db >= 20", "english": "language == en"}
    )
    assert first_failure(row, rules) == "clean"
    assert first_failure({**row, "snr_db": 25.0}, rules) == ""


@pytest.mark.parametrize(
    "spec,message",
    [
        (["snr_db => 15"], "expected one of"),
        (["duration between 30 and 3"], "low first"),
        (["snr >= 15"], "no stage produces the column 'snr'"),
        ([{"name": "x", "rule": "duration >= 1", "extra": 1}], "expected a rule sentence"),
        (["duration >= 1", "duration <= 40"], "unique"),
    ],
)
def test_bad_filters_name_the_problem(spec, message):
    with pytest.raises(FilterError, match=message):
        parse_rules(spec, known_columns={"duration", "snr_db"})


def test_funnel_adds_up():
    funnel = Funnel()
    rng = np.random.default_rng(0)
    for _ in range(1000):
        funnel.add(float(rng.uniform(0, 30)), rng.choice(["", "", "too_short", "snr", "no_speech"]))
    funnel.check()
    rows = funnel.rows()
    assert sum(r["hours"] for r in rows) == pytest.approx(funnel.seconds_in / 3600, rel=1e-12)
    assert sum(r["clips"] for r in rows) == 1000
    assert "kept" in funnel.text()


def test_clean_transcribe_stage_runs_whisper_on_its_reserved_threads():
    """The clean job's Whisper actors use the threads the job gives them (the stage's reserved
    CPUs), not one per core each: on 2 cores, two actors of two threads each fought over the
    cores (measured: 64-66 s against 57-63 s for the benchmark corpus)."""
    from audio_ops.transcription import TranscriptionConfig
    from pipelines.jobs.clean import TranscribeAt16k

    stage = TranscribeAt16k(TranscriptionConfig(), threads=1)
    assert stage.inner.config.threads() == 1
    assert TranscribeAt16k(TranscriptionConfig(), threads=3).inner.config.threads() == 3
    # An explicit transcription.cpu_threads wins.
    assert (
        TranscribeAt16k(TranscriptionConfig(cpu_threads=2), threads=1).inner.config.threads() == 2
    )


def test_a_multi_speaker_clip_splits_into_parts_with_their_own_speech():
    rate = 1000
    audio = np.arange(10 * rate, dtype=np.float32)
    speech = np.array([[0.5, 2.0], [2.5, 4.0], [7.0, 9.5]])
    check = SpeakerCheck(speaker_count=2, overlap_ratio=0.0, parts=[(0.0, 3.2), (6.5, 10.0)])
    first, second = split_clip(audio, rate, speech, check, "split")
    assert (first.start, first.end, second.start, second.end) == (0.0, 3.2, 6.5, 10.0)
    np.testing.assert_array_equal(first.audio, audio[:3200])
    np.testing.assert_array_equal(second.audio, audio[6500:])
    # Speech regions follow their part, relative to its start; one that straddles its end is cut.
    np.testing.assert_allclose(first.speech, [[0.5, 2.0], [2.5, 3.2]])
    np.testing.assert_allclose(second.speech, [[0.5, 3.0]])
    assert first.speech_seconds == pytest.approx(2.2) and second.speech_seconds == 2.5
    assert split_clip(audio, rate, speech, check, "drop") == []
    (alone,) = split_clip(
        audio, rate, np.zeros((0, 2)), SpeakerCheck(2, 0.0, [(1.0, 2.0)]), "split"
    )
    assert alone.speech.shape == (0, 2) and alone.speech_seconds == 0.0


def test_filters_may_test_what_the_configured_steps_declare():
    from pipelines.jobs.clean import CleanRunConfig, validate

    with_whisper = CleanRunConfig(steps=("transcribe",), filters=["ngram_repeats < 3"])
    assert [r.column for r in validate(with_whisper)] == ["ngram_repeats"]
    without = CleanRunConfig(steps=("quality",), filters=["ngram_repeats < 3"])
    with pytest.raises(FilterError, match="no stage produces the column 'ngram_repeats'"):
        validate(without)
    for payload in ("audio", "seconds"):  # what the stages carry, not what a filter tests
        with pytest.raises(FilterError, match=f"no stage produces the column '{payload}'"):
            validate(CleanRunConfig(filters=[f"{payload} > 1"]))
