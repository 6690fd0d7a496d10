"""Format and level standardisation: mono, one sample rate, one integrated loudness.

Loudness is ITU-R BS.1770 integrated loudness measured with :class:`audio_ops.levels.LoudnessMeter`
(the same meter the inventory uses). The gain is linear (one number per file), so the audio's
dynamics are untouched:

- it is ``target_lufs - measured``, clamped to ``±max_gain_db`` so near-silent or wildly hot
  recordings are not pushed by 40 dB;
- it is lowered further, when needed, so the sample peak after the gain stays at or below
  ``peak_limit_dbfs`` (no clipping). Such a file ends up quieter than the target and is flagged
  ``peak_limited``; a limiter would keep the loudness but change the waveform, which a dataset
  cleaner should not do silently;
- a silent or ungated input (loudness ``-inf``: nothing above BS.1770's -70 LUFS absolute gate,
  or shorter than one 400 ms gating block) gets gain 0 and is flagged ``silent``.

Long files: :func:`standardize` holds the whole clip. For a file that should not sit in memory,
measure it in one streaming pass (``LevelMeter`` gives loudness and peak), call
:func:`loudness_gain_db`, then apply :func:`apply_gain` block by block in a second pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class StandardizeConfig:
    """Target format and level.

    Args:
        sample_rate: output sample rate in Hz (16000 for ASR/diarization corpora, 24000 for TTS).
        target_lufs: integrated loudness to reach (EBU R128 broadcast: -23; speech datasets often
            use -23 to -20).
        max_gain_db: the gain is clamped to ``[-max_gain_db, +max_gain_db]``.
        peak_limit_dbfs: sample peak allowed after the gain; the gain is lowered to respect it.
    """

    sample_rate: int = 16000
    target_lufs: float = -23.0
    max_gain_db: float = 20.0
    peak_limit_dbfs: float = -1.0

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, not {self.sample_rate}")
        if not math.isfinite(self.target_lufs) or not -70.0 < self.target_lufs < 0.0:
            raise ValueError(f"target_lufs must lie in (-70, 0), not {self.target_lufs}")
        if not math.isfinite(self.max_gain_db) or self.max_gain_db < 0:
            raise ValueError(f"max_gain_db must be finite and >= 0, not {self.max_gain_db}")
        if not math.isfinite(self.peak_limit_dbfs) or self.peak_limit_dbfs > 0:
            raise ValueError(f"peak_limit_dbfs must be finite and <= 0, not {self.peak_limit_dbfs}")


def loudness_gain_db(lufs: float, config: StandardizeConfig, peak: float | None = None) -> float:
    """The gain (dB) that brings audio of loudness ``lufs`` to the target.

    Args:
        lufs: measured integrated loudness; ``-inf``/NaN (silent or ungated) gives 0.
        config: target, clamp and peak limit.
        peak: the audio's sample peak (linear, 1.0 = full scale) when known; the gain is then
            lowered so that ``peak`` after the gain stays at or below ``config.peak_limit_dbfs``.

    Returns:
        Gain in dB, within ``±config.max_gain_db``.
    """
    if lufs is None or not math.isfinite(lufs):
        return 0.0
    gain = min(max(config.target_lufs - lufs, -config.max_gain_db), config.max_gain_db)
    if peak is not None and peak > 0:
        headroom = config.peak_limit_dbfs - 20.0 * math.log10(peak)
        gain = max(min(gain, headroom), -config.max_gain_db)
    return float(gain)


def apply_gain(samples: np.ndarray, gain_db: float) -> np.ndarray:
    """``samples`` scaled by ``gain_db`` (float32 out); use per block in a file's second pass.

    Args:
        samples: any shape.
        gain_db: gain in dB.
    """
    return (np.asarray(samples, dtype=np.float32) * np.float32(10.0 ** (gain_db / 20.0))).astype(
        np.float32, copy=False
    )


def measure_loudness(samples: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness (LUFS) of a whole clip with :class:`audio_ops.levels.LoudnessMeter`.

    Args:
        samples: ``(frames,)`` or ``(frames, channels)``.
        sample_rate: rate in Hz.
    """
    from audio_ops.levels import LoudnessMeter

    block = samples.reshape(-1, 1) if samples.ndim == 1 else samples
    meter = LoudnessMeter(sample_rate, block.shape[1])
    meter.update(block)
    return meter.result()


def standardize(
    audio: np.ndarray, sample_rate: int, config: StandardizeConfig | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Downmix to mono, resample to ``config.sample_rate`` (soxr HQ) and normalise loudness.

    Loudness is measured after the downmix and resampling, i.e. on the audio that is returned.

    Args:
        audio: ``(frames,)`` or ``(frames, channels)`` finite float samples.
        sample_rate: rate of ``audio`` in Hz.
        config: target format and level; defaults when None.

    Returns:
        ``(samples, info)``: float32 mono samples at ``config.sample_rate``, and ``gain_db``,
        ``loudness_before_lufs``, ``loudness_after_lufs``, ``silent`` (no gated loudness: gain 0),
        ``peak_limited`` (the gain was lowered to respect the peak limit).

    Raises:
        NonFiniteAudioError: ``audio`` holds NaN or infinity.
    """
    from audio_ops.io import check_finite, resample, to_mono

    config = config or StandardizeConfig()
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, not {sample_rate}")
    audio = np.asarray(audio, dtype=np.float32)
    check_finite(audio, "standardize input")
    mono = resample(to_mono(audio), sample_rate, config.sample_rate)
    before = measure_loudness(mono, config.sample_rate) if mono.size else -math.inf
    peak = float(np.max(np.abs(mono))) if mono.size else 0.0
    unclamped = loudness_gain_db(before, config)
    gain = loudness_gain_db(before, config, peak=peak)
    out = apply_gain(mono, gain)
    after = measure_loudness(out, config.sample_rate) if out.size else -math.inf
    info = {
        "gain_db": gain,
        "loudness_before_lufs": before,
        "loudness_after_lufs": after,
        "silent": not math.isfinite(before),
        "peak_limited": gain < unclamped - 1e-9,
    }
    return out, info
