"""Background / music separation: vocals vs accompaniment with Hybrid Demucs (torchaudio).

Models:

- ``torchaudio:HDEMUCS_HIGH_MUSDB_PLUS`` (the default) or ``torchaudio:HDEMUCS_HIGH_MUSDB``: the
  pretrained bundles of ``torchaudio.pipelines``. Their weights are looked up in torchaudio's own
  cache (``$TORCH_HOME/hub/torchaudio/models/...``, where ``bundle.get_model()`` puts them) and
  otherwise fetched from ``download.pytorch.org`` into voxflow's cache; offline, that fails with a
  :class:`~audio_ops.models.ModelError` that says where to put the file.
- any Demucs-style checkpoint by reference (a local path or URL, see :mod:`audio_ops.models`): a
  plain state dict, safetensors or ``torch.load(weights_only=True)`` (never a pickle that runs
  code), loaded into ``torchaudio.models.hdemucs_{low,medium,high}(sources)``; an optional
  SHA-256 pin refuses any other file.

Long inputs are cut into chunks of ``chunk_seconds`` at the model's rate, consecutive chunks
sharing ``overlap_seconds``; each chunk's output fades in and out over the overlap with
complementary weights (linear, or cosine-squared: equal gain), so the weights sum to exactly 1
everywhere and a model that is the identity is reproduced exactly. Memory on the model side is one
chunk whatever the file's length; :meth:`Separator.separate_stream` also keeps input and output
bounded (blocks in, blocks out).

HDemucs takes stereo: mono input is duplicated to two channels and the output averaged back.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audio_ops.models import ModelError, ModelRef, load_state_dict, pick_device, resolve

#: Where torchaudio's pretrained assets are served from.
TORCHAUDIO_ASSET_URL = "https://download.pytorch.org/torchaudio/"

#: ``nfft`` and ``depth`` of torchaudio's HDemucs factories (``hdemucs_low`` ...).
ARCHITECTURES: dict[str, tuple[int, int]] = {
    "hdemucs_low": (1024, 5),
    "hdemucs_medium": (2048, 6),
    "hdemucs_high": (4096, 6),
}
#: HDemucs' default width (``channels``): the factories build it; other widths build the class.
DEFAULT_MODEL_CHANNELS = 48
MUSDB_SOURCES = ("drums", "bass", "other", "vocals")


@dataclass(frozen=True)
class TorchaudioBundle:
    """A pretrained separation model of ``torchaudio.pipelines``.

    Args:
        asset: the weights' key under torchaudio's asset URL and cache.
        architecture: one of :data:`ARCHITECTURES`.
        sources: the model's output stems, in order.
        sample_rate: the rate the model was trained at.
    """

    asset: str
    architecture: str
    sources: tuple[str, ...]
    sample_rate: int


#: The bundles a ``torchaudio:NAME`` reference may name.
BUNDLES: dict[str, TorchaudioBundle] = {
    "HDEMUCS_HIGH_MUSDB_PLUS": TorchaudioBundle(
        "models/hdemucs_high_trained.pt", "hdemucs_high", MUSDB_SOURCES, 44100
    ),
    "HDEMUCS_HIGH_MUSDB": TorchaudioBundle(
        "models/hdemucs_high_musdbhq_only.pt", "hdemucs_high", MUSDB_SOURCES, 44100
    ),
}


def resolve_torchaudio_asset(asset: str, sha256: str | None = None) -> Path:
    """Local path of a torchaudio pretrained asset (``models/NAME.pt``).

    torchaudio's own cache is used when it holds the file (a machine where ``bundle.get_model()``
    once ran); otherwise the file is fetched through :func:`audio_ops.models.resolve` into
    voxflow's cache. Either way the optional pin is checked.

    Args:
        asset: the asset key, e.g. ``models/hdemucs_high_trained.pt``.
        sha256: optional SHA-256 (or prefix) the file must have.

    Raises:
        ModelError: the file is neither cached nor fetchable, or fails its pin.
    """
    import torch

    cached = Path(torch.hub.get_dir()) / "torchaudio" / asset
    if cached.is_file():
        return Path(resolve(ModelRef(str(cached), sha256=sha256)))
    url = TORCHAUDIO_ASSET_URL + asset
    try:
        return Path(resolve(ModelRef(url, sha256=sha256)))
    except ModelError as exc:
        raise ModelError(
            f"the weights {asset} are not cached ({cached}) and cannot be fetched from {url} "
            f"({exc}); download the file on a connected machine and pass its local path as "
            "the model reference, or place it at the cache path above"
        ) from exc


def _is_bundle_ref(ref: str) -> bool:
    return ref.startswith("torchaudio:")


@dataclass(frozen=True)
class SeparationConfig:
    """Which separation model to run and how to cut long inputs.

    Args:
        model: ``torchaudio:HDEMUCS_HIGH_MUSDB_PLUS`` (or another of :data:`BUNDLES`), or a
            reference to a state dict (local path or URL; see :mod:`audio_ops.models`).
        sha256: pin of the weights file; a mismatch refuses to load.
        architecture: ``hdemucs_low``, ``hdemucs_medium`` or ``hdemucs_high`` (state dicts only;
            a bundle fixes its own).
        sources: the checkpoint's output stems, in order (a bundle fixes its own).
        vocals_source: the stem kept as speech; every other stem sums to the accompaniment.
        model_sample_rate: the rate the model runs at; audio is resampled in and out (a bundle
            fixes its own: 44100).
        model_channels: HDemucs' width (48 for every pretrained model; tiny test models use less).
        chunk_seconds: model input length; longer audio is processed in chunks.
        overlap_seconds: audio shared by consecutive chunks, cross-faded (at most half a chunk).
        crossfade: ``linear`` or ``cosine`` (cosine-squared: equal-gain, smooth at the ends).
        keep_sources: also return every stem, not only vocals and accompaniment.
        device: ``auto`` (GPU when visible), ``cpu`` or ``cuda[:N]``.
    """

    model: str = "torchaudio:HDEMUCS_HIGH_MUSDB_PLUS"
    sha256: str | None = None
    architecture: str = "hdemucs_high"
    sources: tuple[str, ...] = MUSDB_SOURCES
    vocals_source: str = "vocals"
    model_sample_rate: int = 44100
    model_channels: int = DEFAULT_MODEL_CHANNELS
    chunk_seconds: float = 10.0
    overlap_seconds: float = 1.0
    crossfade: str = "linear"
    keep_sources: bool = False
    device: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))
        if _is_bundle_ref(self.model):
            name = self.model.split(":", 1)[1]
            if name not in BUNDLES:
                raise ValueError(
                    f"unknown torchaudio bundle {name!r} (known: {', '.join(sorted(BUNDLES))})"
                )
            bundle = BUNDLES[name]
            fixed = {
                "architecture": bundle.architecture,
                "sources": bundle.sources,
                "model_sample_rate": bundle.sample_rate,
                "model_channels": DEFAULT_MODEL_CHANNELS,
            }
            for key, value in fixed.items():
                if getattr(self, key) != value:
                    raise ValueError(
                        f"{key}={getattr(self, key)!r} conflicts with {self.model}, which is "
                        f"{value!r}; leave {key} at its default for a bundle"
                    )
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"architecture must be one of {', '.join(ARCHITECTURES)}, not {self.architecture!r}"
            )
        if len(self.sources) < 2 or len(set(self.sources)) != len(self.sources):
            raise ValueError("sources must name at least two distinct stems")
        if self.vocals_source not in self.sources:
            raise ValueError(f"vocals_source {self.vocals_source!r} is not in {self.sources}")
        if self.model_sample_rate <= 0 or self.model_channels <= 0:
            raise ValueError("model_sample_rate and model_channels must be positive")
        if not self.chunk_seconds > 0 or not 0 <= self.overlap_seconds <= self.chunk_seconds / 2:
            raise ValueError("need chunk_seconds > 0 and 0 <= overlap_seconds <= chunk_seconds / 2")
        if self.crossfade not in ("linear", "cosine"):
            raise ValueError(f"crossfade must be 'linear' or 'cosine', not {self.crossfade!r}")

    @property
    def model_name(self) -> str:
        """A short name of the model for output columns: the bundle, or architecture:file."""
        if _is_bundle_ref(self.model):
            return self.model
        return f"{self.architecture}:{os.path.basename(self.model.rstrip('/'))}"


def build_hdemucs(architecture: str, sources: tuple[str, ...], channels: int) -> Any:
    """An untrained ``torchaudio.models.HDemucs`` of the named size.

    Args:
        architecture: one of :data:`ARCHITECTURES`.
        sources: output stems.
        channels: HDemucs width; the default width builds through torchaudio's factory.
    """
    import torchaudio.models as tam

    if channels == DEFAULT_MODEL_CHANNELS:
        return getattr(tam, architecture)(sources=list(sources))
    nfft, depth = ARCHITECTURES[architecture]
    return tam.HDemucs(sources=list(sources), nfft=nfft, depth=depth, channels=channels)


def load_separation_model(config: SeparationConfig) -> Any:
    """The separation model a config names, weights loaded, in eval mode, on the CPU.

    Raises:
        ModelError: weights unavailable, pinned hash mismatch, unsafe file, or a state dict that
            does not fit the architecture.
    """
    if _is_bundle_ref(config.model):
        path = resolve_torchaudio_asset(BUNDLES[config.model.split(":", 1)[1]].asset, config.sha256)
    else:
        path = Path(resolve(ModelRef(config.model, sha256=config.sha256)))
        if path.is_dir():
            raise ModelError(f"{path} is a folder; name the weights file")
    state = load_state_dict(path)
    if not isinstance(state, dict):
        raise ModelError(f"{path} does not hold a state dict (found {type(state).__name__})")
    model = build_hdemucs(config.architecture, config.sources, config.model_channels)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ModelError(
            f"{path} does not fit {config.architecture} with sources {list(config.sources)} "
            f"and width {config.model_channels}: {str(exc)[:500]}"
        ) from exc
    return model.eval()


# ----------------------------------------------------------------------------------------------
# Overlap-add
# ----------------------------------------------------------------------------------------------


def fade_in_ramp(length: int, shape: str = "linear") -> np.ndarray:
    """Fade-in weights over ``length`` samples, strictly inside (0, 1); the reversed ramp is the
    matching fade-out and ``ramp + ramp[::-1] == 1`` sample by sample.

    Args:
        length: samples in the cross-fade.
        shape: ``linear`` or ``cosine`` (cosine-squared).
    """
    position = (np.arange(length, dtype=np.float64) + 0.5) / max(length, 1)
    if shape == "cosine":
        return np.sin(0.5 * np.pi * position) ** 2
    return position


class OverlapAdd:
    """Chunked processing of a stream with cross-faded overlaps, in bounded memory.

    Feed ``(channels, frames)`` blocks with :meth:`push` and finish with :meth:`finish`; both
    return the output frames that are final, ``(outputs, channels, frames)``. A chunk is
    processed once the stream holds a frame past its end (so it is known not to be the last),
    which keeps at most one chunk plus one block of input and one overlap of output.

    Args:
        process: maps a ``(channels, n)`` chunk to ``(outputs, channels, n)``.
        chunk_frames: chunk length.
        overlap_frames: frames shared by consecutive chunks (``<= chunk_frames // 2``).
        crossfade: ``linear`` or ``cosine``.
    """

    def __init__(
        self,
        process: Callable[[np.ndarray], np.ndarray],
        chunk_frames: int,
        overlap_frames: int,
        crossfade: str = "linear",
    ):
        if chunk_frames <= 0 or not 0 <= overlap_frames <= chunk_frames // 2:
            raise ValueError("need chunk_frames > 0 and 0 <= overlap_frames <= chunk_frames // 2")
        self.process = process
        self.chunk = chunk_frames
        self.overlap = overlap_frames
        self.hop = chunk_frames - overlap_frames
        self.ramp = fade_in_ramp(overlap_frames, crossfade)
        self._pending: list[np.ndarray] = []
        self._pending_frames = 0
        self._carry: np.ndarray | None = None  # faded-out tail of the previous chunk

    def _buffer(self) -> np.ndarray:
        if len(self._pending) > 1:
            self._pending = [np.concatenate(self._pending, axis=1)]
        return self._pending[0]

    def _run(self, chunk: np.ndarray, last: bool) -> np.ndarray:
        out = np.asarray(self.process(chunk), dtype=np.float64)
        n = chunk.shape[1]
        if out.ndim != 3 or out.shape[1:] != chunk.shape:
            raise ValueError(f"process returned {out.shape} for a chunk of {chunk.shape}")
        if self._carry is not None:
            o = self.overlap
            out[..., :o] *= self.ramp
            out[..., :o] += self._carry
        if last:
            self._carry = None
            return out.astype(np.float32)
        o = self.overlap
        if o:
            self._carry = out[..., n - o :] * self.ramp[::-1]
        return out[..., : n - o].astype(np.float32)

    def push(self, block: np.ndarray) -> np.ndarray | None:
        """Add ``(channels, frames)`` input; returns final output frames, or None when none are."""
        if block.shape[1] == 0:
            return None
        self._pending.append(np.asarray(block, dtype=np.float32))
        self._pending_frames += block.shape[1]
        emitted = []
        while self._pending_frames > self.chunk:
            buffer = self._buffer()
            emitted.append(self._run(buffer[:, : self.chunk], last=False))
            self._pending = [buffer[:, self.hop :]]
            self._pending_frames -= self.hop
        return np.concatenate(emitted, axis=-1) if emitted else None

    def finish(self) -> np.ndarray | None:
        """Process what is left (the last chunk); returns the remaining output frames."""
        # After a chunk, at least ``overlap + 1`` frames are pending (a chunk only runs once a
        # frame past its end exists), so the last chunk always covers the previous one's tail.
        if self._pending_frames == 0:
            return None
        buffer = self._buffer()
        out = self._run(buffer, last=True)
        self._pending, self._pending_frames = [], 0
        return out


# ----------------------------------------------------------------------------------------------
# The separator
# ----------------------------------------------------------------------------------------------


class Separator:
    """Vocals vs accompaniment of any audio, with the model a config names.

    Args:
        config: model and chunking; defaults when None.
        model: an already built model to use instead of loading ``config.model`` (any module
            mapping ``(batch, 2, frames)`` to ``(batch, len(config.sources), 2, frames)``).
        threads: torch CPU threads (None leaves torch's setting alone).
    """

    def __init__(
        self,
        config: SeparationConfig | None = None,
        model: Any = None,
        threads: int | None = None,
    ):
        import torch

        if threads is not None:
            torch.set_num_threads(max(1, threads))
        self.config = config or SeparationConfig()
        self.device = pick_device(self.config.device)
        self.model = (model if model is not None else load_separation_model(self.config)).to(
            self.device
        )
        self.model.eval()
        self.name = self.config.model_name
        self.sample_rate = self.config.model_sample_rate
        self.sources = self.config.sources
        self._vocals = self.sources.index(self.config.vocals_source)
        nfft = int(getattr(self.model, "nfft", 0) or 0)
        # HDemucs' spectrogram padding needs a few hundred frames (5/16 of nfft); shorter
        # chunks (only ever a whole input shorter than that) are zero-padded and cropped.
        self.min_frames = max(nfft, 1)

    @property
    def output_names(self) -> tuple[str, ...]:
        """Keys of :meth:`separate`'s result, in order."""
        extra = tuple(s for s in self.sources if s != self.config.vocals_source)
        return ("vocals", "accompaniment") + (extra if self.config.keep_sources else ())

    def _process(self, chunk: np.ndarray) -> np.ndarray:
        """``(2, n)`` model-rate chunk -> ``(outputs, 2, n)``: vocals, accompaniment, [stems]."""
        import torch

        n = chunk.shape[1]
        x = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))
        if n < self.min_frames:
            x = torch.nn.functional.pad(x, (0, self.min_frames - n))
        with torch.inference_mode():
            y = self.model(x[None].to(self.device))[0, ..., :n].float().cpu().numpy()
        vocals = y[self._vocals]
        others = [i for i in range(len(self.sources)) if i != self._vocals]
        stems = [vocals, y[others].sum(axis=0)]
        if self.config.keep_sources:
            stems.extend(y[i] for i in others)
        return np.stack(stems)

    def _overlap_add(self) -> OverlapAdd:
        rate = self.sample_rate
        return OverlapAdd(
            self._process,
            int(round(self.config.chunk_seconds * rate)),
            int(round(self.config.overlap_seconds * rate)),
            self.config.crossfade,
        )

    @staticmethod
    def _model_channels(samples: np.ndarray) -> tuple[np.ndarray, bool]:
        """``(frames[, ch])`` -> ``(2, frames)`` and whether the input counts as mono."""
        if samples.ndim == 1 or samples.shape[1] == 1 or samples.shape[1] > 2:
            from audio_ops.io import to_mono

            mono = to_mono(samples.reshape(samples.shape[0], -1))
            return np.stack([mono, mono]), True
        return np.ascontiguousarray(samples.T), False

    def separate(self, audio: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        """Separate a whole clip.

        Args:
            audio: ``(frames,)`` mono or ``(frames, channels)`` finite float samples. Stereo keeps
                its channels; one channel or more than two is treated as mono (downmixed).
            sample_rate: rate of ``audio`` in Hz.

        Returns:
            ``{"vocals": ..., "accompaniment": ...}`` (and each other stem with
            ``keep_sources``), float32 at ``sample_rate``, shaped like ``audio`` for mono and
            stereo input (``(frames,)`` for more than two channels).
        """
        from audio_ops.io import check_finite, resample

        audio = np.asarray(audio, dtype=np.float32)
        check_finite(audio, "separation input")
        frames = audio.shape[0]
        if frames == 0:
            return {name: audio.copy() for name in self.output_names}
        stereo, mono = self._model_channels(audio)
        x = resample(np.ascontiguousarray(stereo.T), sample_rate, self.sample_rate).T
        engine = self._overlap_add()
        parts = [p for p in (engine.push(x), engine.finish()) if p is not None]
        y = np.concatenate(parts, axis=-1).astype(np.float32)  # (outputs, 2, model frames)
        result = {}
        for name, stem in zip(self.output_names, y, strict=True):
            back = resample(np.ascontiguousarray(stem.T), self.sample_rate, sample_rate)
            back = _fit_length(back, frames)
            if mono:
                back = back.mean(axis=1, dtype=np.float32)
                if audio.ndim == 2 and audio.shape[1] == 1:
                    back = back[:, None]
            result[name] = back
        return result

    def separate_stream(
        self, blocks: Iterable[np.ndarray], sample_rate: int
    ) -> Iterator[dict[str, np.ndarray]]:
        """Separate a stream of blocks (a long file) with memory bounded by one chunk.

        Resampling runs as continuous soxr streams on both sides, so block edges leave no mark.

        Args:
            blocks: ``(frames,)`` or ``(frames, channels)`` float blocks, in order, all with the
                same channel count (two keeps stereo; any other count is treated as mono).
            sample_rate: rate of the blocks.

        Yields:
            dicts like :meth:`separate`'s, one per stretch of final output (their total length
            is the input's, give or take the resamplers' rounding).
        """
        import soxr

        from audio_ops.io import check_finite

        rate = self.sample_rate

        def stream(source: int, target: int) -> Any:
            if source == target:
                return None
            return soxr.ResampleStream(source, target, 2, dtype="float32", quality="HQ")

        resample_in = stream(sample_rate, rate)
        resample_out = [stream(rate, sample_rate) for _ in self.output_names]
        engine = self._overlap_add()
        shape: dict[str, bool] = {}

        def emit(y: np.ndarray | None, last: bool) -> dict[str, np.ndarray] | None:
            out = {}
            for i, name in enumerate(self.output_names):
                stem = (
                    np.ascontiguousarray(y[i].T, dtype=np.float32)
                    if y is not None
                    else np.zeros((0, 2), np.float32)
                )
                if resample_out[i] is not None:
                    stem = resample_out[i].resample_chunk(stem, last=last)
                out[name] = stem if shape.get("stereo") else stem.mean(axis=1, dtype=np.float32)
            return out if next(iter(out.values())).shape[0] else None

        def feed(x: np.ndarray) -> dict[str, np.ndarray] | None:
            y = engine.push(x)
            return emit(y, last=False) if y is not None else None

        for block in blocks:
            block = np.asarray(block, dtype=np.float32)
            check_finite(block, "separation input")
            block = block.reshape(block.shape[0], -1)
            x, mono = self._model_channels(block)
            shape.setdefault("stereo", not mono)
            if resample_in is not None:
                x = resample_in.resample_chunk(np.ascontiguousarray(x.T), last=False).T
            out = feed(x)
            if out is not None:
                yield out
        if resample_in is not None:
            tail = resample_in.resample_chunk(np.zeros((0, 2), np.float32), last=True)
            out = feed(np.ascontiguousarray(tail.T))
            if out is not None:
                yield out
        out = emit(engine.finish(), last=True)
        if out is not None:
            yield out


def _fit_length(samples: np.ndarray, frames: int) -> np.ndarray:
    """Crop or zero-pad ``(n, ch)`` to ``frames`` (resampling round trips may differ by one)."""
    if samples.shape[0] >= frames:
        return samples[:frames]
    pad = np.zeros((frames - samples.shape[0],) + samples.shape[1:], dtype=samples.dtype)
    return np.concatenate([samples, pad])


def energy_ratio_db(part: np.ndarray, whole: np.ndarray) -> float:
    """``10 log10(energy(part) / energy(whole))``; NaN when ``whole`` is silent.

    Args:
        part: e.g. the accompaniment removed from a clip.
        whole: the clip.
    """
    whole_energy = float(np.dot(whole.ravel().astype(np.float64), whole.ravel()))
    if whole_energy <= 0:
        return math.nan
    part_energy = float(np.dot(part.ravel().astype(np.float64), part.ravel()))
    return 10.0 * math.log10(part_energy / whole_energy) if part_energy > 0 else -math.inf


# ----------------------------------------------------------------------------------------------
# Batch operator (numpy batches in, numpy batches out; no Ray)
# ----------------------------------------------------------------------------------------------


class SeparateOperator:
    """Separation stage: replaces each row's audio with its vocals.

    Reads ``audio`` (raw mono float32 bytes) and ``sample_rate``; writes ``audio`` (the vocals,
    same rate and length), ``separation`` (the model's name) and ``accompaniment_db`` (energy of
    the removed accompaniment relative to the input, dB; NaN for a silent row). Runs on the GPU
    when the actor has one (``device: auto``); give the stage ``num_gpus`` in the run's
    ``resources:`` on GPU nodes.

    Args:
        config: the separation config.
        threads: torch threads of this actor (CPU).
    """

    inputs = ("audio", "sample_rate")
    outputs = ("audio", "separation", "accompaniment_db")
    uses_model = True
    num_cpus = 1
    num_gpus = 0
    batch_size = 2
    max_actors = 1

    def __init__(self, config: SeparationConfig | None = None, threads: int = 1):
        self.separator = Separator(config, threads=threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vocals_out, names, ratios = [], [], []
        for audio_bytes, rate in zip(list(batch["audio"]), list(batch["sample_rate"]), strict=True):
            audio = np.frombuffer(audio_bytes, dtype=np.float32)
            stems = self.separator.separate(audio, int(rate))
            vocals_out.append(np.ascontiguousarray(stems["vocals"], dtype=np.float32).tobytes())
            names.append(self.separator.name)
            ratios.append(energy_ratio_db(stems["accompaniment"], audio))
        out = dict(batch)
        out["audio"] = np.array(vocals_out, dtype=object)
        out["separation"] = np.array(names, dtype=object)
        out["accompaniment_db"] = np.array(ratios, dtype=np.float64)
        return out
