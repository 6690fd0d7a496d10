"""Audio I/O: open any fsspec URL, decode, downmix, resample, read in bounded windows.

Decoders:
- soundfile (libsndfile) for WAV, FLAC, OGG-Vorbis, Opus, AIFF: exact frame counts and
  sample-accurate seeking, so a window of a 3-hour file is read without decoding the rest.
- PyAV for MP3, M4A/AAC, WebM and anything else FFmpeg reads. PyAV is chosen over torchcodec
  because its wheels carry their own FFmpeg (nothing to install on a fresh machine, CPU or GPU
  node alike), while torchcodec needs a system FFmpeg and its newest releases are CUDA-linked.

Each decoder is tried in turn; when all fail the error names each one's reason. Samples come out
as float32 in ``[-1, 1]`` (integer PCM scaled by libsndfile or FFmpeg), shaped
``(frames, channels)`` until a caller asks for mono.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from audio_ops.errors import (
    AudioDecodeError,
    AudioNotFoundError,
    EmptyAudioError,
    InvalidWindowError,
    NonFiniteAudioError,
    TooShortError,
)

#: Extensions libsndfile reads natively (seekable, exact length).
SOUNDFILE_EXTENSIONS = frozenset(
    {"wav", "wave", "flac", "ogg", "oga", "opus", "aiff", "aif", "aifc", "au", "caf", "w64", "rf64"}
)
#: Extensions routed to FFmpeg through PyAV.
FFMPEG_EXTENSIONS = frozenset(
    {"mp3", "m4a", "aac", "mp4", "webm", "mka", "mkv", "wma", "amr", "ac3"}
)
#: Every extension a corpus listing picks up by default.
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS | FFMPEG_EXTENSIONS

#: The rate every speech model voxflow runs sees (VAD, speaker embeddings, segmentation, pitch,
#: Whisper): files are decoded, downmixed and resampled to it for analysis. The one home of
#: 16 kHz; the modules that need it import it (most as ``SAMPLE_RATE``).
ANALYSIS_RATE = 16000

#: Native-rate frames decoded per step of a streaming read (about 4-12 s of audio).
DEFAULT_BLOCK_FRAMES = 1 << 17


# ----------------------------------------------------------------------------------------------
# URLs and identity
# ----------------------------------------------------------------------------------------------


def split_protocol(url: str) -> tuple[str, str]:
    """Split ``proto://rest`` into ``(proto, rest)``; a plain path gives ``("file", path)``.

    Args:
        url: a local path or an fsspec URL.
    """
    if "://" in url:
        proto, rest = url.split("://", 1)
        return proto.lower(), rest
    return "file", url


def normalize_uri(url: str) -> str:
    """The canonical form of an input location, from which ids are derived.

    Local paths (plain or ``file://``) become absolute paths without ``.``/``..`` parts, so the
    same file named two ways gets one id; remote URLs keep their protocol and lose a trailing
    slash.

    Args:
        url: a local path or an fsspec URL (``s3://``, ``gs://``, ``memory://``, ``https://``...).
    """
    proto, rest = split_protocol(str(url))
    if proto in ("file", "local"):
        return os.path.abspath(os.path.expanduser(rest))
    return f"{proto}://{rest.rstrip('/')}"


def is_local(url: str) -> bool:
    """Whether ``url`` names a file on the local filesystem."""
    return split_protocol(str(url))[0] in ("file", "local")


def stable_id(*parts: Any, length: int = 16) -> str:
    """A deterministic hex id from its parts (never random: a retried task gets the same id).

    Args:
        parts: values joined with ``|`` before hashing.
        length: hex characters kept.
    """
    text = "|".join(str(p) for p in parts)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:length]


def file_id_for(url: str) -> str:
    """The deterministic ``file_id`` of an input: a hash of its normalised URI.

    Args:
        url: a local path or an fsspec URL.
    """
    uri = normalize_uri(url)
    if "://" not in uri:
        uri = "file://" + uri
    return stable_id(uri)


def extension_of(url: str) -> str:
    """The lower-case extension of a URL's last path component, without the dot."""
    name = split_protocol(str(url))[1].rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


# ----------------------------------------------------------------------------------------------
# Opening
# ----------------------------------------------------------------------------------------------


def _open_source(url: str) -> tuple[Any, int]:
    """Open ``url`` for binary reading and return ``(source, size_in_bytes)``.

    A local file is passed on as its path (libsndfile and FFmpeg read it directly, fastest); a
    remote one as a seekable fsspec file object, read in ranges.
    """
    uri = normalize_uri(url)
    if is_local(uri):
        if not os.path.exists(uri):
            raise AudioNotFoundError(f"no such file: {uri}")
        if not os.path.isfile(uri):
            raise AudioNotFoundError(f"not a regular file: {uri}")
        size = os.path.getsize(uri)
        if size == 0:
            raise EmptyAudioError(f"file is empty (0 bytes): {uri}")
        return uri, size

    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    try:
        info = fs.info(path)
    except FileNotFoundError as exc:
        raise AudioNotFoundError(f"no such file: {uri}") from exc
    if info.get("type") not in (None, "file"):
        raise AudioNotFoundError(f"not a regular file: {uri}")
    size = int(info.get("size") or 0)
    if size == 0:
        raise EmptyAudioError(f"file is empty (0 bytes): {uri}")
    # Range reads of ~4 MB: a window of a long remote file fetches only its own bytes.
    return fs.open(path, "rb", block_size=4 * 1024 * 1024), size


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says about it.

    Args:
        format: container, lower case (``wav``, ``flac``, ``ogg``, ``mp3``, ``mp4``...).
        codec: sample coding (``pcm_16``, ``pcm_24``, ``float``, ``vorbis``, ``opus``, ``mp3``, ``aac``).
        sample_rate: native sample rate in Hz.
        channels: native channel count.
        num_frames: frames per channel (exact for soundfile formats, an estimate from the
            container for FFmpeg formats until decoded).
        duration: ``num_frames / sample_rate`` in seconds.
        bytes: size of the file.
        backend: ``soundfile`` or ``pyav``.
        exact_length: whether ``num_frames`` is exact.
    """

    format: str
    codec: str
    sample_rate: int
    channels: int
    num_frames: int
    duration: float
    bytes: int
    backend: str
    exact_length: bool

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return asdict(self)


class _SoundFileBackend:
    name = "soundfile"

    def __init__(self, source: Any, size: int, ext: str = ""):
        import soundfile as sf

        try:
            self._sf = sf.SoundFile(source)
        except Exception as exc:  # libsndfile raises LibsndfileError / RuntimeError / TypeError
            raise AudioDecodeError(f"soundfile: {exc}") from exc
        f = self._sf
        if f.samplerate <= 0 or f.channels <= 0:
            raise AudioDecodeError(
                f"soundfile: invalid header (rate {f.samplerate}, channels {f.channels})"
            )
        self.info = AudioInfo(
            format=f.format.lower(),
            codec=f.subtype.lower(),
            sample_rate=int(f.samplerate),
            channels=int(f.channels),
            num_frames=int(f.frames),
            duration=float(f.frames) / float(f.samplerate),
            bytes=size,
            backend=self.name,
            exact_length=True,
        )

    def read(self, start: int, count: int) -> np.ndarray:
        if start:
            self._sf.seek(start)
        elif self._sf.tell() != 0:
            self._sf.seek(0)
        return self._read(count)

    def _read(self, count: int) -> np.ndarray:
        try:
            return self._sf.read(count, dtype="float32", always_2d=True)
        except Exception as exc:
            raise AudioDecodeError(f"soundfile: read failed: {exc}") from exc

    def blocks(self, start: int, count: int | None, block_frames: int) -> Iterator[np.ndarray]:
        self._sf.seek(start)
        remaining = count if count is not None else self.info.num_frames - start
        while remaining > 0:
            block = self._read(min(block_frames, remaining))
            if block.shape[0] == 0:
                break
            remaining -= block.shape[0]
            yield block

    def close(self) -> None:
        self._sf.close()


class _PyAVBackend:
    name = "pyav"
    SEEK_PREROLL_SECONDS = 0.5

    def __init__(self, source: Any, size: int, ext: str = ""):
        import av

        self._av = av
        self._source = source
        try:
            self._container = av.open(source, mode="r")
        except Exception as exc:  # av.error.* (InvalidDataError, ...)
            raise AudioDecodeError(f"ffmpeg: {exc}") from exc
        streams = self._container.streams.audio
        if not streams:
            self._container.close()
            raise AudioDecodeError("ffmpeg: no audio stream in the container")
        self._stream = streams[0]
        self._start_pts = int(self._stream.start_time or 0)
        ctx = self._stream.codec_context
        rate = int(ctx.sample_rate or self._stream.rate or 0)
        channels = int(ctx.channels or 0)
        if rate <= 0 or channels <= 0:
            raise AudioDecodeError(f"ffmpeg: invalid stream (rate {rate}, channels {channels})")
        if self._stream.duration is not None and self._stream.time_base is not None:
            seconds = float(self._stream.duration * self._stream.time_base)
        elif self._container.duration is not None:
            seconds = self._container.duration / 1_000_000
        else:
            seconds = 0.0
        frames = int(round(seconds * rate))
        # FFmpeg names demuxers by family ("mov,mp4,m4a,..."): report the member the file's
        # extension names when it is one of them.
        names = self._container.format.name.split(",")
        fmt = ext if ext in names else names[0]
        codec = ctx.name[: -len("float")] if ctx.name.endswith("float") else ctx.name
        self.info = AudioInfo(
            format=fmt,
            codec=codec,
            sample_rate=rate,
            channels=channels,
            num_frames=frames,
            duration=frames / rate,
            bytes=size,
            backend=self.name,
            exact_length=False,
        )

    def _decode_from(self, start: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_frame, block)`` from about ``start`` on, blocks shaped (frames, channels)."""
        stream = self._stream
        rate = self.info.sample_rate
        position: int | None = 0
        if start > 0 and stream.time_base is not None:
            # Seek to a keyframe at or before start; the timestamps of the frames then say where
            # they are, and the caller trims to the exact window.
            # Pre-roll: decoders such as MP3's (bit reservoir) give silence for the first
            # frames after a seek, so land well before ``start`` and let the caller trim.
            preroll = max(0.0, start / rate - self.SEEK_PREROLL_SECONDS)
            target = int(preroll / stream.time_base) + self._start_pts
            self._container.seek(target, stream=stream, backward=True)
            position = None
        elif self._decoded_once:
            self._container.seek(0, stream=stream, backward=True)
        self._decoded_once = True
        try:
            for frame in self._container.decode(stream):
                data = frame.to_ndarray()
                if frame.format.is_planar:
                    block = data.T
                else:  # packed: one row of interleaved samples
                    block = data.reshape(-1, len(frame.layout.channels))
                block = _to_float32(block, frame.format.name)
                if position is None:
                    if frame.pts is not None and frame.time_base is not None:
                        # Timestamps count from the stream's start (after the encoder delay).
                        seconds = float((frame.pts - self._start_pts) * frame.time_base)
                        position = int(round(seconds * rate))
                    else:
                        position = 0
                yield position, block
                position += block.shape[0]
        except self._av.error.FFmpegError as exc:
            raise AudioDecodeError(f"ffmpeg: decode failed: {exc}") from exc

    _decoded_once = False

    def blocks(self, start: int, count: int | None, block_frames: int) -> Iterator[np.ndarray]:
        end = None if count is None else start + count
        pending: list[np.ndarray] = []
        pending_frames = 0
        for first, block in self._decode_from(start):
            last = first + block.shape[0]
            if last <= start:
                continue
            lo = max(0, start - first)
            hi = block.shape[0] if end is None else min(block.shape[0], end - first)
            if hi > lo:
                pending.append(block[lo:hi])
                pending_frames += hi - lo
            if pending_frames >= block_frames:
                merged = np.concatenate(pending)
                yield merged[:block_frames]
                rest = merged[block_frames:]
                pending, pending_frames = ([rest], rest.shape[0]) if rest.shape[0] else ([], 0)
            if end is not None and last >= end:
                break
        if pending_frames:
            yield np.concatenate(pending)

    def read(self, start: int, count: int) -> np.ndarray:
        parts = list(self.blocks(start, count, max(count, 1)))
        if not parts:
            return np.zeros((0, self.info.channels), dtype=np.float32)
        return np.concatenate(parts)

    def close(self) -> None:
        self._container.close()
        if hasattr(self._source, "close"):
            self._source.close()


def _to_float32(block: np.ndarray, sample_format: str) -> np.ndarray:
    """Scale FFmpeg's sample formats to float32 in [-1, 1]."""
    base = sample_format.rstrip("p")
    if base in ("flt", "dbl"):
        return block.astype(np.float32, copy=False)
    scale = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9.223372036854776e18}.get(
        base
    )
    if scale is None:
        raise AudioDecodeError(f"ffmpeg: unsupported sample format {sample_format}")
    out = block.astype(np.float32)
    if base == "u8":
        out -= 128.0
    return out / np.float32(scale)


class AudioReader:
    """An open audio file: header info, exact windows, and streaming blocks.

    Use as a context manager. ``read``/``blocks`` take native-rate frame positions; see
    :func:`load_audio` and :func:`iter_windows` for second-based, resampled access.

    Args:
        url: a local path or fsspec URL.
    """

    def __init__(self, url: str):
        self.url = normalize_uri(url)
        ext = extension_of(self.url)
        order = (
            (_PyAVBackend, _SoundFileBackend)
            if ext in FFMPEG_EXTENSIONS
            else (_SoundFileBackend, _PyAVBackend)
        )
        failures = []
        self._backend = None
        for backend_cls in order:
            source, size = _open_source(self.url)
            try:
                self._backend = backend_cls(source, size, ext)
                break
            except AudioDecodeError as exc:
                failures.append(str(exc))
                if hasattr(source, "close"):
                    source.close()
        if self._backend is None:
            raise AudioDecodeError(f"cannot decode {self.url}: " + "; ".join(failures))
        self.info: AudioInfo = self._backend.info

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release the file."""
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def read(self, start_frame: int = 0, num_frames: int | None = None) -> np.ndarray:
        """Decode ``num_frames`` frames from ``start_frame`` (all to the end when None).

        Returns:
            float32 array shaped ``(frames, channels)``; it may be shorter at the end of the file.
        """
        if num_frames is None:
            parts = list(self.blocks(start_frame=start_frame))
            return (
                np.concatenate(parts)
                if parts
                else np.zeros((0, self.info.channels), dtype=np.float32)
            )
        return self._backend.read(start_frame, num_frames)

    def blocks(
        self,
        block_frames: int = DEFAULT_BLOCK_FRAMES,
        start_frame: int = 0,
        num_frames: int | None = None,
    ) -> Iterator[np.ndarray]:
        """Stream the file as consecutive ``(frames, channels)`` float32 blocks; memory is bounded
        by ``block_frames`` whatever the file's length.
        """
        if block_frames <= 0:
            raise ValueError("block_frames must be positive")
        yield from self._backend.blocks(start_frame, num_frames, block_frames)


# ----------------------------------------------------------------------------------------------
# Signal helpers
# ----------------------------------------------------------------------------------------------


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Downmix ``(frames, channels)`` to ``(frames,)`` by averaging channels; 1-D passes through."""
    if samples.ndim == 1:
        return samples
    if samples.shape[1] == 1:
        return samples[:, 0]
    return samples.mean(axis=1, dtype=np.float32)


def resample(samples: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """Resample with soxr at high quality; float32 in, float32 out.

    Args:
        samples: ``(frames,)`` or ``(frames, channels)``.
        sample_rate: rate of ``samples`` in Hz.
        target_rate: wanted rate in Hz.
    """
    if sample_rate == target_rate or samples.shape[0] == 0:
        return samples.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(samples, sample_rate, target_rate, quality="HQ").astype(
        np.float32, copy=False
    )


def check_finite(samples: np.ndarray, where: str = "") -> None:
    """Raise :class:`NonFiniteAudioError` when ``samples`` holds NaN or infinity."""
    if samples.size and not np.isfinite(samples).all():
        bad = int(samples.size - np.isfinite(samples).sum())
        raise NonFiniteAudioError(f"{bad} NaN/inf samples{(' in ' + where) if where else ''}")


# ----------------------------------------------------------------------------------------------
# Second-based access
# ----------------------------------------------------------------------------------------------


def audio_info(url: str) -> AudioInfo:
    """Header information of ``url`` without decoding its samples."""
    with AudioReader(url) as reader:
        return reader.info


def load_audio(
    url: str,
    sample_rate: int | None = None,
    *,
    mono: bool = True,
    start: float = 0.0,
    end: float | None = None,
    min_duration: float = 0.0,
) -> tuple[np.ndarray, int]:
    """Decode ``[start, end)`` seconds of ``url``, downmixed and resampled.

    Only the requested window is decoded where the format can seek (WAV/FLAC/OGG); FFmpeg formats
    seek to the nearest keyframe before ``start``.

    Args:
        url: a local path or fsspec URL.
        sample_rate: output rate in Hz; ``None`` keeps the native rate.
        mono: downmix to one channel (``(frames,)`` output), else ``(frames, channels)``.
        start: window start in seconds.
        end: window end in seconds; ``None`` reads to the end of the file.
        min_duration: raise :class:`TooShortError` when the decoded audio is shorter.

    Returns:
        ``(samples, rate)``; samples are finite float32.

    Raises:
        AudioError: a subclass naming what is wrong with the input.
    """
    if start < 0 or (end is not None and end <= start):
        raise InvalidWindowError(f"invalid window [{start}, {end})")
    with AudioReader(url) as reader:
        native = reader.info.sample_rate
        first = int(round(start * native))
        if reader.info.exact_length and first >= max(reader.info.num_frames, 1) and start > 0:
            raise InvalidWindowError(
                f"window start {start:.3f}s is past the end ({reader.info.duration:.3f}s)"
            )
        count = None if end is None else int(round((end - start) * native))
        samples = reader.read(first, count)
    if samples.shape[0] == 0:
        raise EmptyAudioError(f"no samples decoded from {normalize_uri(url)}")
    check_finite(samples, normalize_uri(url))
    if mono:
        samples = to_mono(samples)
    rate = native
    if sample_rate is not None and sample_rate != native:
        samples = resample(samples, native, sample_rate)
        rate = sample_rate
    if samples.shape[0] / rate < min_duration:
        raise TooShortError(
            f"{samples.shape[0] / rate:.3f}s of audio, shorter than the minimum {min_duration}s"
        )
    return samples, rate


def iter_windows(
    url: str,
    window_seconds: float,
    sample_rate: int,
    *,
    overlap_seconds: float = 0.0,
    block_frames: int = DEFAULT_BLOCK_FRAMES,
) -> Iterator[tuple[float, np.ndarray]]:
    """Stream a file as mono windows at ``sample_rate``: a long file fans out into windows and
    never sits in memory whole.

    The resampler runs as one continuous stream across the file (soxr's streaming API), so window
    edges carry no resampling artefacts; consecutive windows overlap by ``overlap_seconds``.

    Args:
        url: a local path or fsspec URL.
        window_seconds: length of each window (the last one may be shorter).
        sample_rate: output rate in Hz.
        overlap_seconds: audio shared by consecutive windows.
        block_frames: native frames decoded per step.

    Yields:
        ``(start_seconds, samples)`` with finite float32 mono samples.
    """
    if window_seconds <= 0 or not 0 <= overlap_seconds < window_seconds:
        raise ValueError("need window_seconds > overlap_seconds >= 0")
    import soxr

    win = int(round(window_seconds * sample_rate))
    hop = win - int(round(overlap_seconds * sample_rate))
    with AudioReader(url) as reader:
        native = reader.info.sample_rate
        stream = (
            soxr.ResampleStream(native, sample_rate, 1, dtype="float32", quality="HQ")
            if native != sample_rate
            else None
        )
        buffer = np.zeros(0, dtype=np.float32)
        offset = 0  # output-rate index of buffer[0]
        decoded = 0
        for block in reader.blocks(block_frames):
            check_finite(block, f"{normalize_uri(url)} near {decoded / native:.1f}s")
            decoded += block.shape[0]
            mono = to_mono(block)
            out = stream.resample_chunk(mono, last=False) if stream is not None else mono
            buffer = np.concatenate([buffer, out]) if buffer.size else out
            while buffer.shape[0] >= win:
                yield offset / sample_rate, buffer[:win].copy()
                buffer = buffer[hop:]
                offset += hop
        if decoded == 0:
            raise EmptyAudioError(f"no samples decoded from {normalize_uri(url)}")
        if stream is not None:
            tail = stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            if tail.size:
                buffer = np.concatenate([buffer, tail])
        while buffer.shape[0] > 0:
            if offset > 0 and buffer.shape[0] <= win - hop:
                break  # already covered by the previous window's overlap
            yield offset / sample_rate, buffer[:win].copy()
            if buffer.shape[0] <= win:
                break
            buffer = buffer[hop:]
            offset += hop


def duration_seconds(num_frames: int, sample_rate: int) -> float:
    """Frames to seconds, safe for a zero rate."""
    return float(num_frames) / float(sample_rate) if sample_rate > 0 else math.nan
