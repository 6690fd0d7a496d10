"""Diarization from neural segmentation (``diarization.method: segmentation``, the default).

The pipeline of pyannote.audio 3, built from parts that run offline here:

1. **Local segmentation** (:mod:`audio_ops.segmentation`): segmentation-3.0 over 10 s chunks every
   ``step`` seconds says which of up to three local speakers talk in each 17 ms frame, two at once
   at most.
2. **Local speaker embeddings**: each (chunk, local speaker) is embedded with CAM++ from that
   speaker's frames alone, preferring the frames where nobody else talks. To save CPU only every
   ``embed_every``-th chunk is embedded; the other chunks' speakers are matched to the clustered
   ones by how their activity overlaps (every frame is seen by several chunks).
3. **Clustering** of the embeddings of one file into speakers: average-linkage agglomerative
   clustering on cosine distance of the embeddings with enough clean speech, then every local
   speaker is assigned to a speaker centroid, two local speakers of one chunk never to the same
   one (a Hungarian assignment per chunk), as pyannote's constrained assignment does.
4. **Reconstruction** with overlap: the frame-level speaker count (aggregated over chunks) says how
   many speakers talk in each frame; that many of the most active clustered speakers are kept.
   Turns can overlap, and ``overlap`` marks those that do.

Everything here is pure numpy/torch; :class:`SegmentationOperator` is the batch operator the Ray
pipeline runs in its actors, and :func:`diarize_segments` the per-file step after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audio_ops import ADDED_LATER
from audio_ops.clustering import ClusteringConfig
from audio_ops.packing import chunk_audio, pack, unpack
from audio_ops.segmentation import (
    SAMPLE_RATE,
    SegmentationModel,
    aggregate,
    chunk_starts,
    cut_chunks,
    frame_offsets,
    speaker_count,
    total_frames_of,
)
from audio_ops.turns import Turn


@dataclass(frozen=True)
class SegmentationDiarizationConfig:
    """The ``diarization.segmentation`` section.

    Args:
        model: segmentation checkpoint (see :class:`audio_ops.segmentation.SegmentationConfig`).
        sha256: optional pin of the checkpoint file.
        step: seconds between consecutive 10 s chunks.
        batch_size: chunks per forward pass of the segmentation model.
        device: ``auto`` (GPU when the actor has one), ``cpu`` or ``cuda``.
        embedding: speaker embedding model of the local speakers (``campplus``, bundled).
        embedding_runtime: CAM++ on CPUs: ``auto``, ``onnx`` or ``torch``.
        embed_every: embed every this many chunks (the others are matched by their activity).
        min_embedding_seconds: a local speaker with less speech in a chunk gets no embedding.
        min_train_seconds: embeddings from less clean (non-overlapped) speech than this are
            assigned to speakers but do not shape them.
        threshold: cosine distance at which clustering stops merging (average linkage).
        min_cluster_size: clusters of fewer embeddings are merged into their nearest one (a
            tenth of the file's embeddings at most, so short files keep their short speakers).
            pyannote's value: spurious clusters of mixed or overlapped speech grow with the file
            (2 embeddings in 10 minutes, up to 8 in 25 minutes of real-voice conversation).
        min_duration_off: a speaker's pauses shorter than this are bridged (seconds).
        max_embeddings: longer files cluster this many evenly spaced embeddings (memory
            O(n^2)), then assign every embedding.
        outlier_threshold: a local speaker with too little clean speech to shape the
            clustering (under ``min_train_seconds``) but at least ``min_outlier_seconds`` of it,
            farther than this cosine distance from every speaker found, is someone else: such
            local speakers become speakers of their own (clustered among themselves at
            ``threshold``, the ``min_cluster_size`` floor applying). ``None``: they are always
            given to the nearest speaker. Real meetings have participants who say a second or
            two; on a 30 s AMI excerpt this finds one (count exact on 4 of 10 files instead of
            3) and changes nothing on the simulated sets (benchmarks/README.md).
        min_outlier_seconds: see ``outlier_threshold``.
        split_threshold: a local speaker of an embedded chunk with at least
            ``2 * min_split_seconds + min_embedding_seconds`` of speech is embedded in two
            halves, cut at the longest pause between them; halves less alike than this cosine
            similarity are two people that segmentation-3.0 gave one label (it does on real
            meetings, where one voice takes over from another), and become two local speakers.
            ``None``: never split. Halves of one voice that still come out less alike are
            joined again once the file's speakers are known (:func:`rejoin_halves`). Chosen on
            the AMI excerpts, dev and long_dev (benchmarks/README.md): 0.5-0.6 about alike, DER
            there 14.5 / 6.2 / 6.0 % against 16.1 / 8.4 / 10.3 % without; 0.65 and more lose
            speaker counts.
        min_split_seconds: the least speech on each side of the cut.
        warm_up: seconds at each end of a chunk left out of the per-frame speaker count
            wherever other chunks see the frame from further inside (pyannote's
            ``speaker_count`` helper can trim chunk edges, 1 s by default; its diarization
            pipeline calls it with no trim).
            Chosen on the AMI excerpts, dev, dev2 and long_dev (benchmarks/README.md): 0.25 s
            takes AMI from 14.46 to 13.89 % DER and moves the simulated sets, held-out ones
            included, by 0.04 points at most; 1 s loses 0.14 on dev. ``0``: every frame counts,
            as before 2026-12-08.
    """

    model: str = "bundled:pyannote-segmentation-3.0"
    sha256: str | None = None
    step: float = 2.5
    batch_size: int = 16
    device: str = "auto"
    embedding: str = "campplus"
    embedding_runtime: str = "auto"
    embed_every: int = 2
    min_embedding_seconds: float = 0.2
    min_train_seconds: float = 1.0
    threshold: float = 0.4
    min_cluster_size: int = 12
    min_duration_off: float = 0.5
    max_embeddings: int = 4000
    outlier_threshold: float | None = 0.6
    min_outlier_seconds: float = 0.3
    split_threshold: float | None = 0.6
    min_split_seconds: float = 1.0
    warm_up: float = field(default=0.25, metadata={**ADDED_LATER, "before": 0.0})

    def __post_init__(self) -> None:
        if not 0 < self.step <= 10:
            raise ValueError("segmentation.step must lie in (0, 10] seconds")
        if self.batch_size < 1 or self.embed_every < 1 or self.min_cluster_size < 1:
            raise ValueError("segmentation: batch_size, embed_every, min_cluster_size >= 1")
        if not 0 < self.threshold < 2:
            raise ValueError("segmentation.threshold must lie in (0, 2)")
        if (
            min(
                self.min_embedding_seconds,
                self.min_train_seconds,
                self.min_duration_off,
                self.min_outlier_seconds,
                self.min_split_seconds,
            )
            < 0
        ):
            raise ValueError("segmentation: seconds must be >= 0")
        if self.embedding_runtime not in ("auto", "onnx", "torch"):
            raise ValueError("segmentation.embedding_runtime must be auto, onnx or torch")
        if self.outlier_threshold is not None and not 0 < self.outlier_threshold < 2:
            raise ValueError("segmentation.outlier_threshold must lie in (0, 2) or be null")
        if self.split_threshold is not None and not -1 <= self.split_threshold <= 1:
            raise ValueError("segmentation.split_threshold must lie in [-1, 1] or be null")
        if self.max_embeddings < 2:
            raise ValueError("segmentation.max_embeddings must be >= 2")
        if not 0 <= self.warm_up < 5:
            raise ValueError("segmentation.warm_up must lie in [0, 5) seconds")

    def segmentation_config(self):
        """The model part, as :func:`audio_ops.segmentation.load_segmentation` takes it."""
        from audio_ops.segmentation import SegmentationConfig

        return SegmentationConfig(self.model, self.sha256, self.batch_size, self.device)

    def embedding_config(self):
        """The embedding model, as :func:`audio_ops.embedding.make_encoder` takes it."""
        from audio_ops.embedding import EmbeddingConfig

        return EmbeddingConfig(
            model=self.embedding,
            device=self.device,
            runtime=self.embedding_runtime,
            cue_stride=0,
        )


# ----------------------------------------------------------------------------------------------
# Chunk analysis (segmentation + embeddings): what the actors compute
# ----------------------------------------------------------------------------------------------


def mask_frame_centres(frames) -> np.ndarray:
    """Centre times (seconds from the chunk's start) of embedding mask frames (10 ms steps,
    25 ms long) by index."""
    return 0.0125 + 0.01 * np.asarray(frames, dtype=np.float64)


def seg_to_mask_frames(activity: np.ndarray, frame_step: float, frame_duration: float, n: int):
    """Local speaker activity ``(..., frames, s)`` resampled to ``n`` 10 ms embedding frames
    (25 ms long): each embedding frame takes the segmentation frame nearest its centre.

    Returns:
        ``(..., s, n)`` bool.
    """
    centres = mask_frame_centres(np.arange(n))
    nearest = np.round((centres - frame_duration / 2) / frame_step).astype(np.int64)
    nearest = np.clip(nearest, 0, activity.shape[-2] - 1)
    return np.swapaxes(activity[..., nearest, :], -1, -2) > 0


def embedding_masks(
    activity: np.ndarray, frame_step: float, frame_duration: float, n: int, min_frames: int
) -> np.ndarray:
    """Which embedding frames each (chunk, local speaker) is embedded from: its frames without
    another speaker, or all its frames when those are too few (pyannote's ``exclude_overlap``).

    Args:
        activity: ``(chunks, frames, s)`` 0/1 local activity.
        frame_step: segmentation frame step, seconds.
        frame_duration: segmentation frame length, seconds.
        n: embedding frames per chunk.
        min_frames: frames below which the clean mask falls back to the whole one.

    Returns:
        ``(chunks, s, n)`` bool.
    """
    clean = activity * (activity.sum(axis=-1, keepdims=True) < 2)
    whole = seg_to_mask_frames(activity, frame_step, frame_duration, n)
    alone = seg_to_mask_frames(clean, frame_step, frame_duration, n)
    enough = alone.sum(axis=-1, keepdims=True) >= min_frames
    return np.where(enough, alone, whole)


def split_times(masks: np.ndarray, min_half: int, min_total: int) -> np.ndarray:
    """Where each long (chunk, local speaker) mask would be cut in two: in its longest pause
    that leaves at least ``min_half`` frames on each side (the one nearest the middle of its
    frames, of equal ones).

    Args:
        masks: ``(c, s, n)`` bool over 10 ms embedding frames (:func:`embedding_masks`).
        min_half: fewest frames on each side of the cut.
        min_total: masks with fewer frames are not cut.

    Returns:
        ``(c, s)`` cut times in seconds from the chunk's start (the middle of the pause between
        the last frame before and the first after), NaN where not cut.
    """
    cut = np.full(masks.shape[:2], np.nan)
    for c, s in zip(*np.nonzero(masks.sum(axis=-1) >= max(min_total, 2 * min_half)), strict=True):
        frames = np.flatnonzero(masks[c, s])
        # Gap before frames[i], for i in [min_half, len - min_half].
        gaps = np.diff(frames)[min_half - 1 : len(frames) - min_half]
        # Of equal pauses (none at all, often: the model hears one voice go on), the one
        # nearest the middle, so both halves have as much speech as can be.
        ties = min_half + np.flatnonzero(gaps == gaps.max())
        i = int(ties[np.argmin(np.abs(ties - len(frames) / 2))])
        cut[c, s] = (mask_frame_centres(frames[i - 1]) + mask_frame_centres(frames[i])) / 2
    return cut


def analyse_chunks(
    audio: np.ndarray,
    offsets: np.ndarray,
    embed: np.ndarray,
    model: SegmentationModel,
    encoder,
    config: SegmentationDiarizationConfig,
    ends: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Segmentation of the 10 s chunks of a signal, and embeddings of the local speakers of those
    marked.

    With ``config.split_threshold`` set, each embedded local speaker with enough speech is
    embedded in two halves (:func:`split_times`) instead of as a whole; where the halves are less
    alike than the threshold, its activity after the cut moves to a local speaker of its own,
    ``s`` columns further, each with its half's embedding; otherwise its embedding is the
    halves' mean, weighted by their speech (about what the whole gives, at no extra cost). The
    outputs then always have ``2 s`` local speakers (the second ``s`` empty where nothing was
    split), so chunks and blocks stack.

    Args:
        audio: float32 samples (blocks may be concatenated: see ``ends``).
        offsets: ``(c,)`` first sample of each chunk.
        embed: ``(c,)`` bool: which chunks to embed.
        model: the segmentation model.
        encoder: a :class:`audio_ops.embedding.SpeakerEncoder`.
        config: the section's parameters.
        ends: ``(c,)`` where each chunk's signal ends (it is zero-padded past it); default: the
            end of ``audio``.

    Returns:
        ``(activity, embeddings)``: ``(c, frames, s)`` uint8 and ``(c, s, d)`` float32 (NaN
        rows for chunks not embedded and speakers with too little speech); ``s`` is the model's
        local speakers, twice that with ``split_threshold``.
    """
    from audio_ops.embedding import mask_frames

    offsets = np.asarray(offsets, dtype=np.int64)
    activity = model.activity_at(audio, offsets, ends).astype(np.uint8)
    local = activity.shape[2]
    splitting = config.split_threshold is not None
    width = 2 * local if splitting else local
    embeddings = np.full((len(offsets), width, encoder.dim), np.nan, np.float32)
    pick = np.flatnonzero(np.asarray(embed, dtype=bool))
    if splitting:
        activity = np.concatenate([activity, np.zeros_like(activity)], axis=2)
    if not len(pick):
        return activity, embeddings
    n = mask_frames(model.chunk_samples)
    min_frames = max(1, int(round(config.min_embedding_seconds * 100)))
    masks = embedding_masks(
        activity[pick, :, :local], model.frame_step, model.frame_duration, n, min_frames
    )
    chunks = cut_chunks(
        audio, offsets[pick], model.chunk_samples, None if ends is None else ends[pick]
    )
    if not splitting:
        embeddings[pick] = encoder.embed_masked(chunks, masks, min_frames)
        return activity, embeddings
    min_half = max(1, int(round(config.min_split_seconds * 100)))
    cut = split_times(masks, min_half, 2 * min_half + min_frames)
    centres = mask_frame_centres(np.arange(n))
    before = masks & (centres < cut[..., None])
    after = masks & (centres >= cut[..., None])
    # A local speaker that may be cut is embedded in its two halves only, not as a whole too
    # (that would double CAM++'s cost): when the halves are one voice, its embedding is their
    # mean, weighted by their speech. One pass: each chunk's filterbank serves every mask.
    whole_masks = masks & np.isnan(cut)[..., None]
    out = encoder.embed_masked(
        chunks, np.concatenate([whole_masks, before, after], axis=1), min_frames
    )
    whole, first, second = out[:, :local], out[:, local : 2 * local], out[:, 2 * local :]
    both = _embedded(first) & _embedded(second)
    similarity = np.where(both, np.nan_to_num(first * second).sum(axis=-1), 1.0)
    split = both & (similarity < config.split_threshold)
    frames_a, frames_b = before.sum(axis=-1)[..., None], after.sum(axis=-1)[..., None]
    mean = _normalise(frames_a * np.nan_to_num(first) + frames_b * np.nan_to_num(second))
    whole[both & ~split] = mean[both & ~split]
    whole[split] = first[split]
    lone = ~np.isnan(cut) & ~both  # a half too short to embed (a truncated last chunk)
    whole[lone] = np.where(np.isnan(first[lone]), second[lone], first[lone])
    second[~split] = np.nan
    embeddings[pick] = np.concatenate([whole, second], axis=1)
    seg_centres = model.frame_duration / 2 + model.frame_step * np.arange(activity.shape[1])
    for c, s in zip(*np.nonzero(split), strict=True):
        later = seg_centres >= cut[c, s]
        chunk = pick[c]
        activity[chunk, later, local + s] = activity[chunk, later, s]
        activity[chunk, later, s] = 0
    return activity, embeddings


def block_chunk_starts(
    block_start: float,
    owned: float,
    num_samples: int,
    is_last: bool,
    step: float,
    chunk_seconds: float,
) -> np.ndarray:
    """File-time starts (seconds) of the segmentation chunks a decoded block is responsible for:
    the file-wide grid of ``step`` inside ``[block_start, block_start + owned)`` that fits in the
    block, and, in a file's last block, one more chunk flush with the file's end.

    A file shorter than a chunk has one chunk at 0 (zero-padded)."""
    chunk = int(round(chunk_seconds * SAMPLE_RATE))
    start = int(round(block_start * SAMPLE_RATE))
    step_samples = int(round(step * SAMPLE_RATE))
    end = start + int(round(owned * SAMPLE_RATE))
    first = -(-start // step_samples) * step_samples
    grid = np.arange(first, end, step_samples, dtype=np.int64)
    block_end = start + num_samples
    grid = grid[grid + chunk <= block_end]
    if is_last:
        last = max(block_end - chunk, 0)
        if block_end < chunk:
            grid = np.zeros(1, np.int64) if start == 0 else grid[:0]
        elif not len(grid) or grid[-1] < last:
            grid = np.append(grid, last)
    return grid / SAMPLE_RATE


def embed_mask_for(
    starts_seconds: np.ndarray, step: float, every: int, is_last: bool
) -> np.ndarray:
    """Which chunks are embedded: every ``every``-th of the file-wide grid (by its index), and
    the file's final chunk (so the tail always has an embedded chunk)."""
    index = np.round(np.asarray(starts_seconds) / step).astype(np.int64)
    on_grid = np.isclose(np.asarray(starts_seconds), index * step)
    mask = on_grid & (index % every == 0)
    if is_last and len(mask):
        mask[-1] = True
    return mask


# ----------------------------------------------------------------------------------------------
# Per file: clustering and reconstruction
# ----------------------------------------------------------------------------------------------


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _embedded(embeddings: np.ndarray) -> np.ndarray:
    """Which rows of ``(..., d)`` embeddings exist (an unembedded local speaker is all NaN)."""
    return ~np.isnan(embeddings).any(axis=-1)


def _constrained_assign(scores: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Per chunk, local speakers to clusters one-to-one (Hungarian, highest total score); inactive
    local speakers and those left over get -2."""
    from scipy.optimize import linear_sum_assignment

    chunks, local, _ = scores.shape
    hard = np.full((chunks, local), -2, dtype=np.int64)
    for c in range(chunks):
        if not active[c].any():
            continue
        rows, cols = linear_sum_assignment(scores[c], maximize=True)
        for r, k in zip(rows, cols, strict=True):
            if active[c, r]:
                hard[c, r] = k
    return hard


def _small_cluster_floor(config: SegmentationDiarizationConfig, n: int) -> int:
    """Fewest embeddings a cluster of ``n`` needs to stand: small clusters are spurious in long
    files (a cough, a turn boundary), real in short ones (pyannote's rule: a tenth of the
    embeddings at most)."""
    return min(config.min_cluster_size, max(1, n // 10))


def _agglomerate(x: np.ndarray, config: SegmentationDiarizationConfig, bounds: ClusteringConfig):
    """Cluster labels of unit embeddings ``x``: average linkage on cosine distance, stopped at
    ``threshold`` (or cut at the count the bounds force), small clusters merged away."""
    from scipy.cluster.hierarchy import fcluster, linkage

    n = len(x)
    if n == 1:
        return np.zeros(1, np.int64)
    tree = linkage(x, method="average", metric="cosine")
    lo, hi = bounds.min_speakers, bounds.max_speakers
    if bounds.num_speakers is not None:
        lo = hi = bounds.num_speakers
    lo, hi = min(lo, n), min(hi, n)
    if lo == hi:
        return fcluster(tree, lo, criterion="maxclust") - 1
    labels = fcluster(tree, config.threshold, criterion="distance") - 1
    floor = _small_cluster_floor(config, n)
    ids, counts = np.unique(labels, return_counts=True)
    large = ids[counts >= floor]
    if 0 < len(large) < len(ids):
        centroids = _normalise(np.stack([x[labels == k].mean(axis=0) for k in large]))
        for k in ids[counts < floor]:
            members = labels == k
            near = large[np.argmax(_normalise(x[members].mean(axis=0)) @ centroids.T)]
            labels[members] = near
    count = len(np.unique(labels))
    if count < lo or count > hi:
        labels = fcluster(tree, min(max(count, lo), hi), criterion="maxclust") - 1
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def _add_outlier_speakers(
    embeddings: np.ndarray,
    short: np.ndarray,
    clean: np.ndarray,
    centroids: np.ndarray,
    config: SegmentationDiarizationConfig,
    floor: int,
    room: int,
) -> np.ndarray:
    """``centroids`` plus speakers of the ``short`` (chunk, local speaker) embeddings with at
    least ``min_outlier_seconds`` of ``clean`` speech that lie farther than
    ``outlier_threshold`` from every centroid: clustered among themselves at ``threshold``,
    groups under ``floor`` embeddings left out, the largest ``room`` groups kept."""
    pick = short & (clean >= config.min_outlier_seconds)
    if room < 1 or not pick.any():
        return centroids
    y = _normalise(embeddings[pick].astype(np.float64))
    y = y[(1.0 - y @ centroids.T).min(axis=1) > config.outlier_threshold]
    if not len(y):
        return centroids
    labels = np.zeros(len(y), np.int64)
    if len(y) > 1:
        from scipy.cluster.hierarchy import fcluster, linkage

        tree = linkage(y, method="average", metric="cosine")
        labels = fcluster(tree, config.threshold, criterion="distance") - 1
    ids, counts = np.unique(labels, return_counts=True)
    keep = ids[counts >= floor][np.argsort(-counts[counts >= floor], kind="stable")][:room]
    if not len(keep):
        return centroids
    extra = _normalise(np.stack([y[labels == k].mean(axis=0) for k in keep]))
    return np.concatenate([centroids, extra])


def cluster_local_speakers(
    activity: np.ndarray,
    embeddings: np.ndarray,
    frame_step: float,
    config: SegmentationDiarizationConfig,
    bounds: ClusteringConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Which file speaker each (chunk, local speaker) is, from their embeddings.

    Args:
        activity: ``(c, frames, s)`` 0/1 local activity.
        embeddings: ``(c, s, d)`` unit embeddings, NaN where none.
        frame_step: segmentation frame step, seconds.
        config: clustering parameters.
        bounds: speaker count constraints (``num_speakers``, ``min_speakers``, ``max_speakers``
            of the ``clustering`` section).

    Returns:
        ``(hard, centroids)``: ``(c, s)`` speaker index per local speaker with an embedding (-2
        for the rest: :func:`stitch_unembedded` matches those), and the ``(k, d)`` unit
        centroids.
    """
    bounds = bounds or ClusteringConfig()
    dim = embeddings.shape[-1]
    valid = _embedded(embeddings)
    active = activity.sum(axis=1) > 0
    if not valid.any():
        # Speech too short to embed anywhere: one speaker (without a voice print: a zero
        # centroid, which global linking leaves on its own), if anyone speaks at all.
        hard = np.where(active, 0, -2).astype(np.int64)
        return hard, np.zeros((1 if active.any() else 0, dim), np.float32)
    clean = (activity * (activity.sum(axis=2, keepdims=True) == 1)).sum(axis=1) * frame_step
    train = valid & (clean >= config.min_train_seconds)
    if train.sum() < 2:
        train = valid
    x = _normalise(embeddings[train].astype(np.float64))
    if len(x) > config.max_embeddings:
        pick = np.linspace(0, len(x) - 1, config.max_embeddings).round().astype(np.int64)
        sub = _agglomerate(x[pick], config, bounds)
        centroids = _normalise(np.stack([x[pick][sub == k].mean(0) for k in np.unique(sub)]))
        labels = np.argmax(x @ centroids.T, axis=1)
    else:
        labels = _agglomerate(x, config, bounds)
    centroids = _normalise(np.stack([x[labels == k].mean(axis=0) for k in np.unique(labels)]))
    if config.outlier_threshold is not None and bounds.num_speakers is None:
        centroids = _add_outlier_speakers(
            embeddings,
            valid & ~train,
            clean,
            centroids,
            config,
            floor=_small_cluster_floor(config, len(x)),
            room=bounds.max_speakers - len(centroids),
        )
    return assign_to_centroids(embeddings, centroids), centroids.astype(np.float32)


def assign_to_centroids(embeddings: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``(c, s)``: the speaker of each (chunk, local speaker) with an embedding, two of one chunk
    never the same (-2 for those without an embedding: :func:`stitch_unembedded` matches those)."""
    valid = _embedded(embeddings)
    scores = np.einsum("csd,kd->csk", np.nan_to_num(embeddings.astype(np.float64)), centroids)
    return _constrained_assign(scores, valid)


def rejoin_halves(
    activity: np.ndarray, embeddings: np.ndarray, centroids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """Undo the splits of :func:`analyse_chunks` whose two halves are nearest the same file
    speaker: two short halves of one voice can embed less alike than the split threshold, and
    left apart the per-chunk constraint would give one of them to someone else.

    Args:
        activity: ``(c, frames, 2 s)``: local speaker ``s + j`` is the second half of ``j``.
        embeddings: ``(c, 2 s, d)``.
        centroids: ``(k, d)`` unit speaker centroids.

    Returns:
        ``(activity, embeddings, rejoined)``: copies with those halves one local speaker again
        (the embedding the halves' mean, weighted by their frames), and how many were rejoined.
    """
    local = activity.shape[2] // 2
    first, second = embeddings[:, :local], embeddings[:, local:]
    both = _embedded(first) & _embedded(second)
    if not both.any() or not len(centroids):
        return activity, embeddings, 0
    near_first = np.argmax(np.nan_to_num(first) @ centroids.T, axis=-1)
    near_second = np.argmax(np.nan_to_num(second) @ centroids.T, axis=-1)
    same = both & (near_first == near_second)
    if not same.any():
        return activity, embeddings, 0
    activity, embeddings = activity.copy(), embeddings.copy()
    for c, j in zip(*np.nonzero(same), strict=True):
        weights = activity[c, :, [j, local + j]].sum(axis=1).astype(np.float64)
        embeddings[c, j] = _normalise(weights[0] * first[c, j] + weights[1] * second[c, j])
        embeddings[c, local + j] = np.nan
        activity[c, :, j] = np.maximum(activity[c, :, j], activity[c, :, local + j])
        activity[c, :, local + j] = 0
    return activity, embeddings, int(same.sum())


def clustered_activity(activity: np.ndarray, hard: np.ndarray, num_speakers: int) -> np.ndarray:
    """``(c, frames, k)``: each chunk's activity per file speaker (the max over its local speakers
    assigned there; NaN for speakers the chunk does not have)."""
    chunks, frames, _ = activity.shape
    out = np.full((chunks, frames, num_speakers), np.nan)
    for c in range(chunks):
        for k in np.unique(hard[c]):
            if k >= 0:
                out[c, :, k] = activity[c][:, hard[c] == k].max(axis=1)
    return out


def stitch_unembedded(
    activity: np.ndarray,
    hard: np.ndarray,
    offsets: np.ndarray,
    total_frames: int,
    num_speakers: int,
) -> np.ndarray:
    """Speakers for the active local speakers that clustering left unassigned (their chunk was
    not embedded, or their speech there was too short to embed): each is matched to the file
    speaker whose activity, in the assigned chunks around it, it overlaps most, never to one its
    chunk already has; one that overlaps none stays -2.

    Args:
        activity: ``(c, frames, s)`` 0/1.
        hard: ``(c, s)`` from :func:`cluster_local_speakers` (-2: unassigned).
        offsets: first file frame of each chunk.
        total_frames: frames of the file.
        num_speakers: file speakers.
    """
    active = activity.sum(axis=1) > 0
    pending = active & (hard < 0)
    if not pending.any() or num_speakers == 0:
        return hard
    guide = aggregate(
        clustered_activity(activity, hard, num_speakers), offsets, total_frames, average=True
    )
    hard = hard.copy()
    frames = activity.shape[1]
    for c in np.flatnonzero(pending.any(axis=1)):
        lo = int(offsets[c])
        block = guide[lo : lo + frames]
        overlap = activity[c, : len(block)].T.astype(np.float64) @ block  # (s, k)
        taken = hard[c][hard[c] >= 0]
        overlap[:, taken] = -1.0
        overlap[~pending[c]] = -1.0
        match = _constrained_assign(overlap[None], pending[c][None])[0]
        for r in np.flatnonzero(pending[c]):
            if match[r] >= 0 and overlap[r, match[r]] > 0:
                hard[c, r] = match[r]
    return hard


def reconstruct(
    activity: np.ndarray,
    hard: np.ndarray,
    count: np.ndarray,
    offsets: np.ndarray,
    total_frames: int,
    num_speakers: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Frame-level diarization: in each frame, the ``count`` file speakers most active there.

    Returns:
        ``(binary, support)``: ``(total_frames, k)`` 0/1, and each speaker's share of the chunks
        that saw a frame voting it active (a confidence).
    """
    per_chunk = clustered_activity(activity, hard, num_speakers)
    summed = aggregate(per_chunk, offsets, total_frames, average=False)
    seen = aggregate(np.ones(activity.shape[:2] + (1,)), offsets, total_frames, average=False)
    support = summed / np.maximum(seen, 1.0)
    binary = np.zeros((total_frames, num_speakers), dtype=np.uint8)
    order = np.argsort(-summed, axis=1, kind="stable")
    for t in np.flatnonzero(count > 0):
        top = order[t, : min(int(count[t]), num_speakers)]
        binary[t, top[summed[t, top] > 0]] = 1
    return binary, support


def binary_to_turns(
    binary: np.ndarray,
    support: np.ndarray,
    frame_step: float,
    frame_duration: float,
    duration: float,
    min_duration_off: float,
) -> list[Turn]:
    """Turns of every speaker from frame-level activity: runs of active frames (frame centres),
    pauses shorter than ``min_duration_off`` bridged; ``overlap`` set where another speaker's turn
    overlaps it; ``confidence`` the mean chunk support over the turn.

    Args:
        binary: ``(frames, k)`` 0/1.
        support: ``(frames, k)`` share of chunks voting each speaker active.
        frame_step: seconds per frame.
        frame_duration: frame length, seconds (a frame's centre is at ``i * step + duration/2``).
        duration: file length, seconds (turns end there at the latest).
        min_duration_off: bridge shorter pauses, seconds.
    """
    turns: list[Turn] = []
    centre = frame_duration / 2
    for k in range(binary.shape[1]):
        edges = np.diff(np.concatenate([[0], binary[:, k].astype(np.int8), [0]]))
        ons, offs = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        runs: list[list[int]] = []
        for a, b in zip(ons, offs, strict=True):
            if runs and (a - runs[-1][1]) * frame_step < min_duration_off:
                runs[-1][1] = b
            else:
                runs.append([a, b])
        for a, b in runs:
            start = a * frame_step + centre
            end = min(b * frame_step + centre, duration)
            if end > start:
                conf = float(np.clip(support[a:b, k].mean(), 0.0, 1.0))
                turns.append(Turn(float(start), float(end), k, conf, False))
    turns.sort(key=lambda t: (t.start, t.speaker))
    for i, turn in enumerate(turns):
        for other in turns[i + 1 :]:
            if other.start >= turn.end:
                break
            if other.speaker != turn.speaker:
                turn.overlap = other.overlap = True
    return turns


def diarize_segments(
    chunk_start_seconds: np.ndarray,
    activity: np.ndarray,
    embeddings: np.ndarray,
    duration: float,
    frame_step: float,
    frame_duration: float,
    config: SegmentationDiarizationConfig,
    bounds: ClusteringConfig | None = None,
) -> dict[str, Any]:
    """One file's diarization from its chunks' segmentation and embeddings.

    Args:
        chunk_start_seconds: ``(c,)`` chunk starts, seconds, in increasing order.
        activity: ``(c, frames, s)`` 0/1 local activity.
        embeddings: ``(c, s, d)``; chunks not embedded hold NaN.
        duration: file length, seconds.
        frame_step: segmentation frame step, seconds.
        frame_duration: segmentation frame length, seconds.
        config: the section's parameters.
        bounds: speaker count constraints (``num_speakers``, ``min_speakers``, ``max_speakers``
            of the ``clustering`` section).

    Returns:
        ``turns`` (speakers numbered 0.. in order of first speech), ``centroids`` ``(k, d)``,
        ``speech_seconds`` ``(k,)``, ``num_embeddings``, and per embedding ``embedding_starts``,
        ``embedding_labels``, ``embedding_vectors``.
    """
    chunk_start_seconds = np.asarray(chunk_start_seconds, dtype=np.float64)
    dim = embeddings.shape[-1]
    frames = activity.shape[1]
    offsets = frame_offsets(chunk_start_seconds, frame_step)
    total = total_frames_of(int(round(duration * SAMPLE_RATE)), frame_step, frames)
    total = max(total, int(offsets.max(initial=0)) + frames)
    count = speaker_count(activity, offsets, total, int(round(config.warm_up / frame_step)))
    if bounds is not None and bounds.num_speakers is not None:
        count = np.minimum(count, bounds.num_speakers)
    elif bounds is not None:
        count = np.minimum(count, bounds.max_speakers)
    hard, centroids = cluster_local_speakers(activity, embeddings, frame_step, config, bounds)
    if config.split_threshold is not None and activity.shape[2] % 2 == 0:
        activity, embeddings, rejoined = rejoin_halves(activity, embeddings, centroids)
        if rejoined:
            hard = assign_to_centroids(embeddings, centroids)
    valid = _embedded(embeddings)
    k = len(centroids)
    hard = stitch_unembedded(activity, hard, offsets, total, k)
    binary, support = reconstruct(activity, hard, count, offsets, total, k)
    turns = binary_to_turns(
        binary, support, frame_step, frame_duration, duration, config.min_duration_off
    )
    # Speakers numbered in order of first speech; speakers left without a turn dropped.
    order: dict[int, int] = {}
    for turn in turns:
        order.setdefault(turn.speaker, len(order))
    for turn in turns:
        turn.speaker = order[turn.speaker]
    kept = sorted(order, key=order.get)
    centroids = centroids[kept] if len(kept) else np.zeros((0, dim), np.float32)
    seconds = np.zeros(len(kept))
    for turn in turns:
        seconds[turn.speaker] += turn.end - turn.start
    remap = np.full(max(k, 1), -1, np.int64)
    for old, new in order.items():
        remap[old] = new
    rows, cols = np.nonzero(valid)
    labels = np.where(hard[rows, cols] >= 0, remap[np.maximum(hard[rows, cols], 0)], -1)
    return {
        "turns": turns,
        "centroids": centroids.astype(np.float32),
        "speech_seconds": seconds,
        "num_embeddings": int(valid.sum()),
        "embedding_starts": chunk_start_seconds[rows],
        "embedding_labels": labels,
        "embedding_vectors": embeddings[rows, cols].astype(np.float32),
    }


def diarize_audio_segmentation(
    audio: np.ndarray,
    model: SegmentationModel,
    encoder,
    config: SegmentationDiarizationConfig,
    bounds: ClusteringConfig | None = None,
) -> dict[str, Any]:
    """Diarize one 16 kHz signal in this process (the reference the pipeline agrees with).

    Args:
        audio: the samples.
        model: the segmentation model.
        encoder: the local speaker embedding model.
        config: the section's parameters.
        bounds: speaker count constraints (``num_speakers``, ``min_speakers``, ``max_speakers``
            of the ``clustering`` section).
    """
    audio = np.asarray(audio, dtype=np.float32)
    starts = chunk_starts(len(audio), model.chunk_samples, int(round(config.step * SAMPLE_RATE)))
    seconds = starts / SAMPLE_RATE
    embed = embed_mask_for(seconds, config.step, config.embed_every, is_last=True)
    activity, embeddings = analyse_chunks(audio, starts, embed, model, encoder, config)
    return diarize_segments(
        seconds,
        activity,
        embeddings,
        len(audio) / SAMPLE_RATE,
        model.frame_step,
        model.frame_duration,
        config,
        bounds,
    )


# ----------------------------------------------------------------------------------------------
# Batch operator (numpy batches in and out, no Ray): the pipeline's actor stage
# ----------------------------------------------------------------------------------------------

#: Decoded blocks must hold this much audio past the span they own, so every segmentation chunk
#: that starts in a block fits in it (segmentation-3.0's chunks are 10 s).
MAX_CHUNK_SECONDS = 10.0


class SegmentationOperator:
    """Segmentation and local speaker embeddings of decoded blocks, one actor stage.

    Reads a block row (``audio`` as float32 bytes, ``chunk_start``, ``owned``, ``num_samples``,
    ``is_last``, ``status``) and writes, packed: ``seg_starts`` (file-time starts of the block's
    segmentation chunks), ``activity`` (``(c, frames, s)`` uint8), ``local_embeddings``
    (``(c, s, d)`` float32, NaN where none), and the model's ``frame_step`` and
    ``frame_duration``; drops the audio. Rows of failed decodes pass through with empty arrays.
    Runs on the GPU when the actor has one (``segmentation.device: auto``).

    Args:
        config: the ``diarization.segmentation`` section.
        threads: torch and onnxruntime threads of this actor (CPU).
    """

    inputs = ("audio", "chunk_start", "owned", "num_samples", "is_last")
    outputs = ("seg_starts", "activity", "local_embeddings", "frame_step", "frame_duration")
    uses_model = True
    num_cpus = 1.0
    # One block (60 s) per call on CPUs: the first file is out sooner (demo: 14.1 s against
    # 14.5 s to its first file, median of 3) at the same throughput (1 h corpus, 2 CPUs: 37.8
    # and 39.9x against 39.5 and 37.9x). On a GPU give resources.segment.batch_size: 4 or more.
    batch_size = 1

    def __init__(self, config: SegmentationDiarizationConfig, threads: int = 1):
        import torch

        from audio_ops.embedding import make_encoder
        from audio_ops.segmentation import load_segmentation

        torch.set_num_threads(max(1, threads))
        self.threads = max(1, threads)
        self.config = config
        self.model = load_segmentation(config.segmentation_config())
        if self.model.duration > MAX_CHUNK_SECONDS:
            raise ValueError(
                f"segmentation chunks of {self.model.duration:g} s are longer than the "
                f"{MAX_CHUNK_SECONDS:g} s the pipeline decodes past each block"
            )
        self.encoder = make_encoder(config.embedding_config())

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        # Ray Data calls this from a thread of its own, not the constructor's: the thread count
        # set there does not hold here (OpenMP keeps it per thread).
        torch.set_num_threads(self.threads)
        model = self.model
        statuses = batch.get("status", np.array(["ok"] * len(batch["audio"]), dtype=object))
        plans, signals, offsets, ends, embed = [], [], [], [], []
        base = 0
        for audio_bytes, start, owned, num, last, status in zip(
            batch["audio"],
            batch["chunk_start"],
            batch["owned"],
            batch["num_samples"],
            batch["is_last"],
            statuses,
            strict=True,
        ):
            starts = np.zeros(0)
            if status == "ok":
                starts = block_chunk_starts(
                    float(start),
                    float(owned),
                    int(num),
                    bool(last),
                    self.config.step,
                    model.duration,
                )
            signal = chunk_audio(audio_bytes) if len(starts) else np.zeros(0, np.float32)
            plans.append(starts)
            signals.append(signal)
            offsets.append(base + np.round((starts - float(start)) * SAMPLE_RATE).astype(np.int64))
            base += len(signal)
            ends.append(np.full(len(starts), base, np.int64))
            embed.append(
                embed_mask_for(starts, self.config.step, self.config.embed_every, bool(last))
            )
        # The blocks of the batch, end to end, go through the models together (full batches on
        # a GPU; no chunk reaches past its own block's end), then are split back by block.
        activity, embeddings = analyse_chunks(
            np.concatenate(signals),
            np.concatenate(offsets),
            np.concatenate(embed),
            model,
            self.encoder,
            self.config,
            ends=np.concatenate(ends),
        )
        bounds = np.cumsum([0] + [len(p) for p in plans])
        out = {k: v for k, v in batch.items() if k != "audio"}
        out["seg_starts"] = np.array([pack(p.astype(np.float64)) for p in plans], dtype=object)
        out["activity"] = np.array(
            [pack(activity[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
            dtype=object,
        )
        out["local_embeddings"] = np.array(
            [pack(embeddings[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
            dtype=object,
        )
        out["frame_step"] = np.full(len(plans), model.frame_step)
        out["frame_duration"] = np.full(len(plans), model.frame_duration)
        return out


def diarize_segment_rows(
    rows: list[dict[str, Any]],
    config: SegmentationDiarizationConfig,
    bounds: ClusteringConfig | None = None,
) -> dict[str, Any]:
    """Assemble one file's :class:`SegmentationOperator` rows (any order) and diarize it
    (:func:`diarize_segments`)."""
    rows = sorted(rows, key=lambda r: int(r["chunk_index"]))
    duration = max(float(r["chunk_start"]) + int(r["num_samples"]) / SAMPLE_RATE for r in rows)
    starts = np.concatenate([unpack(r["seg_starts"]) for r in rows])
    activity = [unpack(r["activity"]) for r in rows]
    embeddings = [unpack(r["local_embeddings"]) for r in rows]
    if not len(starts):
        return diarize_segments(
            np.zeros(0),
            np.zeros((0, 1, 1), np.uint8),
            np.zeros((0, 1, 0)),
            duration,
            float(rows[0]["frame_step"]),
            float(rows[0]["frame_duration"]),
            config,
            bounds,
        )
    activity = np.concatenate([a for a in activity if len(a)])
    embeddings = np.concatenate([e for e in embeddings if len(e)])
    order = np.argsort(starts, kind="stable")
    return diarize_segments(
        starts[order],
        activity[order],
        embeddings[order],
        duration,
        float(rows[0]["frame_step"]),
        float(rows[0]["frame_duration"]),
        config,
        bounds,
    )
