"""Evaluation helpers: how the tests and benchmarks score voxflow's operators (SI-SDR, speech
mixed with noise at a known SNR, synthetic noises, word error rate, word timings against an
STM). No job uses them; the
pipelines' own measurements (blind SNR estimates, quality scores) live with their operators.
DER is scored in :mod:`pipelines.reports.evaluate`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from audio_ops.transcription import normalize_transcript


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al., 2019).

    Both signals are made zero-mean; the reference is scaled to best fit the estimate and the
    rest of the estimate counts as distortion.

    Args:
        reference: the clean signal, 1-D.
        estimate: the signal to score, same length.

    Returns:
        SI-SDR in dB (``inf`` for an exact scaled copy).

    Raises:
        ValueError: different lengths, or a silent reference.
    """
    reference = np.asarray(reference, dtype=np.float64).reshape(-1)
    estimate = np.asarray(estimate, dtype=np.float64).reshape(-1)
    if reference.shape != estimate.shape:
        raise ValueError(f"lengths differ: reference {reference.size}, estimate {estimate.size}")
    reference = reference - reference.mean()
    estimate = estimate - estimate.mean()
    energy = float(np.dot(reference, reference))
    if energy <= 0:
        raise ValueError("the reference is silent: SI-SDR is undefined")
    target = (float(np.dot(estimate, reference)) / energy) * reference
    distortion = float(np.sum((estimate - target) ** 2))
    signal = float(np.sum(target**2))
    if distortion <= 0:
        return math.inf
    if signal <= 0:
        return -math.inf
    return 10.0 * math.log10(signal / distortion)


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``clean + g * noise`` with ``g`` set so that the mean powers stand at ``snr_db``.

    Args:
        clean: the speech, 1-D.
        noise: the noise, at least as long as ``clean`` (the start is used).
        snr_db: wanted ratio of clean to noise power over the whole signal, dB.
    """
    clean = np.asarray(clean, dtype=np.float32).reshape(-1)
    noise = np.asarray(noise, dtype=np.float32).reshape(-1)
    if noise.size < clean.size:
        raise ValueError("noise is shorter than clean")
    noise = noise[: clean.size].astype(np.float64)
    clean_power = float(np.mean(clean.astype(np.float64) ** 2))
    noise_power = float(np.mean(noise**2))
    if noise_power <= 0:
        raise ValueError("noise is silent")
    gain = math.sqrt(clean_power / (noise_power * 10 ** (snr_db / 10)))
    return (clean + gain * noise).astype(np.float32)


def synthetic_noise(
    kind: str, num_samples: int, sample_rate: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """A synthetic noise signal of unit RMS, float32.

    Args:
        kind: ``white``; ``pink`` (1/f power above 20 Hz); ``music`` (three voices of harmonic
            notes from a major scale, 0.4 s each, plucked envelope); ``hum50`` / ``hum60`` (mains
            hum: the fundamental and 10 harmonics, slowly falling amplitudes).
        num_samples: length.
        sample_rate: rate in Hz.
        rng: random source (a fixed seed by default).
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    n = int(num_samples)
    t = np.arange(n) / sample_rate
    if kind == "white":
        out = rng.standard_normal(n)
    elif kind == "pink":
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
        spectrum /= np.sqrt(np.maximum(freqs, 20.0))
        spectrum[freqs < 20.0] = 0
        out = np.fft.irfft(spectrum, n)
    elif kind == "music":
        out = np.zeros(n)
        note = max(1, int(0.4 * sample_rate))
        scale = np.array([0, 2, 4, 5, 7, 9, 11, 12])
        for voice in range(3):
            for start in range(0, n, note):
                f0 = 110.0 * 2 ** (voice + scale[rng.integers(len(scale))] / 12)
                span = slice(start, min(start + note, n))
                tt = t[span] - t[start]
                envelope = np.minimum(1.0, tt / 0.01) * np.exp(-3.0 * tt)
                for h in range(1, 6):
                    if f0 * h < sample_rate / 2:
                        phase = rng.uniform(0, 2 * np.pi)
                        out[span] += envelope * np.sin(2 * np.pi * f0 * h * tt + phase) / h
    elif kind in ("hum50", "hum60"):
        base = 50.0 if kind == "hum50" else 60.0
        out = np.zeros(n)
        for h in range(1, 12):
            if base * h < sample_rate / 2:
                out += np.sin(2 * np.pi * base * h * t + rng.uniform(0, 2 * np.pi)) / h**0.7
    else:
        raise ValueError(f"unknown noise kind {kind!r} (white, pink, music, hum50, hum60)")
    out = out - out.mean()
    rms = float(np.sqrt(np.mean(out**2))) if n else 0.0
    return (out / rms if rms > 0 else out).astype(np.float32)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """``(edit distance in words, reference words)`` after :func:`normalize_transcript`.

    Args:
        reference: the true text.
        hypothesis: the recognised text.
    """
    ref = normalize_transcript(reference).split()
    hyp = normalize_transcript(hypothesis).split()
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1], len(ref)


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: total word edits over total reference words.

    Args:
        references: true texts.
        hypotheses: recognised texts, aligned with ``references``.
    """
    if len(references) != len(hypotheses):
        raise ValueError("references and hypotheses differ in length")
    edits = words = 0
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        e, n = word_errors(reference, hypothesis)
        edits, words = edits + e, words + n
    return edits / max(words, 1)


#: Seconds of slack :func:`word_timing_scores` reports the share of words inside their utterance at.
WORD_TIME_TOLERANCES = (0.0, 0.1, 0.25)


def read_stm(path: str | os.PathLike[str]) -> list[tuple[float, float, str]]:
    """``(start, end, text)`` per utterance of an STM file, in time order."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 5 or line.startswith(";;"):
            continue
        rows.append((float(parts[3]), float(parts[4]), parts[5] if len(parts) > 5 else ""))
    return sorted(rows)


def align_words(ref: list[str], hyp: list[str]) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)`` of reference and hypothesis tokens aligned as a match or a
    substitution by a minimum edit-distance alignment."""
    n, m = len(ref), len(hyp)
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        cost[i][0] = i
    for j in range(m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i][j] = min(
                cost[i - 1][j] + 1,
                cost[i][j - 1] + 1,
                cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]),
            )
    pairs, i, j = [], n, m
    while i > 0 and j > 0:
        if cost[i][j] == cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i - 1][j] + 1:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def word_timing_scores(utterances: list[tuple[float, float, str]], words: list[dict]) -> dict:
    """WER of recognised ``words`` against STM ``utterances``, and the share of the recognised
    words aligned to a reference word (a match or a substitution) whose ``[start, end]`` lies
    inside that word's utterance, with each of :data:`WORD_TIME_TOLERANCES` seconds of slack.

    Args:
        utterances: ``(start, end, text)`` in time order (:func:`read_stm`).
        words: ``{"word", "start", "end"}`` in time order, seconds in the same recording.
    """
    ref_tokens, ref_utt = [], []
    for k, (_, _, text) in enumerate(utterances):
        tokens = normalize_transcript(text).split()
        ref_tokens += tokens
        ref_utt += [k] * len(tokens)
    hyp_tokens, hyp_word = [], []
    for k, w in enumerate(words):
        tokens = normalize_transcript(w["word"]).split()
        hyp_tokens += tokens
        hyp_word += [k] * len(tokens)
    edits, n = word_errors(" ".join(ref_tokens), " ".join(hyp_tokens))
    pairs = align_words(ref_tokens, hyp_tokens)
    inside = {}
    for tol in WORD_TIME_TOLERANCES:
        ok = 0
        for i, j in pairs:
            start, end, _ = utterances[ref_utt[i]]
            w = words[hyp_word[j]]
            ok += start - tol <= w["start"] and w["end"] <= end + tol
        inside[tol] = ok / len(pairs) if pairs else None
    return {
        "wer": edits / max(n, 1),
        "reference_words": n,
        "recognised_words": len(hyp_tokens),
        "aligned_words": len(pairs),
        "inside": inside,
    }


def words_in_speech(speech: Sequence[tuple[float, float]], words: Sequence[dict]) -> dict:
    """The share of ``words`` whose ``[start, end]`` lies inside one stretch of reference speech
    (the union of ``speech``, any speaker), with each of :data:`WORD_TIME_TOLERANCES` seconds
    of slack: a word placed in a pause, or reaching into one, is out. Needs no transcript, so
    it scores simulated conversations whose speech is known exactly.

    Args:
        speech: ``(start, end)`` seconds, in any order, overlapping or not.
        words: ``{"start", "end"}`` seconds in the same recording.
    """
    from audio_ops.diarization import merge_regions

    merged = merge_regions(np.asarray(speech, dtype=np.float64))
    starts = merged[:, 0]
    inside = {}
    for tol in WORD_TIME_TOLERANCES:
        ok = 0
        for w in words:
            # the last stretch starting at or before the word's start (with the slack)
            i = int(np.searchsorted(starts, w["start"] + tol + 1e-9, side="right")) - 1
            ok += i >= 0 and w["end"] <= merged[i][1] + tol + 1e-9
        inside[tol] = ok / len(words) if words else None
    return {"words": len(words), "inside": inside}
