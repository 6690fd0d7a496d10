"""Helpers the tests share (import them with ``from helpers import ...``): where the repository
and its sample are, and synthetic signals and hostile files written in every format. Fixtures
live in ``conftest.py``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

#: The repository root.
REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample"


def tone(
    seconds: float, rate: int, channels: int = 1, amplitude: float = 0.5, freq: float = 440.0
) -> np.ndarray:
    """A sine per channel (each channel its own frequency), shaped (frames, channels)."""
    t = np.arange(int(round(seconds * rate))) / rate
    cols = [amplitude * np.sin(2 * np.pi * freq * (1 + 0.25 * c) * t) for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


def write_audio(path: Path, samples: np.ndarray, rate: int, subtype: str | None = None) -> Path:
    """Write ``samples`` to ``path``; the extension picks the encoder (soundfile or PyAV)."""
    ext = path.suffix.lower().lstrip(".")
    path.parent.mkdir(parents=True, exist_ok=True)
    if ext in ("wav", "flac", "ogg"):
        import soundfile as sf

        sf.write(str(path), samples, rate, subtype=subtype)
    elif ext == "opus":
        import soundfile as sf

        sf.write(str(path), samples, rate, format="OGG", subtype="OPUS")
    else:
        import av

        codec = {"mp3": "mp3", "m4a": "aac", "webm": "libopus"}[ext]
        channels = samples.shape[1]
        layout = {1: "mono", 2: "stereo"}[channels]
        with av.open(str(path), "w") as container:
            stream = container.add_stream(codec, rate=rate, layout=layout)
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples.T), format="fltp", layout=layout
            )
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
    return path


def make_hostile_corpus(root: Path) -> dict[str, str]:
    """A folder of hostile inputs; returns ``{rel_path: expected status or error kind}``."""
    import soundfile as sf

    root.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str] = {}
    (root / "zero_bytes.wav").write_bytes(b"")
    expected["zero_bytes.wav"] = "empty"
    good = write_audio(root / "_good.wav", tone(1.0, 16000), 16000)
    (root / "truncated_header.wav").write_bytes(good.read_bytes()[:20])
    expected["truncated_header.wav"] = "decode_error"
    good.unlink()
    rng = np.random.default_rng(7)
    (root / "random_bytes.flac").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    expected["random_bytes.flac"] = "decode_error"
    nan = tone(1.0, 16000)
    nan[100, 0] = np.nan
    nan[200, 0] = np.inf
    sf.write(str(root / "nan_inf.wav"), nan, 16000, subtype="FLOAT")
    expected["nan_inf.wav"] = "non_finite"
    sf.write(str(root / "one_sample.wav"), np.full((1, 1), 0.25, np.float32), 16000)
    expected["one_sample.wav"] = "too_short"
    sf.write(str(root / "digital_silence.flac"), np.zeros((16000 * 600, 1), np.float32), 16000)
    expected["digital_silence.flac"] = "ok"
    for name in ("name with spaces.wav", "ünïcødé_名前.wav", "-leading-dash.wav", "..evil.wav"):
        write_audio(root / name, tone(0.5, 16000), 16000)
        expected[name] = "ok"
    loop_dir = root / "loop"
    loop_dir.mkdir()
    write_audio(loop_dir / "inside.flac", tone(0.5, 8000), 8000)
    expected["loop/inside.flac"] = "ok"
    os.symlink(loop_dir, loop_dir / "again")  # a directory symlink loop
    return expected


# Synthetic speaker embeddings and channels (clustering, linking and pitch tests).


def synthetic_voices(n_voices, dim=64, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n_voices, dim))
    return v / np.linalg.norm(v, axis=1, keepdims=True), rng


def voice_samples(voices, rng, who, spread=0.15):
    x = (
        voices[who]
        + spread * rng.standard_normal((len(who), voices.shape[1])) / np.sqrt(voices.shape[1]) * 4
    )
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def telephone_band(audio: np.ndarray) -> np.ndarray:
    """What a telephone line keeps of 16 kHz audio: 8 kHz, 300-3400 Hz, back at 16 kHz."""
    import soxr
    from scipy.signal import butter, sosfiltfilt

    narrow = soxr.resample(audio, 16000, 8000)
    narrow = sosfiltfilt(butter(4, [300, 3400], btype="band", fs=8000, output="sos"), narrow)
    return soxr.resample(narrow, 8000, 16000).astype(np.float32)


def write_tiny_hdemucs(root: Path) -> Path:
    """A randomly initialised 4-channel ``hdemucs_low`` saved under ``root`` as safetensors,
    pinned by SHA-256 in a run config (``root/separate.yaml``), whose path is returned: the real
    loading path of ``voxflow separate`` without the download of the real weights."""
    import torch
    from safetensors.torch import save_file

    from audio_ops.models import sha256_of
    from audio_ops.separation import MUSDB_SOURCES, build_hdemucs

    torch.manual_seed(0)
    model = build_hdemucs("hdemucs_low", MUSDB_SOURCES, 4)
    root.mkdir(parents=True, exist_ok=True)
    weights = root / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    config = root / "separate.yaml"
    config.write_text(
        "separation: {"
        f"model: {weights}, sha256: {sha256_of(weights)}, architecture: hdemucs_low, "
        "model_channels: 4, model_sample_rate: 16000, chunk_seconds: 2.0, overlap_seconds: 0.5, "
        "device: cpu}\n"
    )
    return config
