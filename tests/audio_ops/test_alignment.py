"""CTC forced alignment of transcripts (``transcription.aligner``): the alignment on given frame
probabilities, and a tiny random wav2vec2 CTC model loaded through the real path (no CTC weights
ship offline)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import SAMPLE

from audio_ops.alignment import align_words, check_aligner
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
