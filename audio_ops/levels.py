"""Streaming level measurements: peak, RMS, clipping, digital silence, ITU-R BS.1770 loudness.

Every meter here consumes a file block by block (``update``) and reports at the end
(``result``), so a multi-hour file is measured with memory bounded by one block plus one number
per 100 ms (the loudness gating blocks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: |sample| at or above this counts as clipped (one 16-bit step below full scale).
CLIP_LEVEL = 1.0 - 2.0 / 32768.0
#: |sample| at or below this counts as digital silence (one 16-bit step, about -90 dBFS).
SILENCE_LEVEL = 1.0 / 32768.0


def _biquad_high_shelf(
    rate: int, gain_db: float, q: float, fc: float
) -> tuple[np.ndarray, np.ndarray]:
    a = 10 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * fc / rate
    alpha = math.sin(w0) / (2.0 * q)
    cos = math.cos(w0)
    b = [
        a * ((a + 1) + (a - 1) * cos + 2 * math.sqrt(a) * alpha),
        -2 * a * ((a - 1) + (a + 1) * cos),
        a * ((a + 1) + (a - 1) * cos - 2 * math.sqrt(a) * alpha),
    ]
    den = [
        (a + 1) - (a - 1) * cos + 2 * math.sqrt(a) * alpha,
        2 * ((a - 1) - (a + 1) * cos),
        (a + 1) - (a - 1) * cos - 2 * math.sqrt(a) * alpha,
    ]
    return np.array(b) / den[0], np.array(den) / den[0]


def _biquad_high_pass(rate: int, q: float, fc: float) -> tuple[np.ndarray, np.ndarray]:
    w0 = 2.0 * math.pi * fc / rate
    alpha = math.sin(w0) / (2.0 * q)
    cos = math.cos(w0)
    b = [(1 + cos) / 2, -(1 + cos), (1 + cos) / 2]
    den = [1 + alpha, -2 * cos, 1 - alpha]
    return np.array(b) / den[0], np.array(den) / den[0]


class LoudnessMeter:
    """Integrated loudness (LUFS) after ITU-R BS.1770-4, fed block by block.

    K-weighting is the standard's two biquads designed for the file's own rate (the same design
    pyloudnorm uses); gating blocks are 400 ms with 75 % overlap, an absolute gate at -70 LUFS and
    a relative gate 10 LU below the ungated mean.

    Args:
        sample_rate: rate of the blocks to come.
        channels: channel count of the blocks to come.
    """

    STEP_SECONDS = 0.1  # a gating block is four steps

    def __init__(self, sample_rate: int, channels: int):
        self.sample_rate = sample_rate
        self.channels = channels
        self._shelf = _biquad_high_shelf(sample_rate, 4.0, 1 / math.sqrt(2), 1500.0)
        self._hpf = _biquad_high_pass(sample_rate, 0.5, 38.0)
        # Filter state carried across blocks: the stream is filtered as if it were one signal.
        self._zi_shelf = np.zeros((channels, 2))
        self._zi_hpf = np.zeros((channels, 2))
        # Surround channels (4th and 5th of a 5.1 layout) weigh 1.41; others 1.0.
        self._weights = np.array([1.41 if c in (3, 4) else 1.0 for c in range(channels)])
        self._step = max(1, int(round(self.STEP_SECONDS * sample_rate)))
        self._pending = np.zeros((0, channels))
        self._step_energy: list[np.ndarray] = []  # mean square per channel, per 100 ms step

    def update(self, block: np.ndarray) -> None:
        """Add ``(frames, channels)`` samples."""
        from scipy.signal import lfilter

        x = block.astype(np.float64, copy=False).T  # (channels, frames)
        y, self._zi_shelf = lfilter(*self._shelf, x, axis=1, zi=self._zi_shelf)
        y, self._zi_hpf = lfilter(*self._hpf, y, axis=1, zi=self._zi_hpf)
        data = np.concatenate([self._pending, y.T]) if self._pending.size else y.T
        whole = (data.shape[0] // self._step) * self._step
        if whole:
            steps = data[:whole].reshape(-1, self._step, self.channels)
            self._step_energy.extend(np.mean(steps**2, axis=1))
        self._pending = data[whole:]

    def result(self) -> float:
        """Integrated loudness in LUFS; ``-inf`` when every block is below the absolute gate or
        the input is shorter than one 400 ms block."""
        if len(self._step_energy) < 4:
            return -math.inf
        steps = np.asarray(self._step_energy)  # (n_steps, channels)
        # 400 ms blocks at a 100 ms hop: the mean of four consecutive steps.
        kernel = np.ones(4) / 4
        blocks = np.stack(
            [np.convolve(steps[:, c], kernel, mode="valid") for c in range(self.channels)], 1
        )
        weighted = blocks @ self._weights
        with np.errstate(divide="ignore"):
            block_lufs = -0.691 + 10 * np.log10(weighted)
        above_abs = weighted[block_lufs >= -70.0]
        if above_abs.size == 0:
            return -math.inf
        relative_gate = -0.691 + 10 * math.log10(above_abs.mean()) - 10.0
        gated = weighted[(block_lufs >= -70.0) & (block_lufs >= relative_gate)]
        if gated.size == 0:
            return -math.inf
        return float(-0.691 + 10 * math.log10(gated.mean()))


@dataclass
class LevelStats:
    """Whole-file level statistics.

    Args:
        peak: largest absolute sample (linear, 1.0 = full scale).
        peak_dbfs: ``peak`` in dBFS.
        rms_dbfs: RMS over all channels and samples, in dBFS.
        loudness_lufs: integrated loudness (BS.1770), ``-inf`` when gated out entirely.
        clipping_ratio: fraction of samples at full scale.
        silence_ratio: fraction of samples at digital silence (|x| <= one 16-bit step).
        frames: frames measured.
    """

    peak: float
    peak_dbfs: float
    rms_dbfs: float
    loudness_lufs: float
    clipping_ratio: float
    silence_ratio: float
    frames: int


class LevelMeter:
    """Peak, RMS, clipping, silence and loudness of a stream of blocks, in bounded memory.

    Args:
        sample_rate: rate of the blocks.
        channels: channel count of the blocks.
    """

    def __init__(self, sample_rate: int, channels: int):
        self.loudness = LoudnessMeter(sample_rate, channels)
        self.frames = 0
        self._samples = 0
        self._peak = 0.0
        self._sum_sq = 0.0
        self._clipped = 0
        self._silent = 0

    def update(self, block: np.ndarray) -> None:
        """Add ``(frames, channels)`` finite float samples."""
        if block.size == 0:
            return
        magnitude = np.abs(block)
        self._peak = max(self._peak, float(magnitude.max()))
        self._sum_sq += float(np.dot(block.ravel().astype(np.float64), block.ravel()))
        self._clipped += int(np.count_nonzero(magnitude >= CLIP_LEVEL))
        self._silent += int(np.count_nonzero(magnitude <= SILENCE_LEVEL))
        self._samples += block.size
        self.frames += block.shape[0]
        self.loudness.update(block)

    def result(self) -> LevelStats:
        """The statistics of everything added so far."""
        n = max(self._samples, 1)
        rms = math.sqrt(self._sum_sq / n)
        return LevelStats(
            peak=self._peak,
            peak_dbfs=_db(self._peak),
            rms_dbfs=_db(rms),
            loudness_lufs=self.loudness.result(),
            clipping_ratio=self._clipped / n,
            silence_ratio=self._silent / n,
            frames=self.frames,
        )


def _db(value: float) -> float:
    return 20.0 * math.log10(value) if value > 0 else -math.inf
