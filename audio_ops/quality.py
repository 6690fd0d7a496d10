"""Per-clip quality scores: blind SNR, speech/non-speech SNR, loudness, clipping, bandwidth,
speech ratio, and TorchSquim's objective estimates (STOI, PESQ, SI-SDR) when its weights can be
had.

Definitions (all on the mono downmix except loudness, which follows BS.1770's channel sum):

- ``snr_db``: WADA-SNR (Kim & Stern, "Robust signal-to-noise ratio estimation based on waveform
  amplitude distribution analysis", Interspeech 2008). Clean speech amplitude is modelled as
  Gamma-distributed with shape 0.4 and noise as Gaussian; the statistic
  ``G = log(E|z|) - E[log|z|]`` of the noisy waveform grows monotonically with the SNR, and the
  published lookup table (:data:`WADA_G_TABLE`, SNR -20..100 dB in 1 dB steps, the values of the
  authors' MATLAB code as carried by every public port) is inverted by linear interpolation. It
  is an SNR over the whole clip (speech energy including pauses over noise energy), clamped to
  [-20, 100] dB: a clip with digital silence reads 100.
- ``vad_snr_db``: active-speech SNR. Mean power inside speech regions (given, or found by the
  VAD of ``config.vad``) minus the mean power of the non-speech rest (the noise estimate, which
  skips ``noise_guard_seconds`` around each region so speech tails do not leak in), over that
  noise power; clamped to [-20, 100] dB; NaN when either side has less than 0.2 s.
- ``loudness_lufs``: BS.1770 integrated loudness from :class:`audio_ops.levels.LoudnessMeter`.
- ``clipping_ratio``: fraction of samples at full scale (``|x| >= levels.CLIP_LEVEL``).
- ``bandwidth_hz``: the highest frequency whose long-term average spectrum (Welch, Hann, about
  16 ms frames, then smoothed over ``bandwidth_smoothing_hz``) lies within
  ``bandwidth_floor_db`` of the spectrum's peak (searched above 50 Hz so DC and rumble cannot set
  the reference), interpolated between bins. Smoothing makes a lone spur or a notch irrelevant;
  the relative floor makes it independent of level; 50 dB sits below the roll-off of speech
  itself but above the stop band of resamplers and codecs, so an 8 kHz-sampled call upsampled to
  16 kHz reads about 4 kHz and a full-band 16 kHz recording close to 8 kHz. A broadband noise
  floor within 50 dB of the peak extends the bandwidth, as it should (it is there).
- ``speech_ratio``: speech seconds / clip duration.
- ``squim_stoi``, ``squim_pesq``, ``squim_si_sdr``: ``torchaudio.pipelines.SQUIM_OBJECTIVE``
  estimates at 16 kHz, averaged over segments of ``squim_segment_seconds`` weighted by length.
  When the weights cannot be loaded the three are NaN and ``squim_error`` says why.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audio_ops.levels import CLIP_LEVEL
from audio_ops.vad import VadConfig

#: SNR (dB) of each entry of :data:`WADA_G_TABLE`.
WADA_SNR_DB = np.arange(-20, 101, dtype=np.float64)
#: ``log(E|z|) - E[log|z|]`` of Gamma(0.4) speech plus Gaussian noise at each SNR of
#: :data:`WADA_SNR_DB` (Kim & Stern 2008; the table of their reference implementation).
WADA_G_TABLE = np.array(
    [
        0.40974774, 0.40986926, 0.40998566, 0.40969089, 0.40986186, 0.40999006, 0.41027138,
        0.41052627, 0.41101024, 0.41143264, 0.41231718, 0.41337272, 0.41526426, 0.41781920,
        0.42077252, 0.42452799, 0.42918886, 0.43510373, 0.44234195, 0.45161485, 0.46221153,
        0.47491647, 0.48883809, 0.50509236, 0.52353709, 0.54372088, 0.56532427, 0.58847532,
        0.61346212, 0.63954496, 0.66750818, 0.69583724, 0.72454762, 0.75414799, 0.78323148,
        0.81240985, 0.84219775, 0.87166406, 0.90030504, 0.92880418, 0.95655449, 0.98353490,
        1.01047155, 1.03620950, 1.06136425, 1.08579312, 1.10948190, 1.13277995, 1.15472826,
        1.17627308, 1.19703503, 1.21671694, 1.23535898, 1.25364313, 1.27103891, 1.28718029,
        1.30302865, 1.31839527, 1.33294817, 1.34700935, 1.36057270, 1.37345513, 1.38577122,
        1.39733504, 1.40856397, 1.41959619, 1.42983624, 1.43958467, 1.44902176, 1.45804831,
        1.46669568, 1.47486938, 1.48269965, 1.49034339, 1.49748214, 1.50435106, 1.51076426,
        1.51698915, 1.52290970, 1.52857800, 1.53389835, 1.53912110, 1.54390650, 1.54858517,
        1.55310776, 1.55744391, 1.56164927, 1.56566348, 1.56938671, 1.57307767, 1.57654764,
        1.57980083, 1.58304129, 1.58602496, 1.58880681, 1.59162477, 1.59419690, 1.59693155,
        1.59944600, 1.60185011, 1.60408668, 1.60627134, 1.60826199, 1.61004547, 1.61192472,
        1.61369656, 1.61534074, 1.61688905, 1.61838916, 1.61985374, 1.62135878, 1.62268119,
        1.62390423, 1.62513143, 1.62632463, 1.62740270, 1.62842767, 1.62945532, 1.63033070,
        1.63128026, 1.63204102,
    ]
)  # fmt: skip

SNR_FLOOR_DB = -20.0
SNR_CEILING_DB = 100.0
SQUIM_SAMPLE_RATE = 16000
SQUIM_ASSET = "models/squim_objective_dns2020.pth"

#: Columns :class:`QualityOperator` writes (and :func:`clip_quality` returns), with their types.
QUALITY_COLUMNS: dict[str, type] = {
    "duration": float,
    "snr_db": float,
    "vad_snr_db": float,
    "loudness_lufs": float,
    "clipping_ratio": float,
    "bandwidth_hz": float,
    "speech_ratio": float,
    "squim_stoi": float,
    "squim_pesq": float,
    "squim_si_sdr": float,
    "squim_error": str,
}
#: Scores compared by :func:`enhancement_delta`.
DELTA_KEYS = (
    "snr_db",
    "vad_snr_db",
    "loudness_lufs",
    "clipping_ratio",
    "bandwidth_hz",
    "speech_ratio",
    "squim_stoi",
    "squim_pesq",
    "squim_si_sdr",
)


@dataclass(frozen=True)
class QualityConfig:
    """Parameters of the quality scores.

    Args:
        vad: speech detection when a clip comes without speech regions. Silero (bundled,
            offline, ~900x real time) by default: the energy VAD's noise-floor threshold misses
            most speech once white noise is within ~20 dB, which wrecks ``vad_snr_db`` (measured
            on the sample: 1.5 dB for a true 11 dB, 7.4 for 21) and ``speech_ratio``.
        noise_guard_seconds: audio skipped on each side of a speech region when estimating the
            noise power of ``vad_snr_db``.
        bandwidth_floor_db: a frequency counts as in the band while the smoothed long-term
            spectrum is within this many dB of its peak.
        bandwidth_smoothing_hz: width of the moving average applied to the spectrum.
        clip_level: ``|x|`` at or above this counts as clipped.
        squim: TorchSquim objective weights: ``torchaudio:SQUIM_OBJECTIVE`` (torchaudio's cache,
            else fetched), a local path or URL of a state dict, or None to skip the model.
        squim_sha256: optional pin of the Squim weights file.
        squim_segment_seconds: Squim runs on segments this long (its cost grows faster than
            linearly with length); the scores are averaged weighted by segment length.
        device: where Squim runs: ``auto``, ``cpu`` or ``cuda[:N]``.
    """

    vad: VadConfig = field(default_factory=VadConfig)
    noise_guard_seconds: float = 0.1
    bandwidth_floor_db: float = 50.0
    bandwidth_smoothing_hz: float = 100.0
    clip_level: float = CLIP_LEVEL
    squim: str | None = "torchaudio:SQUIM_OBJECTIVE"
    squim_sha256: str | None = None
    squim_segment_seconds: float = 10.0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.noise_guard_seconds < 0:
            raise ValueError("noise_guard_seconds must be >= 0")
        if not self.bandwidth_floor_db > 0 or self.bandwidth_smoothing_hz < 0:
            raise ValueError("need bandwidth_floor_db > 0 and bandwidth_smoothing_hz >= 0")
        if not 0 < self.clip_level <= 1:
            raise ValueError("clip_level must lie in (0, 1]")
        if not self.squim_segment_seconds >= 1.0:
            raise ValueError("squim_segment_seconds must be at least 1")
        if self.squim is not None and self.squim.startswith("torchaudio:"):
            if self.squim != "torchaudio:SQUIM_OBJECTIVE":
                raise ValueError(f"unknown torchaudio Squim bundle {self.squim!r}")


# ----------------------------------------------------------------------------------------------
# Model-free scores
# ----------------------------------------------------------------------------------------------


def wada_snr(audio: np.ndarray) -> float:
    """Blind SNR (dB) of a speech clip by WADA (Kim & Stern 2008); see the module docstring.

    Args:
        audio: ``(frames,)`` mono samples.

    Returns:
        SNR in dB within [-20, 100]; NaN for an empty or all-zero clip.
    """
    x = np.abs(np.asarray(audio, dtype=np.float64).ravel())
    peak = x.max() if x.size else 0.0
    if peak <= 0:
        return math.nan
    eps = 1e-10
    x = np.maximum(x / peak, eps)
    g = math.log(max(float(x.mean()), eps)) - float(np.log(x).mean())
    below = np.flatnonzero(WADA_G_TABLE < g)
    if below.size == 0:
        return SNR_FLOOR_DB
    i = int(below.max())
    if i == WADA_G_TABLE.size - 1:
        return SNR_CEILING_DB
    # The reference code then splits the clip's energy as E·f/(1+f) and E/(1+f) with
    # f = 10^(snr/10) and takes their ratio: that is the interpolated table value itself.
    slope = (WADA_SNR_DB[i + 1] - WADA_SNR_DB[i]) / (WADA_G_TABLE[i + 1] - WADA_G_TABLE[i])
    return float(WADA_SNR_DB[i] + (g - WADA_G_TABLE[i]) * slope)


def _region_mask(
    regions: np.ndarray, frames: int, sample_rate: int, pad: float = 0.0
) -> np.ndarray:
    mask = np.zeros(frames, dtype=bool)
    for start, end in np.asarray(regions, dtype=np.float64).reshape(-1, 2):
        lo = max(0, int(math.floor((start - pad) * sample_rate)))
        hi = min(frames, int(math.ceil((end + pad) * sample_rate)))
        if hi > lo:
            mask[lo:hi] = True
    return mask


def vad_snr(
    audio: np.ndarray, sample_rate: int, speech_regions: np.ndarray, guard_seconds: float = 0.1
) -> float:
    """Active-speech SNR (dB): speech-region power against non-speech power.

    Args:
        audio: ``(frames,)`` mono samples.
        sample_rate: rate in Hz.
        speech_regions: ``(n, 2)`` speech ``[start, end)`` seconds.
        guard_seconds: audio around each region left out of the noise estimate.

    Returns:
        ``10 log10((P_speech - P_noise) / P_noise)`` clamped to [-20, 100]; NaN when speech or
        non-speech spans less than 0.2 s.
    """
    x = np.asarray(audio, dtype=np.float64).ravel()
    speech = _region_mask(speech_regions, x.size, sample_rate)
    noise = ~_region_mask(speech_regions, x.size, sample_rate, pad=guard_seconds)
    minimum = int(0.2 * sample_rate)
    if speech.sum() < minimum or noise.sum() < minimum:
        return math.nan
    p_speech = float(np.mean(x[speech] ** 2))
    p_noise = float(np.mean(x[noise] ** 2))
    if p_noise <= 0:
        return SNR_CEILING_DB
    if p_speech <= p_noise:
        return SNR_FLOOR_DB
    snr = 10.0 * math.log10((p_speech - p_noise) / p_noise)
    return float(min(max(snr, SNR_FLOOR_DB), SNR_CEILING_DB))


def clipping_ratio(audio: np.ndarray, clip_level: float = CLIP_LEVEL) -> float:
    """Fraction of samples with ``|x| >= clip_level`` (0 for an empty clip).

    Args:
        audio: samples of any shape.
        clip_level: full-scale threshold.
    """
    if audio.size == 0:
        return 0.0
    return float(np.count_nonzero(np.abs(audio) >= clip_level)) / audio.size


def effective_bandwidth(
    audio: np.ndarray, sample_rate: int, floor_db: float = 50.0, smoothing_hz: float = 100.0
) -> float:
    """Effective bandwidth (Hz) from the long-term average spectrum; see the module docstring.

    Args:
        audio: ``(frames,)`` mono samples.
        sample_rate: rate in Hz.
        floor_db: in-band means within this many dB of the spectrum's peak.
        smoothing_hz: width of the moving average over frequency.

    Returns:
        Bandwidth in Hz, at most ``sample_rate / 2``; NaN for silence or a clip shorter than one
        analysis frame.
    """
    from scipy.signal import welch

    x = np.asarray(audio, dtype=np.float64).ravel()
    nperseg = 1 << max(5, int(round(math.log2(sample_rate * 0.016))))  # ~16 ms: 256 at 16 kHz
    if x.size < nperseg or not np.any(x):
        return math.nan
    freqs, psd = welch(x, fs=sample_rate, window="hann", nperseg=nperseg, detrend="constant")
    resolution = freqs[1] - freqs[0]
    width = max(1, int(round(smoothing_hz / resolution)))
    if width > 1:
        psd = np.convolve(psd, np.ones(width) / width, mode="same")
    with np.errstate(divide="ignore"):
        level = 10.0 * np.log10(psd)
    usable = freqs >= 50.0
    peak = float(level[usable].max())
    if not math.isfinite(peak):
        return math.nan
    threshold = peak - floor_db
    above = np.flatnonzero(usable & (level >= threshold))
    i = int(above.max())
    if i + 1 >= freqs.size:
        return float(freqs[-1])
    # Linear interpolation of the crossing between bin i (above) and i + 1 (below).
    a, b = level[i], level[i + 1]
    fraction = (a - threshold) / (a - b) if a > b and math.isfinite(b) else 0.0
    return float(freqs[i] + fraction * resolution)


def detect_regions(audio: np.ndarray, sample_rate: int, config: VadConfig, vad: Any = None):
    """Speech regions (seconds) of mono audio at any rate: the VAD runs at 16 kHz.

    Args:
        audio: ``(frames,)`` mono samples.
        sample_rate: rate in Hz.
        config: VAD parameters.
        vad: a loaded backend (from ``config`` when None).
    """
    from audio_ops.io import resample
    from audio_ops.vad import SAMPLE_RATE, detect_speech

    return detect_speech(resample(audio, sample_rate, SAMPLE_RATE), config, vad)


# ----------------------------------------------------------------------------------------------
# TorchSquim
# ----------------------------------------------------------------------------------------------


def load_squim(ref: str, sha256: str | None = None) -> Any:
    """The TorchSquim objective model with its weights, in eval mode, on the CPU.

    Args:
        ref: ``torchaudio:SQUIM_OBJECTIVE`` or a local path / URL of its state dict.
        sha256: optional pin of the weights file.

    Raises:
        ModelError: weights unavailable, pin mismatch, unsafe file, or not Squim's state dict.
    """
    from torchaudio.models import squim_objective_base

    from audio_ops.models import ModelError, ModelRef, load_state_dict, resolve

    if ref.startswith("torchaudio:"):
        from audio_ops.separation import resolve_torchaudio_asset

        path = resolve_torchaudio_asset(SQUIM_ASSET, sha256)
    else:
        path = Path(resolve(ModelRef(ref, sha256=sha256)))
    state = load_state_dict(path)
    model = squim_objective_base()
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise ModelError(f"{path} is not a SquimObjective state dict: {str(exc)[:300]}") from exc
    return model.eval()


def squim_scores(
    model: Any, audio: np.ndarray, sample_rate: int, segment_seconds: float = 10.0
) -> tuple[float, float, float]:
    """``(stoi, pesq, si_sdr)`` estimates of mono ``audio`` by a loaded Squim objective model.

    Args:
        model: from :func:`load_squim`.
        audio: ``(frames,)`` samples.
        sample_rate: rate in Hz (resampled to 16 kHz).
        segment_seconds: segment length; a last piece under 1 s joins the previous segment.
    """
    import torch

    from audio_ops.io import resample

    x = resample(np.asarray(audio, dtype=np.float32), sample_rate, SQUIM_SAMPLE_RATE)
    if x.size < SQUIM_SAMPLE_RATE // 10:
        return math.nan, math.nan, math.nan
    step = int(segment_seconds * SQUIM_SAMPLE_RATE)
    bounds = list(range(0, x.size, step)) + [x.size]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < SQUIM_SAMPLE_RATE:
        del bounds[-2]
    device = next(model.parameters()).device
    totals = np.zeros(3)
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        with torch.inference_mode():
            segment = torch.from_numpy(np.ascontiguousarray(x[lo:hi]))[None].to(device)
            scores = model(segment)
        totals += np.array([float(s.reshape(-1)[0]) for s in scores]) * (hi - lo)
    stoi, pesq, si_sdr = (totals / x.size).tolist()
    return stoi, pesq, si_sdr


@functools.lru_cache(maxsize=4)
def _cached_squim(ref: str, sha256: str | None, device: str) -> tuple[Any, str]:
    """(model, "") or (None, reason): one load attempt per process and reference."""
    from audio_ops.models import pick_device

    try:
        return load_squim(ref, sha256).to(pick_device(device)), ""
    except Exception as exc:  # any failure to load leaves the columns NaN, with the reason
        return None, f"{type(exc).__name__}: {exc}"


# ----------------------------------------------------------------------------------------------
# The scorer
# ----------------------------------------------------------------------------------------------


class QualityScorer:
    """Computes :data:`QUALITY_COLUMNS` for clips; loads the VAD and Squim once.

    Args:
        config: parameters; defaults when None.
    """

    def __init__(self, config: QualityConfig | None = None):
        from audio_ops.vad import make_vad

        self.config = config or QualityConfig()
        self.vad = make_vad(self.config.vad)
        self.squim, self.squim_error = (
            _cached_squim(self.config.squim, self.config.squim_sha256, self.config.device)
            if self.config.squim
            else (None, "disabled")
        )

    def score(
        self, audio: np.ndarray, sample_rate: int, speech_regions: np.ndarray | None = None
    ) -> dict[str, Any]:
        """The scores of one clip.

        Args:
            audio: ``(frames,)`` or ``(frames, channels)`` finite float samples.
            sample_rate: rate in Hz.
            speech_regions: ``(n, 2)`` speech seconds; detected with ``config.vad`` when None.

        Returns:
            A dict with the keys of :data:`QUALITY_COLUMNS`.
        """
        from audio_ops.io import check_finite, to_mono
        from audio_ops.standardize import measure_loudness

        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, not {sample_rate}")
        audio = np.asarray(audio, dtype=np.float32)
        check_finite(audio, "quality input")
        mono = to_mono(audio)
        frames = mono.shape[0]
        duration = frames / sample_rate
        row: dict[str, Any] = {name: math.nan for name in QUALITY_COLUMNS}
        row["squim_error"] = self.squim_error
        row["duration"] = duration
        row["clipping_ratio"] = clipping_ratio(mono, self.config.clip_level)
        if frames == 0:
            row["speech_ratio"] = 0.0
            return row
        if speech_regions is None:
            speech_regions = detect_regions(mono, sample_rate, self.config.vad, self.vad)
        regions = np.asarray(speech_regions, dtype=np.float64).reshape(-1, 2)
        speech_mask = _region_mask(regions, frames, sample_rate)
        row["speech_ratio"] = float(speech_mask.sum()) / frames
        row["snr_db"] = wada_snr(mono)
        row["vad_snr_db"] = vad_snr(mono, sample_rate, regions, self.config.noise_guard_seconds)
        row["loudness_lufs"] = measure_loudness(audio, sample_rate)
        row["bandwidth_hz"] = effective_bandwidth(
            mono, sample_rate, self.config.bandwidth_floor_db, self.config.bandwidth_smoothing_hz
        )
        if self.squim is not None:
            try:
                stoi, pesq, si_sdr = squim_scores(
                    self.squim, mono, sample_rate, self.config.squim_segment_seconds
                )
                row.update(squim_stoi=stoi, squim_pesq=pesq, squim_si_sdr=si_sdr)
            except Exception as exc:  # e.g. GPU out of memory: the other scores still stand
                row["squim_error"] = f"{type(exc).__name__}: {exc}"
        return row


@functools.lru_cache(maxsize=4)
def _scorer_for(config: QualityConfig) -> QualityScorer:
    return QualityScorer(config)


def clip_quality(
    audio: np.ndarray,
    sample_rate: int,
    speech_regions: np.ndarray | None = None,
    config: QualityConfig | None = None,
) -> dict[str, Any]:
    """The quality scores of one clip (see the module docstring for each).

    The scorer for a config (VAD and Squim) is built once per process and reused.

    Args:
        audio: ``(frames,)`` or ``(frames, channels)`` finite float samples.
        sample_rate: rate in Hz.
        speech_regions: ``(n, 2)`` speech seconds; detected with ``config.vad`` when None.
        config: parameters; defaults when None.

    Returns:
        A dict with the keys of :data:`QUALITY_COLUMNS`.
    """
    return _scorer_for(config or QualityConfig()).score(audio, sample_rate, speech_regions)


def enhancement_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """What an enhancement changed: ``after - before`` for each score both dicts hold.

    Args:
        before: scores of the original clip (:func:`clip_quality`).
        after: scores of the processed clip.

    Returns:
        ``{score: after - before}`` for the keys of :data:`DELTA_KEYS` present in both (NaN
        where either is NaN or both are the same infinity).
    """
    delta = {}
    for key in DELTA_KEYS:
        if key in before and key in after:
            a, b = float(after[key]), float(before[key])
            delta[key] = a - b if not (math.isinf(a) and a == b) else math.nan
    return delta


# ----------------------------------------------------------------------------------------------
# Batch operator (numpy batches in, numpy batches out; no Ray)
# ----------------------------------------------------------------------------------------------


class QualityOperator:
    """Quality stage: adds :data:`QUALITY_COLUMNS` to each clip row.

    Reads ``audio`` (raw mono float32 bytes) and ``sample_rate``, and ``speech`` (packed ``(n, 2)``
    seconds, see :func:`audio_ops.diarization.pack`) when the rows carry it (an empty or null
    value means "detect"); the audio passes through.

    Args:
        config: the quality config.
        threads: torch threads of this actor (Squim on the CPU).
    """

    inputs = ("audio", "sample_rate")
    optional_inputs = ("speech",)
    outputs = tuple(QUALITY_COLUMNS)
    uses_model = True
    num_cpus = 1
    num_gpus = 0
    batch_size = 8

    def __init__(self, config: QualityConfig | None = None, threads: int = 1):
        import torch

        torch.set_num_threads(max(1, threads))
        self.scorer = QualityScorer(config)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from audio_ops.packing import unpack

        n = len(batch["audio"])
        speech = list(batch["speech"]) if "speech" in batch else [None] * n
        rows = []
        for audio_bytes, rate, packed in zip(
            list(batch["audio"]), list(batch["sample_rate"]), speech, strict=True
        ):
            regions = unpack(packed) if packed is not None and len(packed) else None
            audio = np.frombuffer(audio_bytes, dtype=np.float32)
            rows.append(self.scorer.score(audio, int(rate), regions))
        out = dict(batch)
        for name, kind in QUALITY_COLUMNS.items():
            values = [row[name] for row in rows]
            out[name] = (
                np.array(values, dtype=object) if kind is str else np.array(values, np.float64)
            )
        return out
