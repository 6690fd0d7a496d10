"""Word times: CTC forced alignment of transcripts (``transcription.aligner``) on given frame
probabilities and with a tiny random wav2vec2 CTC model loaded through the real path (no CTC
weights ship offline); Whisper's word edges moved out of pauses (``transcription.snap_words``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import SAMPLE

from audio_ops.alignment import (
    align_words,
    check_aligner,
    silences,
    snap_words,
    vad_pauses,
)
from audio_ops.diarization import merge_regions
from audio_ops.io import load_audio
from audio_ops.models import ModelError
from audio_ops.transcription import Transcriber, TranscriptionConfig, segment_words

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ'"
VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4} | {
    c: 5 + i for i, c in enumerate(LETTERS)
}
FRAME = 0.02


def emissions(spoken: list[tuple[str, int]], frames: int = 150) -> np.ndarray:
    """Log-probabilities where each ``(character, frame)`` is heard at its frame (two frames
    long) and blank everywhere else."""
    probs = np.full((frames, len(VOCAB)), 1e-4)
    probs[:, 0] = 1.0
    for char, at in spoken:
        probs[at : at + 2] = 1e-4
        probs[at : at + 2, VOCAB[char]] = 1.0
    probs /= probs.sum(axis=1, keepdims=True)
    return np.log(probs)


def spell(word: str, first: int) -> list[tuple[str, int]]:
    return [(c, first + 3 * i) for i, c in enumerate(word)]


def test_words_land_where_their_characters_are_heard():
    # "hello" heard in frames 10-23 (0.20-0.48 s), the separator at 40, "world" in 60-73.
    heard = spell("HELLO", 10) + [("|", 40)] + spell("WORLD", 60)
    words = align_words(emissions(heard), ["Hello,", "world."], VOCAB, 0, FRAME)
    assert [w["word"] for w in words] == ["Hello,", "world."]  # written as transcribed
    assert words[0]["start"] == pytest.approx(0.20) and words[0]["end"] == pytest.approx(0.48)
    assert words[1]["start"] == pytest.approx(1.20) and words[1]["end"] == pytest.approx(1.48)
    assert all(w["probability"] > 0.9 for w in words)


def test_a_word_without_letters_spans_the_gap_between_its_neighbours():
    heard = spell("I", 10) + [("|", 20)] + spell("SAW", 30) + [("|", 60)] + spell("CATS", 90)
    words = align_words(emissions(heard), ["I", "saw", "2", "cats"], VOCAB, 0, FRAME)
    two = words[2]
    assert two["word"] == "2" and math.isnan(two["probability"])
    assert two["start"] == pytest.approx(words[1]["end"])
    assert two["end"] == pytest.approx(words[3]["start"])


def test_text_longer_than_the_audio_can_hold_is_not_aligned():
    assert align_words(emissions([], frames=8), ["internationalisation"], VOCAB, 0, FRAME) is None
    assert align_words(emissions([]), ["1999"], VOCAB, 0, FRAME) is None


@pytest.fixture(scope="module")
def tiny_ctc(tmp_path_factory):
    """A randomly initialised ``Wav2Vec2ForCTC`` with a real character tokenizer and feature
    extractor, saved as a hub folder is."""
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    folder = tmp_path_factory.mktemp("ctc")
    (folder / "vocab.json").write_text(json.dumps(VOCAB))
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    config = Wav2Vec2Config(
        vocab_size=len(VOCAB),
        pad_token_id=0,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        conv_dim=(16, 16, 16),
        conv_stride=(5, 4, 16),  # 320 samples per frame: 20 ms, as wav2vec2's
        conv_kernel=(10, 8, 16),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    Wav2Vec2ForCTC(config).save_pretrained(folder)
    return folder


def test_a_ctc_model_gives_the_word_times_through_the_real_path(tiny_ctc):
    """Whisper (the bundled tiny.en) transcribes a real-speech clip; the CTC model, loaded from
    its folder by ``AutoModelForCTC``/``AutoProcessor``, times every transcribed word inside its
    segment, in order. Random weights say nothing of accuracy: the test is of the path."""
    audio, _ = load_audio(str(SAMPLE.parent / "real" / "audio" / "pyannote_sample.flac"), 16000)
    clip = audio[: 12 * 16000]
    config = TranscriptionConfig(language="en", aligner=str(tiny_ctc), device="cpu")
    row = Transcriber(config).transcribe([clip])[0]
    assert row["text"]
    words = segment_words(row["segments"])
    assert [w["word"] for w in words] == row["text"].split()
    for segment in row["segments"]:
        for w in segment["words"]:
            assert segment["start"] <= w["start"] <= w["end"] <= segment["end"] + 1e-6
    assert all(a["end"] <= b["start"] + 1e-6 for a, b in zip(words, words[1:], strict=False))


def test_an_aligner_the_hub_would_give_fails_offline_naming_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = TranscriptionConfig(language="en", aligner="facebook/wav2vec2-base-960h")
    with pytest.raises(ModelError, match="transcription.aligner.*wav2vec2-base-960h"):
        Transcriber(config)


def test_an_aligner_that_cannot_load_is_refused_before_any_work(tiny_ctc, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check_aligner(str(tiny_ctc))  # a model folder passes
    with pytest.raises(ModelError, match="no config.json"):
        check_aligner(str(tmp_path))
    with pytest.raises(ModelError, match="no folder"):
        check_aligner(str(tmp_path / "missing"))
    with pytest.raises(ModelError, match="no folder"):  # a hub id has at most one slash
        check_aligner("models/ctc/v1")
    with pytest.raises(ModelError, match="hub cache does not hold it"):
        check_aligner("facebook/wav2vec2-base-960h")


# ----------------------------------------------------------------------------------------------
# Word edges out of pauses
# ----------------------------------------------------------------------------------------------


def words_at(*spans: tuple[str, float, float]) -> list[dict]:
    return [{"word": w, "start": a, "end": b} for w, a, b in spans]


def times(words: list[dict]) -> list[tuple[float, float]]:
    return [(w["start"], w["end"]) for w in words]


def test_word_edges_in_a_pause_move_to_the_speech_beside_it():
    pauses = np.array([[1.0, 1.5]])
    words = words_at(("so", 0.2, 1.2), ("then", 1.3, 2.0), ("more", 2.0, 2.4))
    snap_words(words, pauses)
    # "so" ran 0.2 s into the pause, "then" started 0.2 s before its end; "more" is untouched.
    assert times(words) == [(0.2, 1.0), (1.5, 2.0), (2.0, 2.4)]


def test_a_word_wholly_in_a_pause_joins_the_speech_before_it_unless_it_starts_a_sentence():
    pauses = np.array([[1.0, 2.0]])
    # Whisper's late zero-length last word of a phrase: back to the end of the speech before.
    words = words_at(("now,", 0.5, 0.9), ("though.", 1.4, 1.4), ("Well,", 2.1, 2.5))
    snap_words(words, pauses)
    assert times(words) == [(0.5, 0.9), (1.0, 1.0), (2.1, 2.5)]
    # After a sentence's end the word begins the next sentence: forward, keeping its length
    # where the next word leaves room.
    words = words_at(("there.", 0.5, 0.9), ("So", 1.6, 1.8), ("we", 2.1, 2.3))
    snap_words(words, pauses)
    assert times(words) == [(0.5, 0.9), (2.0, 2.1), (2.1, 2.3)]
    # A closing quote after the stop still ends the sentence; an abbreviation does not.
    words = words_at(('there."', 0.5, 0.9), ("So", 1.6, 1.8), ("we", 2.1, 2.3))
    snap_words(words, pauses)
    assert times(words)[1] == (2.0, 2.1)
    words = words_at(("Mr.", 0.5, 0.9), ("Smith", 1.4, 1.8), ("said", 2.1, 2.3))
    snap_words(words, pauses)
    assert times(words)[1] == (0.9, 1.0)
    # The clip's first word goes forward too; two words in one pause keep their order.
    words = words_at(("Oh", 1.1, 1.2), ("well", 1.3, 1.9), ("yes", 2.0, 2.2))
    snap_words(words, pauses)
    assert times(words) == [(2.0, 2.0), (2.0, 2.0), (2.0, 2.2)]
    assert all(a["end"] <= b["start"] for a, b in zip(words, words[1:], strict=False))


def test_no_word_leaves_the_clip_when_a_pause_runs_to_its_end():
    # "Bye" starts a sentence, but the pause after "Thanks." runs to the end of the 3 s clip:
    # there is no speech after it, so it joins the speech before.
    words = words_at(("Thanks.", 2.0, 2.4), ("Bye", 2.6, 2.9))
    snap_words(words, np.array([[2.5, 3.2]]), duration=3.0)
    assert times(words) == [(2.0, 2.4), (2.4, 2.5)]  # its length capped by "Thanks."
    # A lone word in a clip without speech stays where it is; nothing passes the clip's end.
    words = words_at(("Hmm", 0.7, 0.95))
    snap_words(words, np.array([[0.0, 1.0]]), duration=1.0)
    assert times(words) == [(0.7, 0.95)]
    words = words_at(("Ok.", 0.1, 0.6), ("So", 0.9, 1.0))
    snap_words(words, np.array([[0.64, 1.024]]), duration=1.0)
    assert all(0 <= w["start"] <= w["end"] <= 1.0 for w in words)


def test_a_word_keeps_its_length_back_to_the_word_before_and_no_pause_moves_nothing():
    words = words_at(("it", 0.2, 0.6), ("went", 1.3, 1.7))
    snap_words(words, np.array([[0.8, 2.0]]))
    assert times(words) == [(0.2, 0.6), (0.6, 0.8)]  # 0.4 s long, back to "it"'s end
    words = words_at(("a", 0.1, 0.5), ("b", 0.5, 0.9))
    snap_words(words, np.zeros((0, 2)))
    assert times(words) == [(0.1, 0.5), (0.5, 0.9)]


def burst(seconds: float, rng: np.random.Generator, level: float = 0.3) -> np.ndarray:
    """Speech-like noise bursts: 16 kHz, amplitude-modulated at 4 Hz."""
    t = np.arange(int(seconds * 16000)) / 16000
    return (level * rng.standard_normal(t.size) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(
        np.float32
    )


def test_pauses_are_found_to_the_frame_and_none_in_noise_near_the_speech_level():
    rng = np.random.default_rng(0)
    floor = 1e-4 * rng.standard_normal(16000 * 3).astype(np.float32)
    audio = floor.copy()
    audio[:16000] += burst(1.0, rng)
    audio[int(1.4 * 16000) : 3 * 16000] += burst(1.6, rng)
    assert silences(audio, 16000) == pytest.approx(np.array([[1.0, 1.4]]), abs=0.011)
    # Speech 10 dB above a noise bed: energy cannot tell a pause, so none is claimed.
    noisy = audio + 0.1 * rng.standard_normal(audio.size).astype(np.float32)
    assert silences(noisy, 16000).shape == (0, 2)
    # The VAD's probabilities still can: runs below 0.5 of at least 0.1 s (4 frames of 32 ms).
    probs = np.array([0.9, 0.9, 0.2, 0.1, 0.3, 0.2, 0.9, 0.4, 0.4, 0.4, 0.9])
    assert vad_pauses(probs, 0.032) == pytest.approx(np.array([[0.064, 0.192]]))
    # Silero's last frame is padded past the clip's end: pauses are cut at the clip's length.
    assert vad_pauses([0.9] * 20 + [0.05] * 12, 0.032, duration=1.0) == pytest.approx(
        np.array([[0.64, 1.0]])
    )
    # Digital zeros (0.3 s of them) neither hide the pause nor count as the noise floor.
    zeros = np.concatenate([np.zeros(int(0.3 * 16000), np.float32), audio])
    assert silences(zeros, 16000) == pytest.approx(np.array([[0.0, 0.3], [1.3, 1.7]]), abs=0.011)
    both = np.concatenate([np.array([[0.0, 1.0]]), np.array([[0.5, 2.0], [3.0, 4.0]])])
    assert merge_regions(both) == (pytest.approx(np.array([[0.0, 2.0], [3.0, 4.0]])))


def test_word_snapping_uses_the_jobs_silero_model(tmp_path):
    """``vad.model`` is the Silero the transcriber snaps words with (and measures speech with),
    not always the bundled one: a local copy of the bundled weights gives the same word times,
    a path with no model fails naming it, and both jobs that transcribe hand their ``vad`` on."""
    import shutil
    from dataclasses import replace

    from audio_ops.models import ModelRef, resolve
    from audio_ops.vad import VadConfig
    from pipelines.jobs.clean import CleanRunConfig, _stage_options
    from pipelines.jobs.transcribe import TranscribeJob, TranscribeRunConfig

    audio, _ = load_audio(str(SAMPLE.parent / "real" / "audio" / "pyannote_sample.flac"), 16000)
    clip = audio[: 12 * 16000]
    config = TranscriptionConfig(language="en", word_timestamps=True, device="cpu")
    copy = tmp_path / "my_silero.onnx"
    shutil.copy(resolve(ModelRef(VadConfig().model)), copy)
    bundled = Transcriber(config).transcribe([clip])[0]
    own = Transcriber(config, VadConfig(model=str(copy))).transcribe([clip])[0]
    assert segment_words(bundled["segments"]) and own["segments"] == bundled["segments"]
    assert own["speech_seconds"] == bundled["speech_seconds"]

    missing = VadConfig(model=str(tmp_path / "nowhere.onnx"))
    with pytest.raises(ModelError, match="nowhere.onnx"):
        Transcriber(config, missing).transcribe([clip])

    clean = replace(CleanRunConfig(), vad=missing)
    assert _stage_options("transcribe", clean)["vad"] == missing
    job = TranscribeJob(str(tmp_path / "out"), replace(TranscribeRunConfig(), vad=missing))
    (whisper,) = [s for s in job.stages() if s.name == "transcribe"]
    assert whisper.kwargs["vad"] == missing
