"""Shared fixtures: synthetic signals written in every format, hostile files, one local Ray, and a
loopback S3 server."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest

# A forgotten model-hub call fails at once instead of after retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

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


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on loopback, with s3fs pointed at it through the environment
    (``FSSPEC_S3_ENDPOINT_URL``: the same setting a user gives s3fs for any S3-compatible store).

    Not ``AWS_ENDPOINT_URL``: measured here, with it in the environment of ``ray start`` the
    node's job agent never registers ("No available agent to submit job").
    """
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "FSSPEC_S3_ENDPOINT_URL": endpoint,
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield endpoint
    server.stop()
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """One local Ray for all integration tests: 2 CPUs, like the machines voxflow is tested on.

    Started after the S3 server so its workers inherit the endpoint settings; shut down at the
    end so no Ray process outlives the tests.
    """
    import ray

    # Workers import test-defined operators by module name: put tests/ on their path.
    paths = [str(REPO / "tests"), str(REPO)] + [
        p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p
    ]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    # address="local": always a new Ray of our own, never one that another process started here.
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(config, items):
    """A test that uses the local Ray is an integration test whether or not it says so, so
    ``make test-fast`` (``-m 'not integration'``) never starts Ray."""
    for item in items:
        if "ray_local" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
