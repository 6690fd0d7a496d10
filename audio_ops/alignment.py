"""Word times by CTC forced alignment (the approach of WhisperX), for Whisper's transcripts.

Whisper's own word times come from its cross-attention (faster-whisper's ``word_timestamps``):
good to a few tenths of a second, weakest at turn changes. A character CTC model (wav2vec2,
HuBERT, ... fine-tuned for ASR) gives a probability per 20 ms frame and per character; aligning
the transcript's characters to those frames with the Viterbi path of the CTC topology
(``torchaudio.functional.forced_align``) puts each word where the acoustic model hears it.

:func:`align_words` is the alignment itself on given log-probabilities (pure, testable without
weights); :class:`CtcAligner` loads a transformers CTC model and its processor from a hub id
(``facebook/wav2vec2-base-960h``, English; users who have the hub) or a local
``save_pretrained`` folder, and aligns a clip's text. No CTC model ships inside a PyPI package
this project installs, so the option is off by default (``transcription.aligner``).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from audio_ops.io import ANALYSIS_RATE
from audio_ops.models import MissingDependency, ModelError, ModelRef, hub_offline, pick_device


def word_tokens(word: str, vocab: dict[str, int], upper: bool) -> list[int]:
    """Token ids of a word's characters in a character CTC vocabulary, in the vocabulary's case;
    characters it lacks (digits, most punctuation) are left out."""
    word = word.upper() if upper else word.lower()
    return [vocab[c] for c in word if c in vocab]


def align_words(
    log_probs: np.ndarray,
    words: list[str],
    vocab: dict[str, int],
    blank: int,
    frame_seconds: float,
    delimiter: str | None = "|",
) -> list[dict[str, Any]] | None:
    """Align words to CTC frames.

    Args:
        log_probs: ``(frames, classes)`` log-probabilities of one clip.
        words: the transcript's words in order (as they are to be written out).
        vocab: character to class id.
        blank: the blank (pad) class.
        frame_seconds: seconds per frame.
        delimiter: the word separator class's character, aligned between words when the vocab
            has it (``|`` in wav2vec2's).

    Returns:
        One ``{word, start, end, probability}`` per word, seconds from the clip's start; the
        probability is the mean frame probability of the word's characters. A word with no
        character in the vocab (a number written in digits) spans the gap between its
        neighbours, probability NaN. None when the text cannot be aligned (more characters
        than frames can hold, or no alignable character at all).
    """
    letters = [k for k in vocab if len(k) == 1 and k.isalpha()]
    upper = any(c.isupper() for c in letters) and not any(c.islower() for c in letters)
    per_word = [word_tokens(w, vocab, upper) for w in words]
    sep = vocab.get(delimiter) if delimiter else None
    targets: list[int] = []
    ranges: list[tuple[int, int] | None] = []  # each word's token span in targets
    for tokens in per_word:
        if not tokens:
            ranges.append(None)
            continue
        if targets and sep is not None:
            targets.append(sep)
        ranges.append((len(targets), len(targets) + len(tokens)))
        targets.extend(tokens)
    frames = log_probs.shape[0]
    repeats = sum(a == b for a, b in zip(targets[:-1], targets[1:], strict=False))
    if not targets or frames < len(targets) + repeats:
        return None
    import torch
    from torchaudio.functional import forced_align, merge_tokens

    emission = torch.as_tensor(np.ascontiguousarray(log_probs, dtype=np.float32))[None]
    path, scores = forced_align(emission, torch.tensor([targets], dtype=torch.int32), blank=blank)
    spans = merge_tokens(path[0], scores[0].exp(), blank=blank)
    if len(spans) != len(targets):  # pragma: no cover - forced_align emits every target once
        return None
    out: list[dict[str, Any]] = []
    for word, span in zip(words, ranges, strict=True):
        if span is None:
            out.append({"word": word, "start": math.nan, "end": math.nan, "probability": math.nan})
            continue
        chars = spans[span[0] : span[1]]
        frames_in = sum(s.end - s.start for s in chars)
        score = sum(s.score * (s.end - s.start) for s in chars) / max(frames_in, 1)
        out.append(
            {
                "word": word,
                "start": round(chars[0].start * frame_seconds, 3),
                "end": round(chars[-1].end * frame_seconds, 3),
                "probability": round(float(score), 4),
            }
        )
    _fill_gaps(out, frames * frame_seconds)
    return out


def _fill_gaps(words: list[dict[str, Any]], duration: float) -> None:
    """Times of unaligned words: the gap between the aligned words around them, in place."""
    for i, w in enumerate(words):
        if not math.isnan(w["start"]):
            continue
        before = next((x["end"] for x in reversed(words[:i]) if not math.isnan(x["end"])), 0.0)
        after = next((x["start"] for x in words[i + 1 :] if not math.isnan(x["start"])), duration)
        w["start"], w["end"] = round(before, 3), round(max(after, before), 3)


def check_aligner(model: str | None) -> None:
    """Fail before any work for an aligner that cannot load: a local path that is not a model
    folder, or a hub id while ``HF_HUB_OFFLINE`` is set and the hub cache lacks it."""
    if not model:
        return
    kind = ModelRef(model).kind
    if kind == "path":
        if not os.path.isdir(os.path.expanduser(model)):
            raise ModelError(f"transcription.aligner: no folder {model!r}")
        if not os.path.isfile(os.path.join(os.path.expanduser(model), "config.json")):
            raise ModelError(f"transcription.aligner: {model!r} has no config.json (a CTC model)")
    elif kind != "hub":
        raise ModelError(f"transcription.aligner: {model!r} is not a hub id or a local folder")
    elif hub_offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(model, "config.json"), str):
            raise ModelError(
                f"transcription.aligner: {model!r} is a hub id, HF_HUB_OFFLINE is set and the "
                "hub cache does not hold it"
            )


class CtcAligner:
    """A transformers character CTC model (``AutoModelForCTC`` + ``AutoProcessor``) that aligns
    transcripts to audio.

    Args:
        model: a hub id or a local ``save_pretrained`` folder holding the model and its processor
            (feature extractor + CTC tokenizer).
        revision: hub revision of a hub id.
        device: ``auto`` (GPU when there is one), ``cpu`` or ``cuda``.
    """

    def __init__(self, model: str, revision: str | None = None, device: str = "auto"):
        try:
            import torch
            from transformers import AutoModelForCTC, AutoProcessor
        except ImportError as exc:  # pragma: no cover - base dependencies
            raise MissingDependency("transformers") from exc
        self.torch = torch
        local = ModelRef(model).kind == "path"
        options: dict[str, Any] = {} if local else {"revision": revision}
        offline = hub_offline()
        if local or offline:
            options["local_files_only"] = True
        try:
            self.processor = AutoProcessor.from_pretrained(model, **options)
            self.model = AutoModelForCTC.from_pretrained(model, **options)
        except (OSError, ValueError) as exc:
            hint = " (HF_HUB_OFFLINE is set)" if offline and not local else ""
            raise ModelError(
                f"transcription.aligner: cannot load CTC model {model!r}{hint}: a hub id or a "
                f"folder with a CTC model and its processor is needed: {exc}"
            ) from exc
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is None or not hasattr(tokenizer, "get_vocab"):
            raise ModelError(f"transcription.aligner: {model!r} has no CTC tokenizer")
        self.vocab = dict(tokenizer.get_vocab())
        self.blank = int(tokenizer.pad_token_id)
        self.delimiter = getattr(tokenizer, "word_delimiter_token", None)
        self.device = pick_device(device)
        self.model.eval().to(self.device)

    def align(self, audio: np.ndarray, text: str) -> list[dict[str, Any]] | None:
        """Word times of ``text`` in ``audio`` (16 kHz mono float32), seconds from its start
        (:func:`align_words`); None when it cannot be aligned."""
        words = text.split()
        if not words or len(audio) < ANALYSIS_RATE // 10:
            return None
        inputs = self.processor(audio, sampling_rate=ANALYSIS_RATE, return_tensors="pt")
        with self.torch.inference_mode():
            logits = self.model(inputs["input_values"].to(self.device)).logits[0]
        log_probs = self.torch.log_softmax(logits.float(), dim=-1).cpu().numpy()
        frame_seconds = len(audio) / ANALYSIS_RATE / log_probs.shape[0]
        return align_words(log_probs, words, self.vocab, self.blank, frame_seconds, self.delimiter)


# ----------------------------------------------------------------------------------------------
# Word edges out of silence (no model): Whisper's cross-attention times put some words in pauses
# ----------------------------------------------------------------------------------------------

#: Seconds per frame of the energy profile that silences are found on.
SILENCE_FRAME = 0.01
#: A frame is silent when it lies less than this far above the clip's noise floor (its 5th
#: percentile of frame energies) ...
SILENCE_MARGIN_DB = 15.0
#: ... and more than this far below its loud frames (95th percentile): in noisy audio, where
#: speech stands less than the margin above the floor, nothing counts as silence and no word moves.
SILENCE_BELOW_PEAK_DB = 35.0
#: Frames below this (dB re full scale, power) are digital silence, left out of the floor.
DIGITAL_SILENCE_DB = -100.0
#: Silent runs shorter than this are left alone (stop closures, short gaps inside words).
MIN_SILENCE = 0.05
#: A VAD frame below this speech probability is a pause (Silero's own speech threshold) ...
PAUSE_PROBABILITY = 0.5
#: ... in runs of at least this long.
MIN_PAUSE = 0.1


def _runs(mask: np.ndarray) -> np.ndarray:
    """``(k, 2)`` frame indices ``[first, end)`` of the runs of True in a boolean mask."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return edges.reshape(-1, 2)


def silences(
    audio: np.ndarray,
    sample_rate: int = ANALYSIS_RATE,
    margin_db: float = SILENCE_MARGIN_DB,
    below_peak_db: float = SILENCE_BELOW_PEAK_DB,
    min_silence: float = MIN_SILENCE,
) -> np.ndarray:
    """The silent stretches of a clip, ``(k, 2)`` seconds, from 10 ms frame energies: frames
    below ``min(floor + margin_db, peak - below_peak_db)`` dB, in runs of at least
    ``min_silence`` seconds."""
    frame = max(1, int(round(SILENCE_FRAME * sample_rate)))
    n = len(audio) // frame
    if n < 2:
        return np.zeros((0, 2))
    power = np.square(np.asarray(audio[: n * frame], np.float64)).reshape(n, frame).mean(axis=1)
    db = 10 * np.log10(power + 1e-12)
    live = db > DIGITAL_SILENCE_DB  # digital zeros would pull the floor down to -120 dB
    if live.any():
        floor, peak = np.percentile(db[live], [5, 95])
        silent = ~live | (db < min(floor + margin_db, peak - below_peak_db))
    else:
        silent = np.ones(n, bool)
    runs = _runs(silent)
    runs = runs[(runs[:, 1] - runs[:, 0]) * frame >= min_silence * sample_rate]
    return runs * (frame / sample_rate)


#: Punctuation that ends a sentence: the word after it starts one ...
SENTENCE_ENDS = (".", "?", "!", "\u3002", "\uff1f", "\uff01")
#: ... unless the word is one of these abbreviations (lower case), after which a sentence goes on.
ABBREVIATIONS = frozenset(
    "mr. mrs. ms. dr. prof. st. mt. jr. sr. vs. etc. e.g. i.e. no. approx. dept. inc. ltd.".split()
)


def _ends_sentence(word: str) -> bool:
    word = word.strip().rstrip("\"')\u201d\u2019")  # a closing quote or bracket after the stop
    return word.endswith(SENTENCE_ENDS) and word.lower() not in ABBREVIATIONS


def vad_pauses(
    probs: np.ndarray,
    frame_seconds: float,
    threshold: float = PAUSE_PROBABILITY,
    min_pause: float = MIN_PAUSE,
    duration: float | None = None,
) -> np.ndarray:
    """The pauses of a clip, ``(k, 2)`` seconds, from a VAD's per-frame speech probabilities:
    runs of frames below ``threshold`` at least ``min_pause`` long, cut at ``duration`` (the
    last frame is padded past the clip's end). Unlike :func:`silences` it holds in noise, where
    frame energies cannot tell a pause from speech."""
    runs = _runs(np.asarray(probs).reshape(-1) < threshold)
    runs = runs[(runs[:, 1] - runs[:, 0]) * frame_seconds >= min_pause - 1e-9]
    seconds = runs * frame_seconds
    return seconds if duration is None else np.minimum(seconds, float(duration))


def snap_words(
    words: list[dict[str, Any]], silent: np.ndarray, duration: float | None = None
) -> None:
    """Word edges out of ``silent`` stretches (:func:`silences`, :func:`vad_pauses`, or their
    union by :func:`audio_ops.diarization.merge_regions`), in place, as stable-ts's
    "suppress silence" does: a start inside a silence moves to where it ends, an end inside one
    to where it begins. A word wholly inside one (Whisper gives such words, often of zero
    length: a sentence's last word whose sound it placed late) joins the speech before the
    silence, keeping its length where its neighbour leaves room, unless it starts the clip or a
    sentence (the word before it ends in ``.``, ``?`` or ``!``, perhaps before a closing quote,
    and is no abbreviation such as ``Mr.``): then the speech after it. A
    silence at either end of the clip has no speech on that side, so such a word goes the other
    way (and stays where it is in a clip without speech). Words stay in order, inside
    ``[0, duration]``, and never overlap a neighbour more than they did.

    Args:
        words: ``{start, end, ...}`` in time order, seconds in the clip ``silent`` was found in.
        silent: ``(k, 2)`` seconds, in time order, not overlapping.
        duration: the clip's length in seconds (None: unbounded).
    """
    if not len(silent) or not words:
        return
    limit = math.inf if duration is None else float(duration)
    silent = np.minimum(np.asarray(silent, dtype=np.float64), limit)
    starts = silent[:, 0]
    for k, w in enumerate(words):
        start, end = float(w["start"]), float(w["end"])
        i = int(np.searchsorted(starts, start, side="right")) - 1  # the silence starting before
        if i >= 0 and start < silent[i, 1]:
            a, b = float(silent[i, 0]), float(silent[i, 1])
            if end <= b:  # wholly silent: to the speech before, or after
                length = end - start
                previous = str(words[k - 1].get("word", "")) if k else ""
                # Order is kept: a word after one that went forward past this silence follows.
                can_back = a > 0 and (k == 0 or float(words[k - 1]["end"]) <= a)
                can_forward = b < limit
                wants_back = k > 0 and not _ends_sentence(previous)
                if can_back and (wants_back or not can_forward):
                    before = float(words[k - 1]["end"]) if k else 0.0
                    start, end = max(a - length, min(before, a)), a
                elif can_forward:
                    after = float(words[k + 1]["start"]) if k + 1 < len(words) else b + length
                    start, end = b, max(b, min(b + length, after, limit))
            else:
                start = b
        j = int(np.searchsorted(starts, end, side="left")) - 1  # the silence starting before end
        if j >= 0 and silent[j, 0] > start and end <= silent[j, 1]:
            end = float(silent[j, 0])
        start, end = min(start, limit), min(max(end, start), limit)
        w["start"], w["end"] = round(start, 3), round(end, 3)
