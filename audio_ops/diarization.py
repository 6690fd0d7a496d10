"""Diarization of one file from its parts: speech regions + window embeddings -> turns, speaker
centroids. Also the chunk plan every pipeline shares, and a single-process ``diarize_audio`` (the
reference the distributed pipeline must agree with, and the sequential baseline of the
benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from audio_ops import ADDED_LATER
from audio_ops.clustering import ClusteringConfig, cluster_speakers
from audio_ops.embedding import EmbeddingConfig, SpeakerEncoder, grid_windows
from audio_ops.neural_diarization import MAX_CHUNK_SECONDS, SegmentationDiarizationConfig
from audio_ops.packing import chunk_audio, pack, unpack
from audio_ops.profiles import ProfileConfig
from audio_ops.turns import Turn, TurnConfig, build_turns
from audio_ops.vad import SAMPLE_RATE, EnergyVAD, SileroVAD, VadConfig, probs_to_regions


@dataclass(frozen=True)
class ChunkConfig:
    """How a file is cut into chunks that travel through the pipeline.

    Args:
        seconds: the span each chunk is responsible for (its windows start inside it).
        overlap: extra audio after that span, so windows and VAD see past the boundary.
    """

    seconds: float = 60.0
    overlap: float = 2.0

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.overlap < 0:
            raise ValueError("chunk.seconds must be > 0 and chunk.overlap >= 0")


@dataclass(frozen=True)
class DiarizationConfig:
    """Everything one file's diarization depends on.

    Args:
        method: ``segmentation`` (neural segmentation with overlap, then clustering of local
            speaker embeddings: :mod:`audio_ops.neural_diarization`) or ``windows`` (VAD, fixed
            windows, clustering of window embeddings; the faster CPU path, no overlap).
        segmentation: the ``segmentation`` method's parameters.
        vad: speech detection.
        embedding: speaker embedding model and windows.
        clustering: per-file clustering.
        turns: turn smoothing.
        chunk: chunking of long files.
        profile: speaker profiles for global linking (:mod:`audio_ops.profiles`).
    """

    # Before ``method`` existed every run was ``windows``: that value leaves the config hash as
    # it was, so those run folders still resume with ``method: windows``.
    method: str = field(default="segmentation", metadata={**ADDED_LATER, "before": "windows"})
    # The config hash leaves ``segmentation`` out while it holds the defaults of 2026-12-07 (the
    # last version whose hash left the section out at its defaults, so that the section's
    # default changes never reached the hash), and always under ``windows``, which never reads
    # it (:meth:`hash_omitted`). The new defaults (``warm_up``) put it in the hash, in full.
    segmentation: SegmentationDiarizationConfig = field(
        default_factory=SegmentationDiarizationConfig,
        metadata={**ADDED_LATER, "before": SegmentationDiarizationConfig(warm_up=0.0)},
    )
    vad: VadConfig = field(default_factory=VadConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)
    turns: TurnConfig = field(default_factory=TurnConfig)
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig, metadata=ADDED_LATER)

    def __post_init__(self) -> None:
        if self.method not in ("segmentation", "windows"):
            raise ValueError(
                f"diarization.method must be segmentation or windows, not {self.method!r}"
            )
        if self.method == "windows" and self.chunk.overlap < self.embedding.window:
            raise ValueError("chunk.overlap must be at least embedding.window")

    def hash_omitted(self) -> tuple[str, ...]:
        """Fields the config hash leaves out here: ``segmentation`` under ``windows``."""
        return ("segmentation",) if self.method == "windows" else ()

    @property
    def decode_chunk(self) -> ChunkConfig:
        """How files are cut into decoded blocks: ``chunk``, with room past each block for a
        whole segmentation chunk under the ``segmentation`` method."""
        if self.method == "segmentation" and self.chunk.overlap < MAX_CHUNK_SECONDS:
            return ChunkConfig(self.chunk.seconds, MAX_CHUNK_SECONDS)
        return self.chunk


@dataclass
class FileDiarization:
    """The result for one file.

    Args:
        turns: speaker turns in time order.
        centroids: ``(k, d)`` L2-normalised centroid per local speaker.
        speech_seconds: ``(k,)`` speech per local speaker, from the turns.
        num_windows: windows embedded.
        window_starts: ``(m,)`` window starts in time order, seconds.
        window_labels: ``(m,)`` local speaker of each window (-1: dropped in smoothing).
        window_embeddings: ``(m, d)`` the windows' embeddings.
        narrowband_centroids: ``(k, d)`` centroid per local speaker of its band-limited windows
            (its full-band centroid where none was embedded band-limited); ``(k, 0)`` when the
            file has no band-limited embeddings.
        pitch: ``(k,)`` median pitch per local speaker, semitones above 55 Hz (NaN: unknown).
        wideband: whether the recording has speech above 4 kHz (not telephone-band).
    """

    turns: list[Turn]
    centroids: np.ndarray
    speech_seconds: np.ndarray
    num_windows: int
    window_starts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    window_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    window_embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    narrowband_centroids: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    pitch: np.ndarray = field(default_factory=lambda: np.zeros(0))
    wideband: bool = True


def chunk_regions(
    probs: np.ndarray, chunk_start: float, owned: float, config: VadConfig, length: float
) -> np.ndarray:
    """Speech regions of one chunk in file time, clipped to the span the chunk owns.

    Args:
        probs: the chunk's per-frame speech probabilities.
        chunk_start: the chunk's start in the file, seconds.
        owned: seconds from ``chunk_start`` this chunk is responsible for.
        config: VAD thresholds.
        length: the chunk's audio length in seconds.
    """
    regions = probs_to_regions(probs, config, total_seconds=length) + chunk_start
    end = chunk_start + owned
    regions = (
        regions[(regions[:, 1] > chunk_start) & (regions[:, 0] < end)] if regions.size else regions
    )
    if regions.size:
        regions[:, 0] = np.maximum(regions[:, 0], chunk_start)
        regions[:, 1] = np.minimum(regions[:, 1], end)
    return regions.reshape(-1, 2)


def merge_regions(regions: np.ndarray, gap: float = 1e-6) -> np.ndarray:
    """Join regions that touch (as at chunk boundaries); input in any order."""
    regions = np.asarray(regions, dtype=np.float64).reshape(-1, 2)
    if regions.size == 0:
        return regions
    regions = regions[np.argsort(regions[:, 0], kind="stable")]
    out = [regions[0].copy()]
    for s, e in regions[1:]:
        if s <= out[-1][1] + gap:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append(np.array([s, e]))
    return np.asarray(out)


def speaker_centroids(
    embeddings: np.ndarray, labels: np.ndarray, core_share: float = 0.75
) -> np.ndarray:
    """Centroid per label from its most typical windows (the ``core_share`` closest to the plain
    mean), so turn-boundary windows that mix two voices do not pull the centroid."""
    k = int(labels.max()) + 1 if labels.size else 0
    out = np.zeros((k, embeddings.shape[1]), dtype=np.float64)
    for label in range(k):
        members = embeddings[labels == label].astype(np.float64)
        mean = members.mean(axis=0)
        mean /= max(np.linalg.norm(mean), 1e-12)
        if len(members) >= 4:
            sims = members @ mean
            keep = sims >= np.quantile(sims, 1 - core_share)
            mean = members[keep].mean(axis=0)
        out[label] = mean / max(np.linalg.norm(mean), 1e-12)
    return out.astype(np.float32)


def cue_mask(window_starts: np.ndarray, config: EmbeddingConfig) -> np.ndarray:
    """Which windows get a band-limited embedding (a linking cue): every
    ``cue_stride``-th step of the file-wide window grid (the same windows whichever chunk holds
    them)."""
    starts = np.asarray(window_starts, dtype=np.float64)
    if config.cue_stride <= 0 or not config.narrowband:
        return np.zeros(len(starts), dtype=bool)
    return np.round(starts / config.hop).astype(np.int64) % config.cue_stride == 0


def chunk_cues(
    encoder: SpeakerEncoder,
    audio: np.ndarray,
    window_starts: np.ndarray,
    chunk_start: float,
    config: EmbeddingConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The linking cues of one 16 kHz chunk's windows (see :mod:`audio_ops.pitch`).

    Returns:
        ``(narrowband, pitch, band)``: band-limited embeddings of the :func:`cue_mask` windows,
        ``(n, d)``; each window's median pitch in semitones, ``(m,)`` (NaN: unvoiced, or cues
        off); and the chunk's band energies, ``(2,)``.
    """
    from audio_ops.pitch import band_energy, window_pitch

    starts = np.asarray(window_starts, dtype=np.float64)
    length = int(round(config.window * SAMPLE_RATE))
    offsets = np.round((starts - chunk_start) * SAMPLE_RATE).astype(np.int64)
    mask = cue_mask(starts, config)
    narrowband = np.zeros((0, encoder.dim), dtype=np.float32)
    pitch = np.full(len(starts), np.nan)
    if mask.any():
        narrowband = encoder.embed_narrowband(np.asarray(audio, np.float32), offsets[mask], length)
    if config.cue_stride > 0 and config.pitch:
        # Every window: a speaker's pitch is a median over its windows, and more windows hold it
        # steadier (measured: pitch on every 4th window only, 92.9 % instead of 97.1 % of
        # file-speakers on their voice's id on one evaluation set).
        pitch = window_pitch(audio, offsets, length)
    return narrowband, pitch, band_energy(audio)


def diarize_windows(
    regions: np.ndarray,
    window_starts: np.ndarray,
    embeddings: np.ndarray,
    duration: float,
    config: DiarizationConfig,
    narrowband: np.ndarray | None = None,
    pitch: np.ndarray | None = None,
    band: np.ndarray | None = None,
) -> FileDiarization:
    """Cluster a file's windows and build its turns.

    Args:
        regions: ``(n, 2)`` speech regions, seconds.
        window_starts: ``(m,)`` window starts, seconds.
        embeddings: ``(m, d)`` window embeddings.
        duration: file length, seconds.
        config: clustering and turn parameters.
        narrowband: ``(m, d)`` band-limited embeddings, NaN rows for windows without one.
        pitch: ``(m,)`` window pitches in semitones (NaN: unknown).
        band: ``(2,)`` the file's summed band energies (:func:`audio_ops.pitch.band_energy`).
    """
    from audio_ops.pitch import is_wideband, speaker_pitch

    embeddings = np.asarray(embeddings, dtype=np.float32)
    wideband = True if band is None else is_wideband(np.asarray(band))
    if len(window_starts) == 0:
        dim = embeddings.shape[1] if embeddings.ndim == 2 else 0
        return FileDiarization(
            [], np.zeros((0, dim), np.float32), np.zeros(0), 0, wideband=wideband
        )
    embeddings = embeddings.reshape(len(window_starts), -1)
    order = np.argsort(window_starts, kind="stable")
    window_starts, embeddings = np.asarray(window_starts)[order], embeddings[order]
    labels = cluster_speakers(embeddings, config.clustering)
    turns = build_turns(
        regions, window_starts, config.embedding.window, labels, duration, config.turns
    )
    # Speakers that lost every frame in smoothing are dropped; the rest are renumbered 0..k-1 in
    # order of first appearance in the turns.
    order_of = {}
    for turn in turns:
        order_of.setdefault(turn.speaker, len(order_of))
    for turn in turns:
        turn.speaker = order_of[turn.speaker]
    remap = np.array([order_of.get(int(label), -1) for label in labels])
    kept = remap >= 0
    k = len(order_of)
    centroids = (
        speaker_centroids(embeddings[kept], remap[kept])
        if kept.any()
        else np.zeros((0, embeddings.shape[1]), np.float32)
    )
    narrow_centroids = np.zeros((k, 0), np.float32)
    if narrowband is not None and len(narrowband):
        narrowband = np.asarray(narrowband, dtype=np.float32).reshape(len(order), -1)[order]
        have = kept & np.isfinite(narrowband).all(axis=1)
        narrow_centroids = centroids.copy()
        for label in np.unique(remap[have]):
            members = have & (remap == label)
            narrow_centroids[label] = speaker_centroids(
                narrowband[members], np.zeros(int(members.sum()), np.int64)
            )[0]
    speaker_f0 = (
        speaker_pitch(np.asarray(pitch, dtype=np.float64)[order], remap, k)
        if pitch is not None and len(pitch)
        else np.full(k, np.nan)
    )
    seconds = np.zeros(k)
    for turn in turns:
        seconds[turn.speaker] += turn.end - turn.start
    return FileDiarization(
        turns,
        centroids,
        seconds,
        int(len(window_starts)),
        window_starts,
        remap,
        embeddings,
        narrow_centroids,
        speaker_f0,
        wideband,
    )


def chunk_plan(num_samples: int, config: ChunkConfig) -> list[tuple[int, int, int]]:
    """``(start, end, owned_end)`` sample spans of the chunks of a 16 kHz file."""
    step = int(round(config.seconds * SAMPLE_RATE))
    extra = int(round(config.overlap * SAMPLE_RATE))
    plan = []
    for start in range(0, max(num_samples, 1), step):
        plan.append((start, min(start + step + extra, num_samples), min(start + step, num_samples)))
    return plan


def diarize_audio(
    audio: np.ndarray,
    config: DiarizationConfig,
    vad: SileroVAD | EnergyVAD,
    encoder: SpeakerEncoder,
) -> FileDiarization:
    """Diarize one 16 kHz mono signal in this process, chunk by chunk, exactly as the pipeline
    does across actors.

    Args:
        audio: the samples.
        config: the parameters.
        vad: a loaded VAD backend.
        encoder: a loaded speaker encoder.
    """
    window = int(round(config.embedding.window * SAMPLE_RATE))
    all_regions, all_starts, all_embeddings = [], [], []
    all_narrow, all_pitch, band = [], [], np.zeros(2)
    for start, end, owned_end in chunk_plan(len(audio), config.chunk):
        chunk = audio[start:end]
        chunk_start = start / SAMPLE_RATE
        owned = (owned_end - start) / SAMPLE_RATE
        probs = vad.speech_probs(chunk)
        regions = chunk_regions(probs, chunk_start, owned, config.vad, len(chunk) / SAMPLE_RATE)
        full = (
            probs_to_regions(probs, config.vad, total_seconds=len(chunk) / SAMPLE_RATE)
            + chunk_start
        )
        starts = grid_windows(full, chunk_start, chunk_start + owned, config.embedding)
        offsets = np.round((starts - chunk_start) * SAMPLE_RATE).astype(np.int64)
        all_regions.append(regions)
        all_starts.append(starts)
        all_embeddings.append(encoder.embed(chunk, offsets, window))
        narrow, pitch, chunk_band = chunk_cues(
            encoder, chunk, starts, chunk_start, config.embedding
        )
        all_narrow.append(spread_narrowband(narrow, starts, config.embedding, encoder.dim))
        all_pitch.append(pitch)
        band = band + chunk_band
    regions = merge_regions(np.concatenate(all_regions)) if all_regions else np.zeros((0, 2))
    return diarize_windows(
        regions,
        np.concatenate(all_starts) if all_starts else np.zeros(0),
        np.concatenate(all_embeddings) if all_embeddings else np.zeros((0, encoder.dim)),
        len(audio) / SAMPLE_RATE,
        config,
        np.concatenate(all_narrow) if all_narrow else None,
        np.concatenate(all_pitch) if all_pitch else None,
        band,
    )


def spread_narrowband(
    narrowband: np.ndarray, window_starts: np.ndarray, config: EmbeddingConfig, dim: int
) -> np.ndarray:
    """``(m, d)`` rows aligned with ``window_starts``: the :func:`chunk_cues` band-limited
    embeddings on the :func:`cue_mask` windows, NaN elsewhere."""
    out = np.full((len(window_starts), dim), np.nan, dtype=np.float32)
    mask = cue_mask(window_starts, config)
    narrowband = np.asarray(narrowband, dtype=np.float32)
    if mask.any() and narrowband.size:
        out[mask] = narrowband.reshape(int(mask.sum()), -1)
    return out


# ----------------------------------------------------------------------------------------------
# Batch operators (numpy batches in, numpy batches out; no Ray): the pipeline's actor stages.
# Chunk rows carry ``audio`` as raw float32 bytes, ``chunk_start`` and ``owned`` in seconds.
# ----------------------------------------------------------------------------------------------


def _column(batch: dict[str, np.ndarray], name: str) -> list:
    return list(batch[name])


class SpeechOperator:
    """VAD stage: speech regions of each chunk, and the windows to embed in it.

    Reads ``audio``, ``chunk_start``, ``owned``; writes ``regions`` (owned speech, packed
    ``(n, 2)`` seconds) and ``window_starts`` (packed seconds, file time).

    Args:
        config: the diarization config (VAD thresholds, embedding windows).
        threads: ONNX Runtime threads of this actor.
    """

    inputs = ("audio", "chunk_start", "owned")
    outputs = ("regions", "window_starts")
    uses_model = True
    num_cpus = 0.25
    batch_size = 4
    max_actors = 2

    def __init__(self, config: DiarizationConfig, threads: int = 1):
        from audio_ops.vad import make_vad

        self.config = config
        self.vad = make_vad(config.vad, threads=threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        regions_out, windows_out = [], []
        for audio_bytes, chunk_start, owned in zip(
            _column(batch, "audio"),
            _column(batch, "chunk_start"),
            _column(batch, "owned"),
            strict=True,
        ):
            audio = chunk_audio(audio_bytes)
            length = len(audio) / SAMPLE_RATE
            probs = self.vad.speech_probs(audio)
            full = probs_to_regions(probs, self.config.vad, total_seconds=length) + float(
                chunk_start
            )
            owned_regions = chunk_regions(
                probs, float(chunk_start), float(owned), self.config.vad, length
            )
            starts = grid_windows(
                full, float(chunk_start), float(chunk_start) + float(owned), self.config.embedding
            )
            regions_out.append(pack(owned_regions))
            windows_out.append(pack(starts.astype(np.float64)))
        out = dict(batch)
        out["regions"] = np.array(regions_out, dtype=object)
        out["window_starts"] = np.array(windows_out, dtype=object)
        return out


class EmbeddingOperator:
    """Embedding stage: embeds each chunk's planned windows, batched; drops the audio.

    Reads ``audio``, ``chunk_start``, ``window_starts``; writes ``embeddings`` (packed
    ``(n, d)`` float32). Runs on the GPU when the actor has one (``embedding.device: auto``).

    Args:
        config: the diarization config (embedding model and windows).
        threads: torch threads of this actor (CPU).
    """

    inputs = ("audio", "chunk_start", "window_starts")
    outputs = ("embeddings", "narrowband", "window_pitch", "band")
    uses_model = True
    num_cpus = 0.5
    batch_size = 4
    max_actors = 2

    def __init__(self, config: DiarizationConfig, threads: int = 1):
        import torch

        from audio_ops.embedding import make_encoder

        torch.set_num_threads(max(1, threads))
        self.config = config
        self.encoder = make_encoder(config.embedding)
        self.window = int(round(config.embedding.window * SAMPLE_RATE))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        columns: dict[str, list[bytes]] = {name: [] for name in self.outputs}
        for audio_bytes, chunk_start, starts_bytes in zip(
            _column(batch, "audio"),
            _column(batch, "chunk_start"),
            _column(batch, "window_starts"),
            strict=True,
        ):
            starts = unpack(starts_bytes)
            audio = chunk_audio(audio_bytes)
            offsets = np.round((starts - float(chunk_start)) * SAMPLE_RATE).astype(np.int64)
            columns["embeddings"].append(pack(self.encoder.embed(audio, offsets, self.window)))
            narrow, pitch, band = chunk_cues(
                self.encoder, audio, starts, float(chunk_start), self.config.embedding
            )
            columns["narrowband"].append(pack(narrow))
            columns["window_pitch"].append(pack(pitch))
            columns["band"].append(pack(band))
        out = {k: v for k, v in batch.items() if k != "audio"}
        for name, values in columns.items():
            out[name] = np.array(values, dtype=object)
        return out


class ChunkAnalysisOperator:
    """VAD and embedding of each chunk in one actor: :class:`SpeechOperator` then
    :class:`EmbeddingOperator`, without the chunk's audio travelling between two actor pools.

    The default of ``voxflow diarize`` on CPUs: one actor per core, one thread each, and one
    object-store hop fewer per chunk. On a GPU cluster the two stages can run as separate pools
    instead (``fuse_stages: false``), so CPU VAD actors and GPU embedding actors scale apart.

    Args:
        config: the diarization config.
        threads: ONNX Runtime and torch threads of this actor.
    """

    inputs = SpeechOperator.inputs
    outputs = SpeechOperator.outputs + EmbeddingOperator.outputs
    uses_model = True
    num_cpus = 1.0
    batch_size = 2

    def __init__(self, config: DiarizationConfig, threads: int = 1):
        self.speech = SpeechOperator(config, threads)
        self.embedding = EmbeddingOperator(config, threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.embedding(self.speech(batch))


def diarize_chunks(chunks: list[dict], config: DiarizationConfig) -> FileDiarization:
    """Assemble one file's chunk rows (any order) and diarize it.

    Args:
        chunks: rows with ``chunk_index``, ``chunk_start``, ``num_samples``, ``regions``,
            ``window_starts``, ``embeddings``.
        config: clustering and turn parameters.
    """
    chunks = sorted(chunks, key=lambda r: int(r["chunk_index"]))
    duration = max(float(r["chunk_start"]) + int(r["num_samples"]) / SAMPLE_RATE for r in chunks)
    regions = merge_regions(np.concatenate([unpack(r["regions"]) for r in chunks]))
    starts = np.concatenate([unpack(r["window_starts"]) for r in chunks])
    embeddings = [unpack(r["embeddings"]) for r in chunks]
    dim = max((e.shape[1] for e in embeddings if e.ndim == 2 and e.shape[0]), default=0)
    stacked = (
        np.concatenate([e.reshape(-1, dim) if dim else e.reshape(0, 0) for e in embeddings])
        if dim
        else np.zeros((0, 0), np.float32)
    )
    narrow = pitch = band = None
    if dim and all("narrowband" in r for r in chunks):
        narrow = np.concatenate(
            [
                spread_narrowband(
                    unpack(r["narrowband"]), unpack(r["window_starts"]), config.embedding, dim
                )
                for r in chunks
            ]
        )
        pitch = np.concatenate([unpack(r["window_pitch"]) for r in chunks])
        band = np.sum([unpack(r["band"]) for r in chunks], axis=0)
    return diarize_windows(regions, starts, stacked, duration, config, narrow, pitch, band)


def iter_chunks(url: str, config: ChunkConfig):
    """Stream a file as 16 kHz mono chunks: ``(index, start_seconds, owned_seconds, samples,
    is_last)``. Memory holds two chunks at most, whatever the file's length.

    Args:
        url: a local path or fsspec URL.
        config: chunk span and overlap.
    """
    from audio_ops.io import iter_windows

    pending = None
    index = 0
    for start, samples in iter_windows(
        url, config.seconds + config.overlap, SAMPLE_RATE, overlap_seconds=config.overlap
    ):
        if pending is not None:
            p_start, p_samples = pending
            yield index, p_start, config.seconds, p_samples, False
            index += 1
        pending = (start, samples)
    if pending is not None:
        p_start, p_samples = pending
        yield index, p_start, max(len(p_samples), 1) / SAMPLE_RATE, p_samples, True
