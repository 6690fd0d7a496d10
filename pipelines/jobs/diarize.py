"""``voxflow diarize``: who spoke when in every file, and one speaker identity across the corpus.

    list -> decode tasks (a file fans out into 16 kHz chunks of ``chunk.seconds``)
         -> speech actors (Silero VAD; plan the embedding windows)
         -> embedding actors (GE2E or an x-vector model; the GPU stage on a cluster)
         -> driver: a file's chunks are gathered as they arrive; when its last chunk is in, a
            clustering task diarizes it (turns, speaker centroids)
         -> global linking of all centroids (on the driver, bounded memory) -> tables

Only paths enter the cluster, audio travels in bounded chunks, and the audio column is dropped
after the embedding stage, so memory is bounded per chunk whatever the file length. Results stream
back file by file (no all-to-all barrier), which keeps the progress line live.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from audio_ops.diarization import DiarizationConfig, diarize_chunks, iter_chunks
from audio_ops.errors import error_kind
from audio_ops.linking import LinkingConfig, global_centroids, link_speakers, match_enrolled
from audio_ops.neural_diarization import (
    MAX_CHUNK_SECONDS,
    diarize_segment_rows,
)
from audio_ops.pitch import semitones_to_hz
from audio_ops.profiles import ProfileConfig, profile_encoder, speaker_profiles
from audio_ops.segmentation import SAMPLE_RATE
from audio_ops.turns import Turn
from pipelines.engine.config import ConfigError, StageResources
from pipelines.engine.lifecycle import Job
from pipelines.engine.resume import ShardStore
from pipelines.engine.runtime import configure_data_context, iter_while_waiting
from pipelines.engine.sinks import (
    TableSink,
    is_local,
    join,
    remove_shards,
    write_table_atomic,
)
from pipelines.engine.stages import apply_operator, check_columns, resources_for
from pipelines.engine.summary import files_schema


@dataclass(frozen=True)
class DiarizeRunConfig:
    """Everything ``voxflow diarize`` runs with.

    Args:
        diarization: VAD, embedding, clustering, turn and chunk parameters.
        linking: global speaker linking.
        resources: scheduling overrides by stage: ``decode``, ``segment`` (the segmentation
            method's model stage), ``analyse`` or ``speech`` and ``embedding`` (the windows
            method's), ``cluster``, ``profile``.
        extensions: audio extensions a directory listing picks up (empty: all decodable).
        write_embeddings: also write window-level embeddings to ``embeddings/``.
        max_inflight_files: files being clustered at once (bounds driver memory).
        fuse_stages: VAD and embedding in one actor pool (``analyse``, sized to the cluster's
            CPUs: one single-threaded actor per core) instead of two (``speech``, ``embedding``;
            the better shape when embedding runs on GPUs). Default (None): fused unless
            ``resources`` configures ``speech`` or ``embedding``.
        pipeline_memory_mb: object-store memory the pipeline's chunks may hold at once: decoding
            (about 2,000x real time) stops running ahead of the analysis actors there, so memory
            stays flat however long the corpus.
        commit_files: finished files per committed shard (resume granularity) ...
        commit_seconds: ... or commit when the oldest uncommitted file waited this long.
    """

    diarization: DiarizationConfig = field(default_factory=DiarizationConfig)
    linking: LinkingConfig = field(default_factory=LinkingConfig)
    resources: dict[str, StageResources] = field(default_factory=dict)
    extensions: tuple[str, ...] = ()
    write_embeddings: bool = False
    max_inflight_files: int = 32
    fuse_stages: bool | None = None

    def __post_init__(self) -> None:
        if self.diarization.method == "segmentation":
            windowed = sorted({"speech", "embedding", "analyse"} & set(self.resources))
            if windowed:
                raise ConfigError(
                    f"resources.{windowed[0]} schedules a stage of diarization.method: windows; "
                    "the segmentation method runs one stage: configure resources.segment"
                )
        elif "segment" in self.resources:
            raise ConfigError(
                "resources.segment schedules the segmentation method's stage, but "
                "diarization.method is windows: configure resources.analyse instead"
            )
        split_keys = sorted({"speech", "embedding"} & set(self.resources))
        if self.fuse_stages and split_keys:
            raise ConfigError(
                f"resources.{split_keys[0]} schedules a stage of the split pipeline, but "
                "fuse_stages is true: configure resources.analyse instead, or set fuse_stages: false"
            )
        if self.fuse_stages is False and "analyse" in self.resources:
            raise ConfigError(
                "resources.analyse schedules the fused stage, but fuse_stages is false: "
                "configure resources.speech and resources.embedding instead"
            )

    @property
    def fused(self) -> bool:
        """Whether VAD and embedding run in one actor pool (see ``fuse_stages``)."""
        if self.fuse_stages is not None:
            return self.fuse_stages
        return not ({"speech", "embedding"} & set(self.resources))

    pipeline_memory_mb: int = 128
    commit_files: int = 64
    commit_seconds: float = 30.0


FILES_FIELDS = [
    ("duration", pa.float64()),
    ("num_speakers", pa.int64()),
    ("speech_seconds", pa.float64()),
    ("num_segments", pa.int64()),
    ("num_windows", pa.int64()),
    ("status", pa.string()),
    ("error_kind", pa.string()),
    ("error", pa.string()),
    ("error_stage", pa.string()),
]

SEGMENTS_SCHEMA = pa.schema(
    [
        ("file_id", pa.string()),
        ("path", pa.string()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("duration", pa.float64()),
        ("speaker", pa.string()),
        ("speaker_global", pa.string()),
        ("confidence", pa.float64()),
        ("overlap", pa.bool_()),
    ]
)


def _speakers_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("speaker_global", pa.string()),
            ("name", pa.string()),
            ("speech_seconds", pa.float64()),
            ("file_count", pa.int64()),
            ("centroid", pa.list_(pa.float32(), dim) if dim else pa.list_(pa.float32())),
            ("pitch_hz", pa.float64()),
        ]
    )


EMBEDDINGS_SCHEMA = pa.schema(
    [
        ("file_id", pa.string()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("speaker", pa.string()),
        ("embedding", pa.list_(pa.float32())),
    ]
)


def local_label(index: int) -> str:
    """The file-local speaker label of speaker ``index``."""
    return f"S{index}"


def global_label(index: int) -> str:
    """The corpus-wide speaker id of global speaker ``index``."""
    return f"G{index:05d}"


class ChunkFiles:
    """Decode stage (tasks): each file row fans out into chunk rows. A file that fails becomes one
    error row, numbered after the chunks already sent and marked as the file's last, so the
    driver knows the file is complete either way.

    Args:
        config: the diarization config (its ``chunk`` part).
    """

    inputs = ("file_id", "path")
    outputs = ("chunk_index", "chunk_start", "owned", "num_samples", "is_last", "audio")

    def __init__(self, config: DiarizationConfig):
        self.config = config

    def __call__(self, batch: dict[str, np.ndarray]):
        for file_id, path in zip(batch["file_id"], batch["path"], strict=True):
            sent = 0
            try:
                for index, start, owned, samples, is_last in iter_chunks(
                    str(path), self.config.decode_chunk
                ):
                    yield _chunk_row(file_id, path, index, start, owned, samples, is_last)
                    sent += 1
            except Exception as exc:  # the file's error row, after what was already sent
                row = _chunk_row(file_id, path, sent, 0.0, 0.0, np.zeros(0, np.float32), True)
                row.update(
                    status=np.array(["error"], dtype=object),
                    error_kind=np.array([error_kind(exc)], dtype=object),
                    error=np.array([str(exc) or repr(exc)], dtype=object),
                    error_stage=np.array(["decode"], dtype=object),
                )
                yield row


def _chunk_row(file_id, path, index, start, owned, samples, is_last) -> dict[str, np.ndarray]:
    return {
        "file_id": np.array([file_id], dtype=object),
        "path": np.array([path], dtype=object),
        "chunk_index": np.array([index], dtype=np.int64),
        "chunk_start": np.array([start], dtype=np.float64),
        "owned": np.array([owned], dtype=np.float64),
        "num_samples": np.array([len(samples)], dtype=np.int64),
        "is_last": np.array([bool(is_last)]),
        "audio": np.array(
            [np.ascontiguousarray(samples, dtype=np.float32).tobytes()], dtype=object
        ),
        "status": np.array(["ok"], dtype=object),
        "error_kind": np.array([""], dtype=object),
        "error": np.array([""], dtype=object),
        "error_stage": np.array([""], dtype=object),
    }


def diarize_file_task(
    chunks: list[dict[str, Any]], config: DiarizationConfig, keep_windows: bool
) -> dict[str, Any]:
    """Cluster one file's gathered chunks (runs as a Ray task): turns, centroids, and the window
    (or local speaker) embeddings when ``keep_windows``."""
    if config.method == "segmentation":
        return _segmentation_file_result(chunks, config, keep_windows)
    result = diarize_chunks(chunks, config)
    out = {
        "duration": max(
            float(r["chunk_start"]) + int(r["num_samples"]) / SAMPLE_RATE for r in chunks
        ),
        "turns": [(t.start, t.end, t.speaker, t.confidence, t.overlap) for t in result.turns],
        "centroids": result.centroids,
        "narrowband_centroids": result.narrowband_centroids,
        "pitch": result.pitch,
        "wideband": result.wideband,
        "speech_seconds": result.speech_seconds,
        "num_windows": result.num_windows,
        "profiles": None,
    }
    if keep_windows:
        out["window_starts"] = result.window_starts
        out["window_labels"] = result.window_labels
        out["window_embeddings"] = result.window_embeddings
        out["window_seconds"] = config.embedding.window
    return out


def _segmentation_file_result(
    chunks: list[dict[str, Any]], config: DiarizationConfig, keep_windows: bool
) -> dict[str, Any]:
    """:func:`diarize_file_task` under ``method: segmentation``."""
    result = diarize_segment_rows(chunks, config.segmentation, config.clustering)
    k = len(result["centroids"])
    out = {
        "duration": max(
            float(r["chunk_start"]) + int(r["num_samples"]) / SAMPLE_RATE for r in chunks
        ),
        "turns": [(t.start, t.end, t.speaker, t.confidence, t.overlap) for t in result["turns"]],
        "centroids": result["centroids"],
        "narrowband_centroids": np.zeros((k, 0), np.float32),
        "pitch": np.full(k, np.nan),
        "wideband": True,
        "speech_seconds": result["speech_seconds"],
        "num_windows": result["num_embeddings"],
        "profiles": None,
    }
    if keep_windows:
        out["window_starts"] = result["embedding_starts"]
        out["window_labels"] = result["embedding_labels"]
        out["window_embeddings"] = result["embedding_vectors"]
        out["window_seconds"] = MAX_CHUNK_SECONDS
    return out


class ProfileStage:
    """The profile pass (``diarization.profile``) as a Ray actor: the model is loaded once, and
    each clustered file's speakers get their profiles from their speech read back from ``path``.

    Args:
        config: the profile parameters.
        threads: intra-op threads of the model.
    """

    def __init__(self, config: ProfileConfig, threads: int = 1):
        import torch

        torch.set_num_threads(max(1, threads))
        self.config = config
        self.encoder = profile_encoder(config)

    def add_profiles(self, result: dict[str, Any], path: str) -> dict[str, Any]:
        """``result`` (a clustering task's) with ``profiles`` filled in."""
        k = len(result["centroids"])
        if k:
            turns = [Turn(s, e, sp, c, o) for s, e, sp, c, o in result["turns"]]
            try:
                result["profiles"] = speaker_profiles(path, turns, k, self.config, self.encoder)
            except Exception as exc:  # named in errors/ as this stage's
                exc.voxflow_stage = "profile"
                raise
        return result


class _FileAssembler:
    """Gathers chunk rows per file until the file is complete (its last chunk and every chunk
    before it are in), in whatever order they arrive.

    Exactly once: a chunk seen twice (a retried task that emits its rows again) is kept once, and
    rows of a file already handed out are dropped, so a duplicate can neither complete a file
    with a chunk missing nor diarize a file a second time. ``duplicates`` counts what was dropped.
    """

    def __init__(self) -> None:
        self.rows: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        self.expected: dict[str, int] = {}
        self.completed: set[str] = set()
        self.duplicates = 0

    def add(self, row: dict[str, Any]) -> list[dict[str, Any]] | None:
        file_id, index = row["file_id"], int(row["chunk_index"])
        if file_id in self.completed or index in self.rows[file_id]:
            self.duplicates += 1
            return None
        chunks = self.rows[file_id]
        chunks[index] = row
        if row["is_last"]:
            self.expected[file_id] = index + 1
        if self.expected.get(file_id) == len(chunks):
            self.expected.pop(file_id)
            self.completed.add(file_id)
            return [chunks[i] for i in sorted(self.rows.pop(file_id))]
        return None


def _load_enrolled(path: str, config: DiarizationConfig) -> tuple[list[str], np.ndarray]:
    """Names and embeddings of known speakers: a table with ``name`` and either ``embedding``
    (a list of floats) or ``path`` (reference audio, relative to the table, embedded here as
    the run makes its speakers: :class:`audio_ops.enrollment.VoicePrinter`)."""
    import pandas as pd

    table = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path)
    if "name" not in table.columns or not ({"embedding", "path"} & set(table.columns)):
        raise ValueError(f"{path}: a speakers table needs 'name' and 'embedding' or 'path' columns")
    from audio_ops.enrollment import VoicePrinter
    from audio_ops.io import load_audio

    names, vectors = [], []
    printer = VoicePrinter(config)
    for record in table.to_dict(orient="records"):
        embedding = record.get("embedding")
        if embedding is not None and not (isinstance(embedding, float) and np.isnan(embedding)):
            vectors.append(np.asarray(embedding, dtype=np.float32))
        else:
            ref = str(record["path"])
            if not os.path.isabs(ref) and "://" not in ref:
                ref = os.path.join(os.path.dirname(os.path.abspath(path)), ref)
            vector = printer.voiceprint(load_audio(ref, SAMPLE_RATE)[0])
            if vector is None:
                raise ValueError(
                    f"{path}: no speech found in the reference audio of {record['name']!r}"
                )
            vectors.append(vector)
        names.append(str(record["name"]))
    return names, np.stack(vectors) if vectors else np.zeros((0, 0), np.float32)


CENTROIDS_SCHEMA = pa.schema(
    [
        ("file_id", pa.string()),
        ("speaker_index", pa.int64()),
        ("speech_seconds", pa.float64()),
        ("centroid", pa.list_(pa.float32())),
        ("narrowband_centroid", pa.list_(pa.float32())),
        ("pitch", pa.float64()),
        ("wideband", pa.bool_()),
        ("profile", pa.list_(pa.float32())),
    ]
)


class DiarizeJob(Job):
    """``voxflow diarize`` on the one lifecycle: files stream through decode and the model
    stages, each file is clustered by a Ray task as soon as its last chunk is in, and the
    corpus-wide linking runs in :meth:`finalise` over every committed file.

    Args:
        speakers: optional table of known speakers (name + embedding or reference audio path).
    """

    name = "diarize"
    config_class = DiarizeRunConfig
    outputs = ("segments", "speakers", "embeddings", "_staging")
    result_tables = {"segments": "segments", "speakers": "speakers", "embeddings": "embeddings"}

    def __init__(self, out: str, config: DiarizeRunConfig, *, speakers: str | None = None, **kw):
        super().__init__(out, config, **kw)
        self.speakers = speakers
        self.stats_text = ""
        self.enrolled_names: list[str] = []
        self.enrolled = np.zeros((0, 0))
        self.known_digest: str | None = None

    def preflight(self) -> None:
        dconf = self.config.diarization
        if self.speakers:
            self.enrolled_names, self.enrolled = _load_enrolled(self.speakers, dconf)
            digest = hashlib.sha256("\n".join(self.enrolled_names).encode("utf-8"))
            digest.update(np.ascontiguousarray(self.enrolled, dtype=np.float32).tobytes())
            self.known_digest = digest.hexdigest()
        if dconf.profile.enabled:  # a bad profile model fails here, not once per file
            profile_encoder(dconf.profile, cache=False)
        if dconf.method == "segmentation":  # a missing or altered checkpoint fails here too
            from audio_ops.segmentation import resolve_checkpoint

            resolve_checkpoint(dconf.segmentation.model, dconf.segmentation.sha256)

    def check(self) -> None:
        check_columns([("decode", ChunkFiles), *model_stages(self.config)], ("file_id", "path"))

    def schemas(self, listing: list[dict[str, Any]]) -> dict[str, pa.Schema | None]:
        base = files_schema(listing)  # listing columns + manifest ones
        listing_fields = [f for f in base if f.name in listing[0]] if listing else list(base)[:4]
        schemas: dict[str, pa.Schema | None] = {
            "files": pa.schema(listing_fields + [pa.field(n, t) for n, t in FILES_FIELDS]),
            "segments": SEGMENTS_SCHEMA,
            "centroids": CENTROIDS_SCHEMA,
        }
        if self.config.write_embeddings:
            schemas["embeddings"] = EMBEDDINGS_SCHEMA
        return schemas

    def identity(self) -> Any:
        # Known speakers name global ids in the final step, so a new table re-links (reusing
        # every committed file) instead of finding the run finished.
        if self.known_digest is None:
            return self.config
        return {"config": self.config, "known_speakers": self.known_digest}

    def shard_config(self) -> Any:
        return shard_config(self.config)

    def execute(self, todo: list[dict[str, Any]]) -> None:
        self.stats_text = _run_pipeline(todo, self.config, self._finish_ok, self._finish_error)

    def _finish_error(self, file_id: str, kind: str, message: str, stage: str) -> None:
        row = {**self.by_id[file_id], "status": "error", "error_kind": kind, "error": message}
        self.commit(file_id, {**row, "error_stage": stage})

    def _finish_ok(self, file_id: str, result: dict[str, Any]) -> None:
        row, tables = _file_rows(self.by_id[file_id], result, self.config.write_embeddings)
        self.commit(file_id, row, tables)

    def finalise(self, seen: set[str]) -> dict[str, Any]:
        return _link_and_write(
            self.out, self.store, seen, self.config, self.enrolled_names, self.enrolled
        )

    def record(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"speakers": self.speakers, "ray_data_stats": self.stats_text}
        if self.known_digest:
            extra["known_speakers_sha256"] = self.known_digest
        return extra


#: ``voxflow diarize``: see :meth:`pipelines.engine.lifecycle.Job.launch` (plus ``speakers``,
#: a table of known speakers). Finished files are committed in shards as they complete, so a run
#: that is cut off resumes where it stopped when run again with the same config.
run_diarize = DiarizeJob.launch


def _file_rows(
    listing: dict[str, Any], result: dict[str, Any], write_embeddings: bool
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """A diarized file's ``files/`` row and its rows of ``segments``, ``centroids`` and
    (when asked for) ``embeddings``."""
    file_id = listing["file_id"]
    turns = result["turns"]
    row = dict(listing)
    row.update(
        duration=result["duration"],
        num_speakers=len(result["centroids"]),
        speech_seconds=float(np.sum(result["speech_seconds"])),
        num_segments=len(turns),
        num_windows=result["num_windows"],
        status="ok",
        error_kind="",
        error="",
        error_stage="",
    )
    tables: dict[str, list[dict[str, Any]]] = {
        "segments": [
            {
                "file_id": file_id,
                "path": row["path"],
                "start": s,
                "end": e,
                "duration": e - s,
                "speaker": local_label(k),
                "speaker_global": None,
                "confidence": c,
                "overlap": o,
            }
            for s, e, k, c, o in turns
        ],
        "centroids": [
            {
                "file_id": file_id,
                "speaker_index": k,
                "speech_seconds": float(result["speech_seconds"][k]),
                "centroid": np.asarray(centroid, np.float32).tolist(),
                "narrowband_centroid": np.asarray(
                    result["narrowband_centroids"][k], np.float32
                ).tolist(),
                "pitch": (float(result["pitch"][k]) if np.isfinite(result["pitch"][k]) else None),
                "wideband": bool(result["wideband"]),
                "profile": (
                    None
                    if result.get("profiles") is None
                    else np.asarray(result["profiles"][k], np.float32).tolist()
                ),
            }
            for k, centroid in enumerate(result["centroids"])
        ],
    }
    if write_embeddings and len(result.get("window_starts", [])):
        w = result["window_seconds"]
        tables["embeddings"] = [
            {
                "file_id": file_id,
                "start": float(s),
                "end": float(s) + w,
                "speaker": local_label(int(k)) if k >= 0 else None,
                "embedding": emb.tolist(),
            }
            for s, k, emb in zip(
                result["window_starts"],
                result["window_labels"],
                result["window_embeddings"],
                strict=True,
            )
        ]
    return row, tables


def _run_pipeline(todo, config, finish_ok, finish_error) -> str:
    """Stream ``todo`` through decode, speech and embedding stages and per-file clustering tasks;
    each finished file goes to ``finish_ok`` or ``finish_error``. Returns Ray Data's stats
    text."""
    import ray
    import ray.data

    # Results are gathered per file by the driver, in any order: no need to hold back a
    # finished chunk behind a slower one. Blocks of a few chunks (a 60 s chunk is 3.8 MB) go
    # downstream as soon as they are decoded, instead of 128 MiB blocks that hold a long file's
    # chunks back and fill the object store (measured on a 3 h file with the store capped at
    # 0.5 GB: 386 MiB peak and 555 MiB spilled, against 205 MiB and nothing spilled at 8 MiB).
    configure_data_context(
        quiet=True,
        preserve_order=False,
        max_block_bytes=16 * 2**20,
        object_store_bytes=config.pipeline_memory_mb * 2**20,
    )
    dconf = config.diarization
    res = config.resources
    decode = res.get("decode", StageResources(num_cpus=0.25, batch_size=1))
    cluster = res.get("cluster", StageResources(num_cpus=0.25))
    task = ray.remote(num_cpus=cluster.num_cpus, max_retries=2)(diarize_file_task)
    # The profile pass: a small actor pool (the model loaded once per actor; on a GPU with
    # resources.profile.num_gpus), fed each file's clustering result as it completes.
    profile_res = res.get("profile", StageResources(num_cpus=0.25, max_actors=1))
    profilers = []
    if dconf.profile.enabled:
        actor = ray.remote(
            num_cpus=profile_res.num_cpus, num_gpus=profile_res.num_gpus, max_restarts=2
        )(ProfileStage).options(max_task_retries=2)
        threads = max(1, int(round(profile_res.num_cpus)))
        profilers = [actor.remote(dconf.profile, threads) for _ in range(profile_res.max_actors)]
    ds = ray.data.from_items(
        [{"file_id": r["file_id"], "path": r["path"]} for r in todo],
        override_num_blocks=min(len(todo), 1000),
    )
    ds = ds.map_batches(
        ChunkFiles(dconf),
        batch_size=decode.batch_size,
        num_cpus=decode.num_cpus,
        batch_format="numpy",
    )
    reserve = decode.num_cpus + cluster.num_cpus + profile_res.num_cpus * len(profilers)
    for stage, operator in model_stages(config):
        if stage in ("segment", "analyse"):  # the one model stage: a pool sized to the cluster
            stage_res = _analysis_pool(res, reserve, operator, stage)
            threads = max(1, int(round(stage_res.num_cpus)))
        else:
            stage_res = resources_for(operator, res, stage)
            threads = max(1, int(stage_res.num_cpus))
        options = dconf.segmentation if stage == "segment" else dconf
        ds = apply_operator(
            ds,
            operator,
            stage=stage,
            resources=stage_res,
            kwargs={"config": options, "threads": threads},
        )
    assembler = _FileAssembler()
    inflight: dict[Any, str] = {}

    def collect(block: bool) -> None:
        if not inflight:
            return
        ready, _ = ray.wait(
            list(inflight),
            num_returns=1 if block else len(inflight),
            timeout=None if block else 0,
        )
        for ref in ready:
            file_id = inflight.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:  # clustering (or its profile pass) failed for this file only
                cause = getattr(exc, "cause", None) or exc
                stage = getattr(cause, "voxflow_stage", "cluster")
                finish_error(file_id, error_kind(cause), str(cause), stage)
            else:
                finish_ok(file_id, result)

    batches = ds.iter_batches(batch_size=None, batch_format="pyarrow")
    for batch in iter_while_waiting(batches, idle=lambda: collect(block=False)):
        for row in batch.to_pylist():
            complete = assembler.add(row)
            if complete is None:
                continue
            failed = [r for r in complete if r["status"] != "ok"]
            file_id = row["file_id"]
            if failed:
                first = min(failed, key=lambda r: r["chunk_index"])
                finish_error(
                    file_id,
                    first["error_kind"] or "error",
                    first["error"],
                    first["error_stage"] or "decode",
                )
                continue
            while len(inflight) >= config.max_inflight_files:
                collect(block=True)
            slim = [
                {
                    k: r[k]
                    for k in (
                        "chunk_index",
                        "chunk_start",
                        "num_samples",
                        "regions",
                        "window_starts",
                        "embeddings",
                        "narrowband",
                        "window_pitch",
                        "band",
                        "seg_starts",
                        "activity",
                        "local_embeddings",
                        "frame_step",
                        "frame_duration",
                    )
                    if k in r
                }
                for r in complete
            ]
            ref = task.remote(slim, dconf, config.write_embeddings)
            if profilers:  # the actor receives the clustering result once it is ready
                profiler = profilers[len(inflight) % len(profilers)]
                ref = profiler.add_profiles.remote(ref, row["path"])
            inflight[ref] = file_id
        collect(block=False)
    while inflight:
        collect(block=True)
    try:
        return str(ds.stats())
    except Exception:  # stats are a nicety
        return ""


def model_stages(config: DiarizeRunConfig) -> list[tuple[str, type]]:
    """The model stages the chunks go through, by method: (stage name, operator)."""
    from audio_ops.diarization import ChunkAnalysisOperator, EmbeddingOperator, SpeechOperator
    from audio_ops.neural_diarization import SegmentationOperator

    if config.diarization.method == "segmentation":
        return [("segment", SegmentationOperator)]
    if config.fused:
        return [("analyse", ChunkAnalysisOperator)]
    return [("speech", SpeechOperator), ("embedding", EmbeddingOperator)]


def _analysis_pool(
    overrides: dict[str, StageResources], reserve: float, operator: type, stage: str
) -> StageResources:
    """Resources of the one model stage (``analyse``, or ``segment`` under the segmentation
    method): the config's ``resources.<stage>`` when given, else one single-threaded actor per
    CPU of the cluster (as it is when the job starts), each reserving a little under a CPU so
    that decode and clustering tasks (``reserve`` CPUs) always find room. Measured on 2 cores:
    2 actors of 1 thread beat 2 pools of 2 actors each."""
    import ray

    if stage in overrides:
        return overrides[stage]
    declared = resources_for(operator, {}, stage)
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    pool = max(1, int(cpus // declared.num_cpus))
    share = min(declared.num_cpus, max((cpus - reserve) / pool, 0.05))
    return replace(declared, num_cpus=round(share, 3), min_actors=pool, max_actors=pool)


def shard_config(config: DiarizeRunConfig) -> dict[str, Any]:
    """The part of the config that a file's committed rows depend on: a run that changes only the
    rest (global ``linking``, ``resources``, commit sizes...) reuses every committed file and
    only links and writes again."""
    return {"diarization": config.diarization, "write_embeddings": config.write_embeddings}


def _link_and_write(
    out: str,
    store: ShardStore,
    seen: set[str],
    config: DiarizeRunConfig,
    enrolled_names: list[str],
    enrolled: np.ndarray,
) -> dict[str, Any]:
    """The corpus-wide step, from every committed shard (this run's and earlier ones'), for the
    inputs in ``seen``: global linking, ``speakers/``, ``segments/`` (with ``speaker_global``)
    and ``embeddings/``. Returns the table counts."""
    # Global linking: deterministic order (file_id, local speaker).
    # Rows: (file_id, local speaker, centroid, seconds, narrowband centroid, pitch, wideband,
    # profile).
    centroid_rows: list[tuple[str, int, np.ndarray, float, np.ndarray, float, bool, Any]] = []
    for table in store.read("centroids"):
        for row in table.to_pylist():
            if row["file_id"] in seen:
                centroid_rows.append(
                    (
                        row["file_id"],
                        int(row["speaker_index"]),
                        np.asarray(row["centroid"], np.float32),
                        float(row["speech_seconds"]),
                        np.asarray(row["narrowband_centroid"] or [], np.float32),
                        np.nan if row["pitch"] is None else float(row["pitch"]),
                        bool(row["wideband"]),
                        row.get("profile"),
                    )
                )
    centroid_rows.sort(key=lambda r: (r[0], r[1]))
    dim = int(centroid_rows[0][2].shape[0]) if centroid_rows else 0
    pitch = np.array([r[5] for r in centroid_rows])
    if centroid_rows:
        matrix = np.stack([r[2] for r in centroid_rows])
        seconds = np.array([r[3] for r in centroid_rows])
        file_index = np.unique([r[0] for r in centroid_rows], return_inverse=True)[1]
        narrow = (
            np.stack([r[4] for r in centroid_rows])
            if all(r[4].shape == (dim,) for r in centroid_rows)
            else None
        )
        # Profiles take part when every file-speaker has one (runs made without them have none).
        profiles = (
            np.array([r[7] for r in centroid_rows], dtype=np.float64)
            if all(r[7] for r in centroid_rows) and len({len(r[7]) for r in centroid_rows}) == 1
            else None
        )
        labels = link_speakers(
            matrix,
            seconds,
            file_index,
            config.linking,
            narrowband=narrow,
            wideband=np.array([r[6] for r in centroid_rows]),
            pitch=pitch,
            profiles=profiles,
        )
        gcent = global_centroids(matrix, seconds, labels)
    else:
        seconds, labels, gcent = np.zeros(0), np.zeros(0, np.int64), np.zeros((0, 0))
    mapping = {
        (r[0], local_label(r[1])): global_label(int(g))
        for r, g in zip(centroid_rows, labels, strict=True)
    }
    names: dict[int, str] = {}
    if len(enrolled) and len(gcent):
        if enrolled.shape[1] != gcent.shape[1]:
            raise ValueError(
                f"known speakers have {enrolled.shape[1]}-d embeddings, the model gives {gcent.shape[1]}-d"
            )
        for g, k in enumerate(match_enrolled(gcent, enrolled, config.linking.enroll_threshold)):
            if k >= 0:
                names[g] = enrolled_names[k]
    speaker_rows = []
    for g in range(len(gcent)):
        members = labels == g
        voiced = members & np.isfinite(pitch)
        speaker_rows.append(
            {
                "speaker_global": global_label(g),
                "name": names.get(g),
                "speech_seconds": float(seconds[members].sum()),
                "file_count": int(len({centroid_rows[i][0] for i in np.flatnonzero(members)})),
                "centroid": gcent[g].astype(np.float32).tolist(),
                "pitch_hz": (
                    float(
                        semitones_to_hz(
                            np.average(pitch[voiced], weights=np.maximum(seconds[voiced], 1e-3))
                        )
                    )
                    if voiced.any()
                    else None
                ),
            }
        )
    speakers_sink = TableSink(join(out, "speakers"), _speakers_schema(dim))
    speakers_sink.add(speaker_rows)
    speakers_sink.close()
    segments_written = _finalise_segments(
        store.read("segments"), join(out, "segments"), mapping, seen
    )
    if config.write_embeddings:
        windows = TableSink(join(out, "embeddings"), EMBEDDINGS_SCHEMA)
        for table in store.read("embeddings"):
            windows.add(r for r in table.to_pylist() if r["file_id"] in seen)
        windows.close()
    else:
        remove_shards(join(out, "embeddings"))
    _remove_staging(join(out, "_staging"))  # left by versions before shards
    counts = {
        "segments": segments_written,
        "file_speakers": len(centroid_rows),
        "global_speakers": len(speaker_rows),
        "enrolled_matches": len(names),
    }
    return counts


def _finalise_segments(
    shards: Iterator[pa.Table],
    directory: str,
    mapping: dict[tuple[str, str], str],
    keep: set[str],
) -> int:
    """Write committed segment shards to ``directory`` with ``speaker_global`` filled in, one
    shard at a time, sorted by (file, start) inside each; rows of files not in ``keep`` are
    left out."""
    remove_shards(directory)
    written = parts = 0
    for table in shards:
        mask = pa.array([f in keep for f in table.column("file_id").to_pylist()], type=pa.bool_())
        table = table.filter(mask).sort_by([("file_id", "ascending"), ("start", "ascending")])
        keys = zip(
            table.column("file_id").to_pylist(), table.column("speaker").to_pylist(), strict=True
        )
        globals_ = pa.array([mapping.get(k) for k in keys], type=pa.string())
        table = table.set_column(
            table.schema.get_field_index("speaker_global"), "speaker_global", globals_
        )
        write_table_atomic(join(directory, f"part-{parts:05d}.parquet"), table)
        written += table.num_rows
        parts += 1
    if not parts:  # readers still find the schema
        write_table_atomic(join(directory, "part-00000.parquet"), SEGMENTS_SCHEMA.empty_table())
    return written


def _read_parquet(url: str) -> pa.Table:
    if is_local(url):
        return pq.read_table(url)
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    return pq.read_table(path, filesystem=fs)


def _remove_staging(staging: str) -> None:
    import fsspec

    fs, path = fsspec.core.url_to_fs(staging)
    if fs.exists(path):
        fs.rm(path, recursive=True)
