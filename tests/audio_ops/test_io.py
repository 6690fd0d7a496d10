"""Audio I/O: formats, rates, channels, sample types, windows, resampling, hostile inputs."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from helpers import make_hostile_corpus, tone, write_audio

from audio_ops.errors import (
    AudioDecodeError,
    AudioNotFoundError,
    EmptyAudioError,
    InvalidWindowError,
    NonFiniteAudioError,
    TooShortError,
)
from audio_ops.io import (
    AudioReader,
    audio_info,
    file_id_for,
    iter_windows,
    load_audio,
    normalize_uri,
    resample,
)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


@pytest.mark.parametrize(
    "ext,subtype,lossy",
    [
        ("wav", "PCM_16", False),
        ("wav", "PCM_24", False),
        ("wav", "FLOAT", False),
        ("flac", "PCM_16", False),
        ("flac", "PCM_24", False),
        ("ogg", None, True),
        ("opus", None, True),
        ("mp3", None, True),
        ("m4a", None, True),
    ],
)
def test_decode_formats_to_the_same_signal(tmp_path, ext, subtype, lossy):
    rate = 48000 if ext == "opus" else 44100
    original = tone(2.0, rate, channels=2, amplitude=0.4)
    path = write_audio(tmp_path / f"x.{ext}", original, rate, subtype)
    info = audio_info(str(path))
    assert info.sample_rate == rate and info.channels == 2
    samples, out_rate = load_audio(str(path), mono=False)
    assert samples.dtype == np.float32 and out_rate == rate and samples.shape[1] == 2
    assert abs(samples.shape[0] / rate - 2.0) < 0.1
    if lossy:
        # Codecs add delay and noise, but the decoded tone must be that tone, at its level.
        middle = samples[rate // 2 : rate + rate // 2, 0]
        assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.4 / np.sqrt(2), rel=0.1)
        spectrum = np.abs(np.fft.rfft(samples[:, 0]))
        assert abs(np.argmax(spectrum) * rate / len(samples) - 440) < 5
    else:
        tol = {"PCM_16": 1e-4, "PCM_24": 1e-6, "FLOAT": 0}[subtype]
        np.testing.assert_allclose(samples, original, atol=tol)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000, 96000])
def test_rates_resample_to_16k(tmp_path, rate):
    path = write_audio(tmp_path / "x.flac", tone(1.5, rate, freq=300.0), rate)
    samples, out_rate = load_audio(str(path), 16000)
    assert out_rate == 16000 and samples.ndim == 1 and samples.dtype == np.float32
    assert abs(len(samples) - 24000) <= 2
    np.testing.assert_allclose(
        samples[2000:-2000], tone(1.5, 16000, freq=300.0)[2000:-2000, 0], atol=2e-3
    )


@pytest.mark.parametrize("channels", [1, 2, 8])
def test_channels_downmix_to_the_mean(tmp_path, channels):
    data = tone(1.0, 16000, channels=channels, amplitude=0.1)
    path = write_audio(tmp_path / "x.wav", data, 16000, "FLOAT")
    assert audio_info(str(path)).channels == channels
    mono, _ = load_audio(str(path))
    np.testing.assert_allclose(mono, data.mean(axis=1), atol=1e-6)


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_window_equals_slice_of_full_read(tmp_path, ext):
    rate = 16000 if ext != "mp3" else 44100
    rng = np.random.default_rng(0)
    data = (0.2 * rng.standard_normal((rate * 6, 1))).astype(np.float32)
    path = write_audio(tmp_path / f"x.{ext}", data, rate)
    full, _ = load_audio(str(path))
    window, _ = load_audio(str(path), start=2.5, end=4.0)
    start = int(2.5 * rate)
    assert len(window) == int(1.5 * rate)
    if ext in ("wav", "flac"):
        np.testing.assert_array_equal(window, full[start : start + len(window)])
    else:  # seek in a lossy stream: same audio up to codec framing
        assert _corr(window, full[start : start + len(window)]) > 0.99


def test_window_read_of_a_long_file_decodes_only_the_window(tmp_path):
    rate = 16000
    minutes = 20
    path = tmp_path / "long.flac"
    import soundfile as sf

    with sf.SoundFile(str(path), "w", rate, 1, format="FLAC") as f:
        for i in range(minutes):
            f.write(tone(60.0, rate, amplitude=0.01 * (i + 1)))
    tracemalloc.start()
    window, _ = load_audio(str(path), start=15 * 60 + 1.0, end=15 * 60 + 3.0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(window) == 2 * rate
    assert abs(np.abs(window).max() - 0.16) < 1e-3  # minute 16's amplitude: the right place
    whole_file_bytes = minutes * 60 * rate * 4
    assert peak < whole_file_bytes / 20


def test_iter_windows_streams_the_same_audio_as_a_full_resample(tmp_path):
    rng = np.random.default_rng(1)
    data = (0.2 * rng.standard_normal((44100 * 13, 1))).astype(np.float32)
    path = write_audio(tmp_path / "x.wav", data, 44100, "FLOAT")
    full = resample(data[:, 0], 44100, 16000)
    windows = list(iter_windows(str(path), 4.0, 16000, overlap_seconds=1.0, block_frames=10000))
    starts = [s for s, _ in windows]
    assert starts == [0.0, 3.0, 6.0, 9.0]
    for start, samples in windows:
        i = int(start * 16000)
        ref = full[i : i + len(samples)]
        # Streaming and one-shot soxr agree away from the very ends of the file.
        np.testing.assert_allclose(samples[100:-100], ref[100:-100], atol=2e-3)
    covered = windows[-1][0] + len(windows[-1][1]) / 16000
    assert abs(covered - 13.0) < 0.01


def test_resample_keeps_dtype_and_length():
    x = tone(1.0, 48000)[:, 0]
    y = resample(x, 48000, 16000)
    assert y.dtype == np.float32 and len(y) == 16000


def test_hostile_inputs_raise_typed_errors(tmp_path):
    make_hostile_corpus(tmp_path)
    with pytest.raises(EmptyAudioError, match="0 bytes"):
        load_audio(str(tmp_path / "zero_bytes.wav"))
    with pytest.raises(AudioDecodeError, match="soundfile.*ffmpeg"):
        load_audio(str(tmp_path / "truncated_header.wav"))
    with pytest.raises(AudioDecodeError):
        load_audio(str(tmp_path / "random_bytes.flac"))
    with pytest.raises(NonFiniteAudioError, match="NaN/inf"):
        load_audio(str(tmp_path / "nan_inf.wav"))
    with pytest.raises(TooShortError):
        load_audio(str(tmp_path / "one_sample.wav"), min_duration=0.01)
    with pytest.raises(AudioNotFoundError):
        load_audio(str(tmp_path / "missing.wav"))
    with pytest.raises(AudioNotFoundError, match="not a regular file"):
        load_audio(str(tmp_path / "loop"))
    with pytest.raises(InvalidWindowError):
        load_audio(str(tmp_path / "..evil.wav"), start=2.0, end=1.0)
    with pytest.raises(InvalidWindowError, match="past the end"):
        load_audio(str(tmp_path / "..evil.wav"), start=30.0, end=31.0)


def test_unusual_names_decode(tmp_path):
    make_hostile_corpus(tmp_path)
    for name in ("name with spaces.wav", "ünïcødé_名前.wav", "-leading-dash.wav", "..evil.wav"):
        samples, rate = load_audio(str(tmp_path / name))
        assert rate == 16000 and len(samples) == 8000


def test_file_ids_are_deterministic_and_name_independent_of_spelling(tmp_path):
    path = tmp_path / "a.wav"
    assert file_id_for(str(path)) == file_id_for(f"file://{path}")
    assert file_id_for(str(path)) == file_id_for(str(tmp_path / "x" / ".." / "a.wav"))
    assert file_id_for(str(path)) != file_id_for(str(tmp_path / "b.wav"))
    assert normalize_uri("s3://bucket/a/") == "s3://bucket/a"


def test_memory_url(tmp_path):
    import fsspec

    data = write_audio(tmp_path / "m.flac", tone(1.0, 16000), 16000).read_bytes()
    with fsspec.open("memory://corpus/m.flac", "wb") as f:
        f.write(data)
    samples, rate = load_audio("memory://corpus/m.flac", start=0.25, end=0.75)
    assert rate == 16000 and len(samples) == 8000
    with AudioReader("memory://corpus/m.flac") as reader:
        assert reader.info.format == "flac" and reader.info.bytes == len(data)


def test_http_url_on_loopback(tmp_path):
    """https:// and http:// go through fsspec's HTTP filesystem: range reads from a server."""
    import functools
    import http.server
    import threading

    write_audio(tmp_path / "talk.flac", tone(3.0, 16000, amplitude=0.3), 16000)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/talk.flac"
        samples, rate = load_audio(url, 8000, start=1.0, end=2.0)
        assert rate == 8000 and len(samples) == 8000
        assert audio_info(url).duration == pytest.approx(3.0)
        with pytest.raises(AudioNotFoundError):
            load_audio(f"http://127.0.0.1:{server.server_address[1]}/missing.flac")
    finally:
        server.shutdown()
