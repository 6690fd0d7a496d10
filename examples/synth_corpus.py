#!/usr/bin/env python3
"""Synthetic multi-speaker conversation corpora with exact ground truth.

Stand-alone (no imports from the voxflow package): uses numpy, soundfile, soxr,
scipy and PyAV, and shells out to the offline TTS engines ``flite``,
``espeak-ng`` and ``text2wave`` (festival).

Every generated corpus has the layout::

    <root>/audio/...            audio files (any format / sample rate / nesting)
    <root>/rttm/<stem>.rttm     one RTTM per audio file (speaker = voice name)
    <root>/transcripts.jsonl    one line per turn: file, speaker, start, end, text
    <root>/manifest.csv         path (relative to root), speakers, duration, ...

Speaker labels are the voice names (e.g. ``flite_slt``, ``espeak_en-gb_m3``);
they are globally consistent, so the same label in two files is the same voice
(cross-file speaker identity ground truth).

Sub-commands::

    python examples/synth_corpus.py voices                      # verify voices
    python examples/synth_corpus.py sample --out examples/sample
    python examples/synth_corpus.py eval   --out DIR --n 20 --seed 0
    python examples/synth_corpus.py bench  --out DIR --hours 1 --seed 0
    python examples/synth_corpus.py check  --root DIR           # sanity checks
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy import signal

# --------------------------------------------------------------------------
# Voices
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Voice:
    """One TTS voice configuration.

    engine: "flite" | "espeak" | "festival".
    voice:  engine voice id (flite -voice, espeak-ng -v, festival voice proc).
    pitch / speed: espeak-ng ``-p`` / ``-s``.
    f0: festival (start, end) Hz of the DuffInt intonation contour.
    stretch: festival Duration_Stretch.
    """

    name: str
    engine: str
    voice: str
    gender: str
    pitch: int | None = None
    speed: int | None = None
    f0: tuple[int, int] | None = None
    stretch: float | None = None
    note: str = ""


# Acoustically distinct voices (checked on Debian/Ubuntu flite 2.2, espeak-ng 1.5x,
# festival 2.5 + festvox-kallpc16k).  Median F0 measured with a crude
# autocorrelation tracker is given in ``note``.  flite "kal" (8 kHz) is left out
# in favour of kal16; flite "awb_time" is a limited-domain (clock) voice;
# espeak-ng mbrola voices (mb-us1 ...) need the mbrola binary and are not used.
VOICES: list[Voice] = [
    Voice("flite_slt", "flite", "slt", "F", note="US female, ~170 Hz"),
    Voice("flite_awb", "flite", "awb", "M", note="Scottish male, ~130 Hz"),
    Voice("flite_rms", "flite", "rms", "M", note="US male, ~100 Hz"),
    Voice("flite_kal16", "flite", "kal16", "M", note="US male diphone, ~88 Hz"),
    Voice(
        "espeak_en-us_m1",
        "espeak",
        "en-us",
        "M",
        pitch=50,
        speed=165,
        note="espeak-ng US default male, ~103 Hz",
    ),
    Voice(
        "espeak_en-us_f3",
        "espeak",
        "en-us+f3",
        "F",
        pitch=70,
        speed=160,
        note="espeak-ng US female f3, high pitch ~250 Hz",
    ),
    Voice(
        "espeak_en-gb_m3",
        "espeak",
        "en-gb+m3",
        "M",
        pitch=30,
        speed=150,
        note="espeak-ng British male m3, low pitch ~86 Hz, slow",
    ),
    Voice(
        "espeak_en_f4",
        "espeak",
        "en+f4",
        "F",
        pitch=55,
        speed=175,
        note="espeak-ng female f4, ~180 Hz, fast",
    ),
    Voice(
        "espeak_en-029_f2",
        "espeak",
        "en-029+f2",
        "F",
        pitch=50,
        speed=155,
        note="espeak-ng Caribbean English female f2, ~197 Hz",
    ),
    Voice(
        "espeak_en-gb-scotland_m7",
        "espeak",
        "en-gb-scotland+m7",
        "M",
        pitch=40,
        speed=170,
        note="espeak-ng Scottish male m7, ~105 Hz",
    ),
    Voice(
        "espeak_en-us_klatt4",
        "espeak",
        "en-us+klatt4",
        "M",
        pitch=60,
        speed=160,
        note="espeak-ng Klatt formant synthesiser, ~110 Hz",
    ),
    Voice(
        "festival_kal_hi",
        "festival",
        "kal_diphone",
        "M",
        f0=(200, 170),
        stretch=1.15,
        note="festival kal (male) diphone pitched up to F0 ~200 Hz, slower",
    ),
]
VOICE_BY_NAME: dict[str, Voice] = {v.name: v for v in VOICES}


def get_voice(v: Voice | str) -> Voice:
    if isinstance(v, Voice):
        return v
    try:
        return VOICE_BY_NAME[v]
    except KeyError:
        raise KeyError(f"unknown voice {v!r}; known: {sorted(VOICE_BY_NAME)}") from None


# --------------------------------------------------------------------------
# Sentences
# --------------------------------------------------------------------------

SENTENCES: list[str] = [
    "Good morning, everyone, thanks for joining the call today.",
    "I think we should start with the budget before we talk about hiring.",
    "The train was delayed again, so I missed the first meeting.",
    "Could you send me the report by the end of the week?",
    "We tested the new version on three different machines last night.",
    "Honestly, I did not expect the results to be this good.",
    "The weather forecast says it will rain all weekend.",
    "My sister just adopted a small grey cat from the shelter.",
    "Let me check my calendar and get back to you this afternoon.",
    "The library closes at eight on weekdays and at five on Sundays.",
    "Have you tried the new bakery on the corner of Elm Street?",
    "I would rather walk, because the bus is always crowded at this hour.",
    "The museum is showing an exhibition about ancient maps.",
    "Please remember to turn off the lights when you leave the office.",
    "We need at least two more volunteers for the garden project.",
    "The printer on the second floor is out of paper again.",
    "Last summer we drove along the coast for almost two weeks.",
    "That sounds reasonable, but what happens if the supplier is late?",
    "The children built a huge sand castle near the water.",
    "I am not sure that the numbers in this table add up.",
    "Our flight leaves at six in the morning, so we will need a taxi.",
    "She plays the violin in a small orchestra on Thursday evenings.",
    "Can we move the review to Tuesday instead of Monday?",
    "The soup needs a little more salt and some fresh pepper.",
    "He has been learning to speak Japanese for about a year.",
    "The new bridge should be finished before the end of the month.",
    "If you have any questions, feel free to interrupt me at any time.",
    "The old oak tree in the park fell down during the storm.",
    "I usually read the news on my phone while I drink my coffee.",
    "There are seven boxes in the hallway that still need to be opened.",
    "We could organise a short workshop for the new colleagues.",
    "The concert was sold out within an hour.",
    "My grandfather repaired clocks for more than forty years.",
    "Do you know whether the pharmacy is open on public holidays?",
    "The recipe calls for three eggs, flour, butter and a pinch of sugar.",
    "Traffic on the main road was terrible this morning.",
    "I agree with you, although I think the timeline is too tight.",
    "The kids are going to a football camp next week.",
    "Remember that the deadline for the application is Friday at noon.",
    "We saw a family of deer at the edge of the forest.",
    "The battery on my laptop only lasts about two hours now.",
    "Would you like tea or coffee with your breakfast?",
    "The hotel room had a wonderful view over the harbour.",
    "I will summarise the main points at the end of the meeting.",
    "Our neighbours are painting their house bright yellow.",
    "The software update fixed the problem with the audio driver.",
    "It took us nearly an hour to find a parking space.",
    "My favourite season is autumn, when the leaves change colour.",
    "The committee will announce the winners on Saturday.",
    "Let us take a five minute break and then continue.",
    "The river flooded the lower part of the village last spring.",
    "He forgot his umbrella on the bus for the third time this month.",
    "We are planning a small party for her birthday in June.",
    "The doctor said I should drink more water and sleep longer.",
    "Thank you, that was a very helpful explanation.",
    "I have never seen so many stars as on that night in the desert.",
    "The shop on the high street sells fresh bread every morning.",
    "Could you speak a little louder, the connection is quite bad.",
    "The project will be reviewed again in three months.",
    "Yes, exactly, that is what I meant.",
    "Right, so shall we wrap up here and meet again next Thursday?",
    "I found an old photograph of our school in the attic.",
]


# --------------------------------------------------------------------------
# Synthesis
# --------------------------------------------------------------------------


def _to_mono_f32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    return x


def _tts_command(v: Voice, text_path: str, wav_path: str, tmp: str) -> list[str]:
    if v.engine == "flite":
        return ["flite", "-voice", v.voice, "-f", text_path, "-o", wav_path]
    if v.engine == "espeak":
        cmd = ["espeak-ng", "-v", v.voice]
        if v.pitch is not None:
            cmd += ["-p", str(v.pitch)]
        if v.speed is not None:
            cmd += ["-s", str(v.speed)]
        return cmd + ["-w", wav_path, "-f", text_path]
    if v.engine == "festival":
        scm = [f"(voice_{v.voice})"]
        if v.f0 is not None:
            scm += [
                f"(set! duffint_params '((start {v.f0[0]}) (end {v.f0[1]})))",
                "(Parameter.set 'Int_Method 'DuffInt)",
                "(Parameter.set 'Int_Target_Method Int_Targets_Default)",
            ]
        if v.stretch is not None:
            scm.append(f"(Parameter.set 'Duration_Stretch {v.stretch})")
        scm_path = os.path.join(tmp, "voice.scm")
        Path(scm_path).write_text("\n".join(scm) + "\n")
        return ["text2wave", "-eval", scm_path, "-o", wav_path, text_path]
    raise ValueError(f"unknown engine {v.engine!r}")


def synthesize_raw(voice: Voice | str, text: str) -> tuple[np.ndarray, int]:
    """Run the TTS engine; return (float32 mono, native sample rate)."""
    v = get_voice(voice)
    with tempfile.TemporaryDirectory(prefix="synth_") as tmp:
        text_path = os.path.join(tmp, "text.txt")
        wav_path = os.path.join(tmp, "out.wav")
        Path(text_path).write_text(text.strip() + "\n")
        cmd = _tts_command(v, text_path, wav_path, tmp)
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if res.returncode != 0 or not os.path.exists(wav_path):
            raise RuntimeError(f"TTS failed for {v.name}: {' '.join(cmd)}\n{res.stderr.strip()}")
        x, sr = sf.read(wav_path, dtype="float32", always_2d=False)
    x = _to_mono_f32(x)
    if x.size == 0:
        raise RuntimeError(f"TTS produced empty audio for {v.name}")
    return x, int(sr)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float32)
    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32)


def trim_silence(
    x: np.ndarray,
    sr: int,
    threshold_db: float = -40.0,
    frame_s: float = 0.005,
    fade_s: float = 0.004,
) -> np.ndarray:
    """Cut leading/trailing silence.

    Frames (5 ms) whose peak is below ``threshold_db`` relative to the
    utterance peak are silence.  The kept region spans the first to the last
    non-silent frame, refined to the first/last sample above the threshold, and
    gets a short fade in/out (inside the region) to avoid clicks.
    """
    x = np.asarray(x, dtype=np.float32)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak <= 0:
        return x[:0]
    thr = peak * 10 ** (threshold_db / 20)
    above = np.flatnonzero(np.abs(x) > thr)
    # ignore isolated spikes: require the frame around the sample to be loud too
    hop = max(1, int(frame_s * sr))
    n_frames = int(math.ceil(x.size / hop))
    pad = np.zeros(n_frames * hop, dtype=np.float32)
    pad[: x.size] = np.abs(x)
    frame_peak = pad.reshape(n_frames, hop).max(axis=1)
    loud = np.flatnonzero(frame_peak > thr)
    if loud.size == 0 or above.size == 0:
        return x[:0]
    first = max(int(above[0]), int(loud[0]) * hop)
    last = min(int(above[-1]), int(loud[-1]) * hop + hop - 1)
    y = x[first : last + 1].copy()
    nf = min(int(fade_s * sr), y.size // 4)
    if nf > 0:
        ramp = np.linspace(0.0, 1.0, nf, dtype=np.float32)
        y[:nf] *= ramp
        y[-nf:] *= ramp[::-1]
    return y


def active_rms(x: np.ndarray, sr: int, threshold_db: float = -35.0) -> float:
    """RMS over 20 ms frames that are within ``threshold_db`` of the loudest."""
    hop = max(1, int(0.02 * sr))
    n = x.size // hop
    if n == 0:
        return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0
    fr = x[: n * hop].astype(np.float64).reshape(n, hop)
    e = np.mean(fr**2, axis=1)
    keep = e > e.max() * 10 ** (threshold_db / 10)
    return float(np.sqrt(np.mean(e[keep])))


_CACHE: dict[tuple, np.ndarray] = {}
_DISK_CACHE: Path | None = None


def set_disk_cache(path: str | os.PathLike | None) -> None:
    """Optional on-disk cache of synthesized, trimmed utterances (.npy)."""
    global _DISK_CACHE
    _DISK_CACHE = Path(path) if path else None
    if _DISK_CACHE:
        _DISK_CACHE.mkdir(parents=True, exist_ok=True)


def synthesize(
    voice: Voice | str, text: str, sample_rate: int = 16000, trim: bool = True
) -> np.ndarray:
    """Synthesize ``text`` with ``voice``; float32 mono at ``sample_rate``.

    Leading/trailing silence is trimmed (``trim=True``) so that the returned
    samples start and end on speech.  Results are memoised (and cached on disk
    if :func:`set_disk_cache` was called).
    """
    v = get_voice(voice)
    key = (v, text, int(sample_rate), bool(trim))
    if key in _CACHE:
        return _CACHE[key]
    disk = None
    if _DISK_CACHE is not None:
        h = hashlib.sha1(repr(key).encode()).hexdigest()[:20]
        disk = _DISK_CACHE / f"{v.name}_{sample_rate}_{h}.npy"
        if disk.exists():
            y = np.load(disk)
            _CACHE[key] = y
            return y
    x, sr = synthesize_raw(v, text)
    y = resample(x, sr, sample_rate)
    if trim:
        y = trim_silence(y, sample_rate)
    y = np.ascontiguousarray(y, dtype=np.float32)
    _CACHE[key] = y
    if disk is not None:
        np.save(disk, y)
    return y


def check_voices(
    voices: Iterable[Voice | str] | None = None,
    text: str = "The quick brown fox jumps over the lazy dog.",
    verbose: bool = True,
) -> dict[str, str | None]:
    """Synthesize a test phrase with every voice; return {name: error or None}."""
    out: dict[str, str | None] = {}
    for v in voices or VOICES:
        v = get_voice(v)
        try:
            x, sr = synthesize_raw(v, text)
            dur = x.size / sr
            f0 = estimate_f0(resample(x, sr, 16000), 16000)
            ok = dur > 0.5 and np.max(np.abs(x)) > 0.01
            out[v.name] = None if ok else f"suspicious output ({dur:.2f}s)"
            if verbose:
                print(
                    f"{v.name:28s} {v.engine:8s} sr={sr:5d} dur={dur:5.2f}s "
                    f"medianF0={f0:6.1f}Hz {'OK' if ok else 'BAD'}"
                )
        except Exception as e:  # noqa: BLE001
            out[v.name] = str(e).splitlines()[0]
            if verbose:
                print(f"{v.name:28s} FAILED: {out[v.name]}")
    return out


def estimate_f0(x: np.ndarray, sr: int) -> float:
    """Crude median F0 (autocorrelation on loud 40 ms frames); for reporting."""
    fr, hop = int(0.04 * sr), int(0.02 * sr)
    lo, hi = int(sr / 400), int(sr / 60)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    f0s = []
    for i in range(0, x.size - fr, hop):
        w = x[i : i + fr].astype(np.float64)
        if np.sqrt(np.mean(w**2)) < 0.02 * peak:
            continue
        w = w - w.mean()
        ac = np.correlate(w, w, "full")[fr - 1 :]
        k = lo + int(np.argmax(ac[lo:hi]))
        if ac[0] > 0 and ac[k] > 0.4 * ac[0]:
            f0s.append(sr / k)
    return float(np.median(f0s)) if f0s else float("nan")


# --------------------------------------------------------------------------
# Noise
# --------------------------------------------------------------------------

NOISE_KINDS = ("pink", "brown", "white", "tones", "hum")


def make_noise(kind: str, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS background noise of ``n`` samples."""
    if kind == "white":
        y = rng.standard_normal(n)
    elif kind in ("pink", "brown"):
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1.0 / sr)
        f[0] = f[1] if n > 1 else 1.0
        spec *= 1.0 / (np.sqrt(f) if kind == "pink" else f)
        spec[f < 20] = 0.0  # no DC / sub-sonic drift
        y = np.fft.irfft(spec, n)
    elif kind == "tones":
        # music-like bed: a slow sequence of soft chords with smooth envelopes
        t = np.arange(n) / sr
        y = np.zeros(n)
        seg = int(2.0 * sr)
        roots = [220.0, 246.9, 196.0, 174.6, 261.6]
        for s in range(0, n, seg):
            root = roots[int(rng.integers(len(roots)))]
            e = min(n, s + seg + seg // 2)
            env = np.hanning(e - s)
            for ratio, amp in ((1.0, 1.0), (1.26, 0.7), (1.5, 0.6), (2.0, 0.3)):
                ph = rng.uniform(0, 2 * np.pi)
                y[s:e] += amp * env * np.sin(2 * np.pi * root * ratio * t[s:e] + ph)
        y += 0.05 * rng.standard_normal(n)
    elif kind == "hum":
        t = np.arange(n) / sr
        y = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 6.28)) / k for k in (1, 2, 3, 5))
        y = y + 0.3 * make_noise("pink", n, sr, rng)
    else:
        raise ValueError(f"unknown noise kind {kind!r}; use one of {NOISE_KINDS}")
    y = np.asarray(y, dtype=np.float64)
    rms = np.sqrt(np.mean(y**2))
    return (y / rms if rms > 0 else y).astype(np.float32)


def telephone_band(
    x: np.ndarray, sr: int, out_sr: int = 8000, band: tuple[float, float] = (300.0, 3400.0)
) -> tuple[np.ndarray, int]:
    """Resample to 8 kHz and band-limit to 300-3400 Hz (zero-phase)."""
    y = (
        resample(x, sr, out_sr)
        if x.ndim == 1
        else np.stack([resample(x[:, c], sr, out_sr) for c in range(x.shape[1])], axis=1)
    )
    sos = signal.butter(4, band, btype="bandpass", fs=out_sr, output="sos")
    y = signal.sosfiltfilt(sos, y, axis=0).astype(np.float32)
    return y, out_sr


# --------------------------------------------------------------------------
# Conversations
# --------------------------------------------------------------------------

Pool = dict[str, list[tuple[str, np.ndarray]]]


def build_pool(
    voices: Sequence[Voice | str],
    rng: np.random.Generator,
    per_voice: int = 16,
    sample_rate: int = 16000,
    sentences: Sequence[str] = SENTENCES,
) -> Pool:
    """Synthesize ``per_voice`` random sentences per voice once (for bench)."""
    pool: Pool = {}
    for v in voices:
        v = get_voice(v)
        idx = rng.choice(len(sentences), size=min(per_voice, len(sentences)), replace=False)
        pool[v.name] = [
            (sentences[i], synthesize(v, sentences[i], sample_rate)) for i in sorted(idx)
        ]
    return pool


def make_conversation(
    speakers: Sequence[Voice | str],
    duration_s: float,
    rng: np.random.Generator,
    *,
    sample_rate: int = 16000,
    overlap_prob: float = 0.0,
    overlap_range: tuple[float, float] = (0.3, 1.0),
    noise_snr_db: float | None = None,
    noise_kind: str = "pink",
    pause_range: tuple[float, float] = (0.3, 1.5),
    repeat_prob: float = 0.15,
    lead_in_range: tuple[float, float] = (0.3, 1.0),
    tail_s: float = 0.4,
    speaker_gain_db_range: tuple[float, float] = (-3.0, 3.0),
    channels: int = 1,
    pool: Pool | None = None,
    sentences: Sequence[str] = SENTENCES,
) -> tuple[np.ndarray, list[dict]]:
    """Compose a conversation of exactly ``duration_s`` seconds.

    Returns ``(audio, turns)``: audio is float32, shape (n,) for ``channels=1``
    or (n, 2) for ``channels=2`` (each speaker panned differently, with a tiny
    per-speaker inter-channel delay); ``turns`` is a time-sorted list of
    ``{"speaker", "start", "end", "text"}`` with start/end in seconds on the
    trimmed speech (so they match the audible speech).

    Turn-taking: the first round visits every speaker once (random order);
    afterwards the next speaker is a different random speaker, except with
    probability ``repeat_prob`` the same speaker speaks again.  Pauses between
    turns are uniform in ``pause_range``.  With probability ``overlap_prob`` a
    turn by a *different* speaker starts ``overlap_range`` seconds before the
    previous one ends (never more than 60% of either turn; never three-way).
    """
    vs = [get_voice(s) for s in speakers]
    if len(vs) == 0:
        raise ValueError("need at least one speaker")
    if len({v.name for v in vs}) != len(vs):
        raise ValueError("speakers must be distinct")
    sr = int(sample_rate)
    n_total = int(round(duration_s * sr))
    gains = {v.name: 10 ** (rng.uniform(*speaker_gain_db_range) / 20) for v in vs}
    target_rms = 10 ** (-22.0 / 20)
    pans = {}
    if channels == 2:
        positions = np.linspace(-0.7, 0.7, len(vs)) if len(vs) > 1 else np.zeros(1)
        for v, p in zip(vs, rng.permutation(positions), strict=True):
            pans[v.name] = (float(p), int(rng.integers(0, int(0.0005 * sr) + 1)))

    used: set[tuple[str, str]] = set()

    def pick_utterance(v: Voice, exclude: set[str]) -> tuple[str, np.ndarray]:
        if pool is not None:
            cands = [(t, a) for t, a in pool[v.name] if t not in exclude]
            cands = cands or pool[v.name]
            fresh = [c for c in cands if (v.name, c[0]) not in used] or cands
            t, a = fresh[int(rng.integers(len(fresh)))]
            return t, a
        texts = [t for t in sentences if t not in exclude]
        fresh = [t for t in texts if (v.name, t) not in used] or texts
        t = fresh[int(rng.integers(len(fresh)))]
        return t, synthesize(v, t, sr)

    order = list(rng.permutation(len(vs)))
    turns: list[dict] = []  # with sample offsets
    prev: dict | None = None
    prev_overlapped = False
    t_next = int(rng.uniform(*lead_in_range) * sr)
    limit = n_total - int(tail_s * sr)
    recent_texts: list[str] = []
    failures = 0
    while failures < 6:
        if len(turns) < len(vs):
            v = vs[order[len(turns)]]
        elif prev is not None and len(vs) > 1 and rng.random() >= repeat_prob:
            others = [x for x in vs if x.name != prev["speaker"]]
            v = others[int(rng.integers(len(others)))]
        else:
            v = vs[int(rng.integers(len(vs)))] if prev is None else get_voice(prev["speaker"])
        text, utt = pick_utterance(v, set(recent_texts[-6:]))
        if utt.size == 0:
            failures += 1
            continue
        start = t_next
        overlapped = False
        if (
            prev is not None
            and v.name != prev["speaker"]
            and not prev_overlapped
            and rng.random() < overlap_prob
        ):
            prev_len = prev["e"] - prev["s"]
            ov = int(rng.uniform(*overlap_range) * sr)
            ov = min(ov, int(0.6 * prev_len), int(0.6 * utt.size))
            if ov > int(0.1 * sr):
                start = prev["e"] - ov
                overlapped = True
        if start + utt.size > limit:
            failures += 1  # try another (shorter) sentence / speaker
            continue
        turn = {"speaker": v.name, "text": text, "s": start, "e": start + utt.size, "audio": utt}
        turns.append(turn)
        used.add((v.name, text))
        recent_texts.append(text)
        prev, prev_overlapped = turn, overlapped
        t_next = max(t["e"] for t in turns) + int(rng.uniform(*pause_range) * sr)
        failures = 0

    # mix
    out = np.zeros((n_total, channels), dtype=np.float64)
    for t in turns:
        a = t["audio"].astype(np.float64)
        a = a * (target_rms * gains[t["speaker"]] / max(active_rms(a, sr), 1e-9))
        if channels == 1:
            out[t["s"] : t["e"], 0] += a
        else:
            pan, delay = pans[t["speaker"]]
            theta = (pan + 1.0) * np.pi / 4  # constant-power pan
            gl, gr = np.cos(theta), np.sin(theta)
            # delay the farther channel by ``delay`` samples (<0.5 ms)
            dl, dr = (delay, 0) if pan > 0 else (0, delay)
            for ch, g, d in ((0, gl, dl), (1, gr, dr)):
                seg = a[: a.size - d] if d else a
                out[t["s"] + d : t["e"], ch] += g * seg

    if noise_snr_db is not None and turns:
        mask = np.zeros(n_total, dtype=bool)
        for t in turns:
            mask[t["s"] : t["e"]] = True
        p_speech = float(np.mean(out[mask] ** 2))
        scale = math.sqrt(p_speech / 10 ** (noise_snr_db / 10))
        for ch in range(channels):
            out[:, ch] += scale * make_noise(noise_kind, n_total, sr, rng)

    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if peak > 0.95:
        out *= 0.95 / peak
    audio = out[:, 0] if channels == 1 else out
    turns_out = [
        {
            "speaker": t["speaker"],
            "start": round(t["s"] / sr, 3),
            "end": round(t["e"] / sr, 3),
            "text": t["text"],
        }
        for t in sorted(turns, key=lambda t: t["s"])
    ]
    return audio.astype(np.float32), turns_out


# --------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------


def write_rttm(path: str | os.PathLike, file_stem: str, turns: Sequence[dict]) -> None:
    """Standard RTTM: SPEAKER <file> 1 <start> <dur> <NA> <NA> <spk> <NA> <NA>."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for t in sorted(turns, key=lambda t: (t["start"], t["end"])):
            dur = t["end"] - t["start"]
            f.write(
                f"SPEAKER {file_stem} 1 {t['start']:.3f} {dur:.3f} "
                f"<NA> <NA> {t['speaker']} <NA> <NA>\n"
            )


def read_rttm(path: str | os.PathLike) -> list[dict]:
    turns = []
    for line in Path(path).read_text().splitlines():
        p = line.split()
        if not p or p[0] != "SPEAKER":
            continue
        if len(p) < 10:
            raise ValueError(f"bad RTTM line in {path}: {line!r}")
        s, d = float(p[3]), float(p[4])
        turns.append({"file": p[1], "start": s, "end": s + d, "speaker": p[7]})
    return turns


def transcript_rows(rel_path: str, turns: Sequence[dict]) -> list[dict]:
    return [
        {
            "file": rel_path,
            "speaker": t["speaker"],
            "start": t["start"],
            "end": t["end"],
            "text": t["text"],
        }
        for t in turns
    ]


def write_transcripts(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


MANIFEST_FIELDS = [
    "path",
    "speakers",
    "duration",
    "sample_rate",
    "channels",
    "format",
    "num_turns",
    "overlap",
    "noise",
    "condition",
]


def write_manifest(path: str | os.PathLike, rows: Sequence[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)


def _write_mp3_av(path: Path, audio: np.ndarray, sr: int, bitrate: int) -> None:
    import av  # PyAV

    x = audio if audio.ndim == 2 else audio[:, None]
    layout = "mono" if x.shape[1] == 1 else "stereo"
    with av.open(str(path), "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=sr, layout=layout)
        stream.bit_rate = bitrate
        planar = np.ascontiguousarray(x.T.astype(np.float32))
        hop = 1152 * 8
        pts = 0
        for i in range(0, planar.shape[1], hop):
            chunk = np.ascontiguousarray(planar[:, i : i + hop])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = sr
            frame.pts = pts
            pts += chunk.shape[1]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def _write_mp3_ffmpeg(path: Path, audio: np.ndarray, sr: int, bitrate: int) -> None:
    ch = 1 if audio.ndim == 1 else audio.shape[1]
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format="WAV", subtype="FLOAT")
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "wav",
            "-i",
            "pipe:0",
            "-ac",
            str(ch),
            "-c:a",
            "libmp3lame",
            "-b:a",
            str(bitrate),
            str(path),
        ],
        input=buf.getvalue(),
        check=True,
    )


def write_audio(
    path: str | os.PathLike,
    audio: np.ndarray,
    sr: int,
    fmt: str | None = None,
    *,
    mp3_bitrate: int | None = None,
    ogg_quality: float = 0.3,
) -> None:
    """Write float32 audio (n,) or (n, ch): flac/wav (PCM_16), ogg (Vorbis), mp3.

    MP3 goes through PyAV (libmp3lame), falling back to the ffmpeg CLI.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    audio = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    if fmt in ("flac", "wav"):
        sf.write(path, audio, sr, format=fmt.upper(), subtype="PCM_16")
    elif fmt == "ogg":
        # compression_level 0..1 maps to Vorbis quality 1..0 in libsndfile.
        # Write in blocks: libsndfile 1.2.x segfaults on large single Vorbis writes.
        ch = 1 if audio.ndim == 1 else audio.shape[1]
        with sf.SoundFile(
            path, "w", sr, ch, format="OGG", subtype="VORBIS", compression_level=1.0 - ogg_quality
        ) as f:
            for i in range(0, audio.shape[0], 16384):
                f.write(audio[i : i + 16384])
    elif fmt == "mp3":
        ch = 1 if audio.ndim == 1 else audio.shape[1]
        br = mp3_bitrate or (32000 if sr <= 16000 else 48000 if sr <= 24000 else 64000) * ch
        try:
            _write_mp3_av(path, audio, sr, br)
        except Exception as e:  # noqa: BLE001
            print(f"PyAV mp3 encode failed ({e}); using ffmpeg CLI", file=sys.stderr)
            _write_mp3_ffmpeg(path, audio, sr, br)
    else:
        raise ValueError(f"unsupported format {fmt!r}")


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode any produced file to float32 (n, ch); soundfile first, then PyAV."""
    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return x, int(sr)
    except Exception:  # noqa: BLE001
        import av

        with av.open(str(path)) as c:
            st = c.streams.audio[0]
            chunks = [fr.to_ndarray() for fr in c.decode(st)]
            sr = st.codec_context.sample_rate
        x = np.concatenate(chunks, axis=1)
        if x.dtype != np.float32:
            x = x.astype(np.float32) / (np.iinfo(x.dtype).max if x.dtype.kind == "i" else 1)
        return x.T, int(sr)


# --------------------------------------------------------------------------
# Corpus writer
# --------------------------------------------------------------------------


@dataclass
class FileSpec:
    rel_path: str  # relative to <root>, e.g. "audio/conv01.flac"
    speakers: list[str]
    duration_s: float
    sample_rate: int = 16000  # output sample rate
    channels: int = 1
    overlap_prob: float = 0.0
    noise_snr_db: float | None = None
    noise_kind: str = "pink"
    telephone: bool = False
    description: str = ""


class CorpusWriter:
    def __init__(self, root: str | os.PathLike, clean: bool = True):
        self.root = Path(root)
        if clean:
            for sub in ("audio", "rttm"):
                if (self.root / sub).exists():
                    shutil.rmtree(self.root / sub)
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest: list[dict] = []
        self.transcripts: list[dict] = []
        self.stems: set[str] = set()

    def add(
        self,
        spec: FileSpec,
        rng: np.random.Generator,
        pool: Pool | None = None,
        synth_sr: int | None = None,
    ) -> dict:
        stem = Path(spec.rel_path).stem
        if stem in self.stems:
            raise ValueError(f"duplicate stem {stem}")
        self.stems.add(stem)
        # compose at 16 kHz for telephone / pool-based files, else at output rate
        if synth_sr is None:
            synth_sr = 16000 if (spec.telephone or pool is not None) else spec.sample_rate
        audio, turns = make_conversation(
            spec.speakers,
            spec.duration_s,
            rng,
            sample_rate=synth_sr,
            overlap_prob=spec.overlap_prob,
            noise_snr_db=spec.noise_snr_db,
            noise_kind=spec.noise_kind,
            channels=spec.channels,
            pool=pool,
        )
        sr = synth_sr
        if spec.telephone:
            audio, sr = telephone_band(audio, sr)
        if sr != spec.sample_rate:
            audio = (
                resample(audio, sr, spec.sample_rate)
                if audio.ndim == 1
                else np.stack(
                    [resample(audio[:, c], sr, spec.sample_rate) for c in range(audio.shape[1])],
                    axis=1,
                )
            )
            sr = spec.sample_rate
        write_audio(self.root / spec.rel_path, audio, sr)
        write_rttm(self.root / "rttm" / f"{stem}.rttm", stem, turns)
        self.transcripts += transcript_rows(spec.rel_path, turns)
        conds = []
        if spec.overlap_prob > 0:
            conds.append("overlap")
        if spec.noise_snr_db is not None:
            conds.append(f"noise:{spec.noise_kind}@{spec.noise_snr_db:g}dB")
        if spec.telephone:
            conds.append("telephone")
        if spec.channels == 2:
            conds.append("stereo")
        row = {
            "path": spec.rel_path,
            "speakers": ";".join(sorted({t["speaker"] for t in turns})),
            "duration": f"{audio.shape[0] / sr:.3f}",
            "sample_rate": sr,
            "channels": spec.channels,
            "format": Path(spec.rel_path).suffix.lstrip("."),
            "num_turns": len(turns),
            "overlap": int(_count_overlaps(turns)),
            "noise": "none"
            if spec.noise_snr_db is None
            else f"{spec.noise_kind}@{spec.noise_snr_db:g}dB",
            "condition": "+".join(conds) or "clean",
        }
        self.manifest.append(row)
        return row

    def finish(self) -> None:
        write_manifest(self.root / "manifest.csv", self.manifest)
        write_transcripts(self.root / "transcripts.jsonl", self.transcripts)


def _count_overlaps(turns: Sequence[dict]) -> int:
    ts = sorted(turns, key=lambda t: t["start"])
    n, end = 0, -1.0
    for t in ts:
        if t["start"] < end:
            n += 1
        end = max(end, t["end"])
    return n


# --------------------------------------------------------------------------
# Sub-commands
# --------------------------------------------------------------------------

SAMPLE_SEED = 20240611
SAMPLE_SPECS = [
    FileSpec(
        "audio/conv01_clean_3spk.flac",
        ["flite_slt", "espeak_en-gb_m3", "flite_awb"],
        45.0,
        description="clean 3-speaker conversation, 16 kHz mono FLAC",
    ),
    FileSpec(
        "audio/conv02_noisy_2spk.flac",
        ["flite_awb", "espeak_en-us_f3"],
        40.0,
        noise_snr_db=12.0,
        noise_kind="pink",
        description="2 speakers with pink background noise at 12 dB SNR, 16 kHz mono FLAC",
    ),
    FileSpec(
        "audio/conv03_overlap_4spk.flac",
        ["flite_slt", "festival_kal_hi", "espeak_en-gb_m3", "flite_rms"],
        50.0,
        overlap_prob=0.5,
        description="4 speakers with some short overlapping turns, clean, 16 kHz mono FLAC",
    ),
    FileSpec(
        "audio/conv04_mp3_2spk.mp3",
        ["espeak_en-us_f3", "flite_rms"],
        35.0,
        description="clean 2-speaker conversation, 16 kHz mono MP3 (32 kbit/s)",
    ),
    FileSpec(
        "audio/conv05_stereo44k_3spk.ogg",
        ["flite_slt", "festival_kal_hi", "flite_awb"],
        35.0,
        sample_rate=44100,
        channels=2,
        description="clean 3-speaker conversation, 44.1 kHz stereo Ogg Vorbis, "
        "speakers panned left/centre/right",
    ),
]


def cmd_sample(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    w = CorpusWriter(args.out)
    for spec in SAMPLE_SPECS:
        row = w.add(spec, np.random.default_rng(rng.integers(2**32)))
        print(
            f"{row['path']:40s} {row['duration']:>8s}s  {row['condition']:20s} "
            f"{row['num_turns']} turns  {row['speakers']}"
        )
    w.finish()
    _write_sample_readme(Path(args.out), w.manifest, args.seed)


def _write_sample_readme(root: Path, manifest: list[dict], seed: int) -> None:
    desc = {s.rel_path: s.description for s in SAMPLE_SPECS}
    used: dict[str, list[str]] = {}
    for r in manifest:
        for s in r["speakers"].split(";"):
            used.setdefault(s, []).append(Path(r["path"]).stem)
    lines = [
        "# voxflow bundled sample corpus",
        "",
        "Small synthetic multi-speaker corpus with exact ground truth, for smoke",
        "tests, examples and cross-file speaker-identity checks. All speech is",
        "synthesized offline with flite, espeak-ng and festival; nothing is",
        "recorded. Regenerate with (from the repository root):",
        "",
        "```",
        "python examples/synth_corpus.py sample --out examples/sample"
        + ("" if seed == SAMPLE_SEED else f" --seed {seed}"),
        "```",
        "",
        f"(default seed {SAMPLE_SEED}; output is deterministic for a given set of",
        "TTS engine versions; the Ogg file's bytes differ between runs because",
        "libsndfile picks a random Ogg stream serial number, its decoded audio does",
        "not). Requirements: numpy, soundfile, soxr, scipy, av",
        "(PyAV), and the `flite`, `espeak-ng` and `text2wave` (festival +",
        "festvox-kallpc16k) executables.",
        "",
        "## Files",
        "",
        "| file | duration (s) | rate / channels | speakers | what |",
        "|---|---|---|---|---|",
    ]
    for r in manifest:
        lines.append(
            f"| `{r['path']}` | {float(r['duration']):.1f} | "
            f"{r['sample_rate']} Hz / {r['channels']} ch | "
            f"{r['speakers'].replace(';', ', ')} | {desc[r['path']]} |"
        )
    lines += [
        "",
        "Ground truth:",
        "",
        "* `rttm/<stem>.rttm` - one standard RTTM per audio file "
        "(`SPEAKER <stem> 1 <start> <dur> <NA> <NA> <speaker> <NA> <NA>`).",
        "* `transcripts.jsonl` - one JSON object per turn: "
        "`file`, `speaker`, `start`, `end`, `text`.",
        "* `manifest.csv` - `path` (relative to this folder), `speakers` "
        "(`;`-separated), `duration` (s), `sample_rate`, `channels`, `format`, "
        "`num_turns`, `overlap` (number of turns starting inside another), "
        "`noise`, `condition`.",
        "",
        "Speaker labels are voice names and are **globally consistent**: the same",
        "label in two files is the same synthetic voice, so these files can be",
        "used to evaluate cross-file (global) speaker identities.",
        "Turn boundaries are accurate to a few ms: every synthesized utterance is trimmed of",
        "leading/trailing silence (-40 dB re. peak) before it is placed, so RTTM",
        "start/end coincide with audible speech. Pauses between turns are",
        "0.3-1.5 s of digital silence in the clean files; `conv03` has short",
        "overlaps (a turn starts 0.3-1.0 s before the previous one ends).",
        "",
        "## Voices",
        "",
        "| voice (RTTM label) | engine | settings | files |",
        "|---|---|---|---|",
    ]
    for name in sorted(used):
        v = VOICE_BY_NAME[name]
        settings = {
            "flite": f"flite -voice {v.voice}",
            "espeak": f"espeak-ng -v {v.voice} -p {v.pitch} -s {v.speed}",
            "festival": f"text2wave, voice_{v.voice}, DuffInt F0 "
            f"{v.f0[0] if v.f0 else ''}-{v.f0[1] if v.f0 else ''} Hz, "
            f"Duration_Stretch {v.stretch}",
        }[v.engine]
        lines.append(f"| `{name}` | {v.engine} | {settings} ({v.note}) | {', '.join(used[name])} |")
    lines += [
        "",
        "The same script also generates larger corpora (not bundled):",
        "",
        "```",
        "python examples/synth_corpus.py eval  --out /tmp/voxflow_eval  --n 20 --seed 0",
        "python examples/synth_corpus.py bench --out /tmp/voxflow_bench --hours 1 --seed 0",
        "python examples/synth_corpus.py check --root examples/sample",
        "```",
        "",
    ]
    (root / "README.md").write_text("\n".join(lines))


def _working_voices(names: Sequence[str] | None) -> list[Voice]:
    vs = [get_voice(n) for n in names] if names else list(VOICES)
    status = check_voices(vs, verbose=False)
    bad = [n for n, e in status.items() if e]
    for n in bad:
        print(f"warning: voice {n} does not work here, skipped: {status[n]}", file=sys.stderr)
    ok = [v for v in vs if not status[v.name]]
    if len(ok) < 2:
        raise SystemExit("fewer than two working voices")
    return ok


def cmd_eval(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    if args.cache:
        set_disk_cache(args.cache)
    voices = _working_voices(args.voices)
    w = CorpusWriter(args.out)
    for i in range(args.n):
        frng = np.random.default_rng(rng.integers(2**32))
        k = int(frng.integers(2, min(5, len(voices)) + 1))
        spk = [voices[j].name for j in frng.choice(len(voices), k, replace=False)]
        dur = float(np.round(frng.uniform(args.min_minutes, args.max_minutes) * 60, 1))
        r = frng.random()
        telephone = r < 0.2
        stereo = 0.2 <= r < 0.4
        spec = FileSpec(
            rel_path="",
            speakers=spk,
            duration_s=dur,
            sample_rate=8000 if telephone else 44100 if stereo else 16000,
            channels=2 if stereo else 1,
            overlap_prob=float(frng.choice([0.0, 0.0, 0.1, 0.2])),
            noise_snr_db=(float(frng.choice([5, 10, 15, 20])) if frng.random() < 0.35 else None),
            noise_kind=str(frng.choice(NOISE_KINDS)),
            telephone=telephone,
        )
        fmt = "wav" if telephone else "flac"
        spec.rel_path = f"audio/eval_{i:03d}.{fmt}"
        row = w.add(spec, frng, synth_sr=16000)
        print(
            f"{row['path']:28s} {row['duration']:>8s}s {row['condition']:30s} {row['speakers']}",
            flush=True,
        )
    w.finish()


BENCH_FORMATS = ("flac", "wav", "ogg", "mp3")
BENCH_RATES = (8000, 16000, 22050, 44100, 48000)
BENCH_DIRS = ("a", "a/b", "a/b/c", "set1/day01", "set1/day02", "set2/x/y")


def cmd_bench(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    if args.cache:
        set_disk_cache(args.cache)
    voices = _working_voices(args.voices)
    print(f"building utterance pool: {len(voices)} voices x {args.per_voice}", flush=True)
    pool = build_pool(voices, rng, per_voice=args.per_voice)
    w = CorpusWriter(args.out)
    total, target, i = 0.0, args.hours * 3600.0, 0
    while total < target:
        frng = np.random.default_rng(rng.integers(2**32))
        k = int(frng.integers(2, min(5, len(voices)) + 1))
        spk = [voices[j].name for j in frng.choice(len(voices), k, replace=False)]
        dur = float(np.round(frng.uniform(args.min_minutes, args.max_minutes) * 60, 1))
        dur = max(20.0, min(dur, target - total + 5.0))
        fmt = str(frng.choice(BENCH_FORMATS))
        sr = int(frng.choice(BENCH_RATES))
        stereo = frng.random() < 0.15
        spec = FileSpec(
            rel_path=f"audio/{frng.choice(BENCH_DIRS)}/bench_{i:05d}.{fmt}",
            speakers=spk,
            duration_s=dur,
            sample_rate=sr,
            channels=2 if stereo else 1,
            overlap_prob=float(frng.choice([0.0, 0.1, 0.2])),
            noise_snr_db=(float(frng.choice([10, 15, 20])) if frng.random() < 0.3 else None),
            noise_kind=str(frng.choice(NOISE_KINDS)),
            telephone=(sr == 8000 and frng.random() < 0.5),
        )
        row = w.add(spec, frng, pool=pool)
        total += float(row["duration"])
        i += 1
        print(f"{row['path']:36s} {row['duration']:>8s}s total {total / 3600:6.3f} h", flush=True)
    w.finish()


def check_corpus(root: str | os.PathLike, verbose: bool = True) -> list[str]:
    """Sanity-check a generated corpus; returns a list of problems.

    For every manifest row: decode the audio, compare duration / rate /
    channels, parse the RTTM, check turns lie inside the file, every turn has
    speech energy (also in its first and last 30 ms), and - for files without
    background noise - that the gaps between turns are near-silent.
    """
    root = Path(root)
    problems: list[str] = []
    with open(root / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    trs = [json.loads(line) for line in (root / "transcripts.jsonl").read_text().splitlines()]
    for r in rows:
        p = root / r["path"]
        x, sr = read_audio(p)
        dur = x.shape[0] / sr
        stem = p.stem
        turns = read_rttm(root / "rttm" / f"{stem}.rttm")
        n_tr = sum(1 for t in trs if t["file"] == r["path"])
        mono = x.mean(axis=1)
        lossy = r["format"] in ("mp3", "ogg")
        noisy = r["noise"] != "none"

        def db(a: np.ndarray) -> float:
            return 10 * math.log10(float(np.mean(a.astype(np.float64) ** 2)) + 1e-20)

        prob = []
        if abs(dur - float(r["duration"])) > 0.06:
            prob.append(f"duration {dur:.3f} != manifest {r['duration']}")
        if sr != int(r["sample_rate"]) or x.shape[1] != int(r["channels"]):
            prob.append(f"sr/ch {sr}/{x.shape[1]} != manifest")
        if len(turns) != n_tr or len(turns) != int(r["num_turns"]):
            prob.append(f"turn counts rttm={len(turns)} jsonl={n_tr}")
        if {t["speaker"] for t in turns} != set(r["speakers"].split(";")):
            prob.append("speaker set mismatch")
        mask = np.zeros(mono.size, dtype=bool)
        min_turn_db, min_edge_db = 0.0, 0.0
        for t in turns:
            if t["file"] != stem:
                prob.append(f"rttm file id {t['file']} != {stem}")
            if not (0 <= t["start"] < t["end"] <= dur + 1e-3):
                prob.append(f"turn outside file: {t}")
                continue
            s, e = int(t["start"] * sr), int(t["end"] * sr)
            mask[s:e] = True
            w = int(0.03 * sr)
            tdb = db(mono[s:e])
            edb = min(db(mono[s : s + w]), db(mono[e - w : e]))
            min_turn_db, min_edge_db = min(min_turn_db, tdb), min(min_edge_db, edb)
            if tdb < -40:
                prob.append(f"turn {t['start']:.2f}-{t['end']:.2f} quiet ({tdb:.1f} dB)")
            if edb < (-80 if lossy or "telephone" in r["condition"] else -70):
                prob.append(f"turn {t['start']:.2f}-{t['end']:.2f} edge silent ({edb:.1f} dB)")
        # gaps: outside all turns, with a margin (codec pre-echo, filters)
        margin = int((0.05 if lossy or r["condition"].find("telephone") >= 0 else 0.005) * sr)
        if margin:
            c = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
            lo = np.clip(np.arange(mask.size) - margin, 0, mask.size)
            hi = np.clip(np.arange(mask.size) + margin + 1, 0, mask.size)
            grow = (c[hi] - c[lo]) > 0
        else:
            grow = mask
        gap = ~grow
        gap_db = db(mono[gap]) if gap.any() else float("-inf")
        if not noisy and gap.any() and gap_db > (-60 if lossy else -80):
            prob.append(f"gaps not silent ({gap_db:.1f} dB)")
        ov = _count_overlaps(turns)
        if verbose:
            print(
                f"{r['path']:40s} {dur:7.2f}s sr={sr:5d} ch={x.shape[1]} "
                f"{p.stat().st_size / 1024:7.1f} KiB turns={len(turns):3d} "
                f"ovl={ov} min_turn={min_turn_db:6.1f}dB min_edge30ms={min_edge_db:6.1f}dB "
                f"gaps={gap_db:7.1f}dB {'OK' if not prob else 'PROBLEM'}"
            )
            for q in prob:
                print(f"    - {q}")
        problems += [f"{r['path']}: {q}" for q in prob]
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("voices", help="synthesize a test phrase with every voice")
    p.set_defaults(func=lambda a: sys.exit(1 if any(check_voices().values()) else 0))

    p = sub.add_parser("sample", help="bundled sample corpus (deterministic)")
    p.add_argument("--out", default="examples/sample")
    p.add_argument("--seed", type=int, default=SAMPLE_SEED)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("eval", help="evaluation corpus")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-minutes", type=float, default=1.0)
    p.add_argument("--max-minutes", type=float, default=4.0)
    p.add_argument("--voices", nargs="*", help="voice names (default: all)")
    p.add_argument("--cache", help="on-disk utterance cache directory")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="benchmark corpus of H hours")
    p.add_argument("--out", required=True)
    p.add_argument("--hours", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-minutes", type=float, default=1.0)
    p.add_argument("--max-minutes", type=float, default=5.0)
    p.add_argument(
        "--per-voice", type=int, default=16, help="utterances synthesized per voice for the pool"
    )
    p.add_argument("--voices", nargs="*", help="voice names (default: all)")
    p.add_argument("--cache", help="on-disk utterance cache directory")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("check", help="sanity-check a generated corpus")
    p.add_argument("--root", required=True)
    p.set_defaults(func=lambda a: sys.exit(1 if check_corpus(a.root) else 0))

    args = ap.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
