"""Voice pitch (F0) of speech windows, and the band a recording was made in.

Two cues the speaker embedding does not carry well, used by global speaker linking:

- **pitch**: the median F0 of a speaker's voiced frames, in semitones. A person's median F0 moves
  little between recordings (about a semitone), while voices that a speaker embedding confuses
  often sit several semitones apart. Frames are 32 ms every 20 ms at 8 kHz; a frame is voiced when
  its normalised cross-correlation peaks above ``VOICING`` between 60 and 400 Hz and its energy is
  above a floor relative to the span's median frame energy. About 1,400x real time on one core.
- **band**: the energy of a chunk in 300-3400 Hz (the telephone band) and in 4-7.6 kHz. A
  recording with nothing above 4 kHz (telephone, or 8 kHz audio resampled) is narrowband, and its
  embeddings shift with the channel: linking compares it with other recordings through a
  band-limited view of both (see :mod:`audio_ops.linking`).
"""

from __future__ import annotations

import numpy as np

from audio_ops.io import ANALYSIS_RATE

SAMPLE_RATE = ANALYSIS_RATE  # see audio_ops.io
PITCH_RATE = 8000
FRAME = 256  # 32 ms at 8 kHz
HOP = 160  # 20 ms at 8 kHz
FMIN, FMAX = 60.0, 400.0
VOICING = 0.7
NEAR = 0.9
MIN_VOICED_FRAMES = 5
NARROWBAND = (300.0, 3400.0)
HIGH_BAND = (4000.0, 7600.0)


def hz_to_semitones(hz: np.ndarray | float) -> np.ndarray:
    """Semitones above 55 Hz (A1)."""
    return 12.0 * np.log2(np.asarray(hz, dtype=np.float64) / 55.0)


def semitones_to_hz(st: np.ndarray | float) -> np.ndarray:
    return 55.0 * 2.0 ** (np.asarray(st, dtype=np.float64) / 12.0)


def _lag_range() -> tuple[int, int]:
    return int(PITCH_RATE / FMAX), int(np.ceil(PITCH_RATE / FMIN))


def frame_pitch(audio: np.ndarray) -> np.ndarray:
    """F0 in Hz of each frame of 16 kHz ``audio`` (NaN: unvoiced). Frame ``i`` starts at
    ``i * 20 ms`` and spans ``FRAME`` samples plus the longest lag.

    The normalised cross-correlation (NCCF, as in RAPT) of each frame with the signal a lag
    later, normalised by the energies of both spans, so long lags are not penalised the way a
    plain autocorrelation penalises them: on telephone-band speech, whose fundamental is cut by
    the 300 Hz high-pass, a plain autocorrelation locks onto the 3rd or 4th harmonic. The
    shortest lag that is a local maximum within ``NEAR`` of the best, refined to the highest point
    within 10 % of it, is the period (so the period's multiples, as high as the period itself, do
    not win)."""
    import scipy.fft
    import soxr

    x = soxr.resample(np.asarray(audio, dtype=np.float32), SAMPLE_RATE, PITCH_RATE, "LQ")
    lo, hi = _lag_range()
    span = FRAME + hi
    if len(x) < span:
        return np.full(0, np.nan)
    starts = np.arange(0, len(x) - span + 1, HOP)
    best_all = np.empty(len(starts))
    lag_all = np.empty(len(starts), dtype=np.int64)
    energy_all = np.empty(len(starts))
    index = np.arange(span)
    lags = np.arange(lo, hi + 1)
    nfft = 1 << int(np.ceil(np.log2(FRAME + span)))
    for block in range(0, len(starts), 1024):
        s = starts[block : block + 1024]
        spans = x[s[:, None] + index[None, :]]
        spans = spans - spans[:, :FRAME].mean(axis=1, keepdims=True)
        head = spans[:, :FRAME]
        num = scipy.fft.irfft(
            np.conj(scipy.fft.rfft(head, nfft, axis=1)) * scipy.fft.rfft(spans, nfft, axis=1),
            nfft,
            axis=1,
        )[:, lo : hi + 1]
        squares = spans.astype(np.float64) ** 2
        csum = np.concatenate([np.zeros((len(s), 1)), np.cumsum(squares, axis=1)], axis=1)
        e0 = csum[:, FRAME]
        e_lag = csum[:, lags + FRAME] - csum[:, lags]
        ncc = num / np.sqrt(np.maximum(e0[:, None] * e_lag, 1e-20))
        best = ncc.max(axis=1)
        peak = np.zeros(ncc.shape, dtype=bool)
        peak[:, 1:-1] = (ncc[:, 1:-1] >= ncc[:, :-2]) & (ncc[:, 1:-1] >= ncc[:, 2:])
        candidate = peak & (ncc >= NEAR * best[:, None])
        first = np.where(candidate.any(axis=1), candidate.argmax(axis=1), ncc.argmax(axis=1))
        # Refine to the highest point within 10 % of that lag (high harmonics ripple the NCCF).
        offsets = np.arange(ncc.shape[1])[None, :]
        lag = (first + lo)[:, None]
        near = np.abs(offsets + lo - lag) <= np.maximum(1, 0.1 * lag)
        first = np.where(near, ncc, -np.inf).argmax(axis=1)
        best_all[block : block + len(s)] = best
        lag_all[block : block + len(s)] = first + lo
        energy_all[block : block + len(s)] = e0
    voiced = (best_all > VOICING) & (energy_all > 0.01 * np.median(energy_all))
    out = np.full(len(starts), np.nan)
    out[voiced] = PITCH_RATE / lag_all[voiced]
    return out


def window_pitch(audio: np.ndarray, offsets: np.ndarray, length: int) -> np.ndarray:
    """Median F0 in semitones (:func:`hz_to_semitones`) of each window ``audio[o : o + length]``
    of a 16 kHz chunk; NaN where fewer than ``MIN_VOICED_FRAMES`` frames are voiced. Frames are
    computed once over each stretch of overlapping windows, not over the silence between them."""
    offsets = np.asarray(offsets, dtype=np.int64)
    out = np.full(len(offsets), np.nan)
    if not len(offsets):
        return out
    step = HOP * SAMPLE_RATE // PITCH_RATE
    frame = (FRAME + _lag_range()[1]) * SAMPLE_RATE // PITCH_RATE
    order = np.argsort(offsets, kind="stable")
    span_start = span_end = None
    spans: list[tuple[int, int, list[int]]] = []
    for i in order:
        o = int(offsets[i])
        if span_start is None or o > span_end:
            spans.append((o, o + length, [int(i)]))
            span_start, span_end = o, o + length
        else:
            span_end = max(span_end, o + length)
            spans[-1] = (span_start, span_end, spans[-1][2] + [int(i)])
    for a, b, members in spans:
        f0 = frame_pitch(audio[max(a, 0) : b])
        for i in members:
            lo = (int(offsets[i]) - a) // step
            hi = (int(offsets[i]) + length - frame - a) // step + 1
            frames = f0[max(lo, 0) : max(hi, 0)]
            frames = frames[np.isfinite(frames)]
            if len(frames) >= MIN_VOICED_FRAMES:
                out[i] = float(np.median(hz_to_semitones(frames)))
    return out


def speaker_pitch(window_values: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """``(k,)`` median of each label's window pitches (NaN where it has none)."""
    out = np.full(k, np.nan)
    values = np.asarray(window_values, dtype=np.float64)
    for label in range(k):
        v = values[(labels == label) & np.isfinite(values)]
        if len(v):
            out[label] = float(np.median(v))
    return out


def band_energy(audio: np.ndarray) -> np.ndarray:
    """``[energy in 300-3400 Hz, energy in 4-7.6 kHz]`` of a 16 kHz chunk, from the power
    spectra of every 4th 32 ms frame (Hann); add them over a file's chunks."""
    x = np.asarray(audio, dtype=np.float32)
    n = 512
    if len(x) < n:
        return np.zeros(2)
    starts = np.arange(0, len(x) - n + 1, 4 * n)
    frames = x[starts[:, None] + np.arange(n)[None, :]] * np.hanning(n).astype(np.float32)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).sum(axis=0)
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    low = power[(freqs >= NARROWBAND[0]) & (freqs <= NARROWBAND[1])].sum()
    high = power[(freqs >= HIGH_BAND[0]) & (freqs <= HIGH_BAND[1])].sum()
    return np.array([low, high], dtype=np.float64)


def is_wideband(energy: np.ndarray, floor_db: float = -40.0) -> bool:
    """Whether a file's summed :func:`band_energy` shows speech above 4 kHz: the high band is
    within ``floor_db`` of the telephone band. A silent file counts as wideband."""
    low, high = float(energy[0]), float(energy[1])
    if low <= 0:
        return True
    return 10 * np.log10(max(high, 1e-30) / low) > floor_db


def narrowband_view(audio: np.ndarray) -> np.ndarray:
    """``audio`` band-limited to 300-3400 Hz (6th-order Butterworth, zero phase): what a telephone
    channel keeps, so wideband and narrowband recordings can be compared on equal terms."""
    from scipy.signal import sosfiltfilt

    sos = _narrowband_sos()
    x = np.asarray(audio, dtype=np.float32)
    if len(x) < 64:
        return x.copy()
    return sosfiltfilt(sos, x).astype(np.float32)


_SOS = None


def _narrowband_sos():
    global _SOS
    if _SOS is None:
        from scipy.signal import butter

        _SOS = butter(6, NARROWBAND, btype="bandpass", fs=SAMPLE_RATE, output="sos")
    return _SOS
