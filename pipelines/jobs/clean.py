"""``voxflow clean``: raw recordings -> a training set of clips, with every dropped hour accounted for.

    list -> segment actors (stream each file once at 16 kHz: VAD, loudness, energy profile ->
            clip spans that start and end in pauses; one summary row per file)
         -> load tasks (decode each clip's window only, loudness gain applied)
         -> the configured steps, each an actor pool: separate, enhance, speaker, transcribe,
            quality (any subset, in that order)
         -> filter + write tasks (rules from the config; kept clips become FLAC under clips/,
            with an audio fingerprint)
         -> driver, in two passes over the committed shards: a few columns of every kept clip
            decide speaker ids from a diarization (``speaker_ids``), near-duplicates across
            the corpus (all but one of each group dropped) and hours balanced per speaker
            (``balance``); then the full rows stream into clips.parquet (in clip id order,
            in parts spilled to disk) and rejected/; funnel, files/, errors/, _run.json

Rows carry ``status``: ``ok`` rows are processed by each step; ``skip`` (set aside with a reason,
e.g. ``too_short``, ``multi_speaker``) and ``error`` rows pass through untouched to the driver, so
every second of every input ends in exactly one place: kept, or dropped with a named reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from audio_ops import ADDED_LATER
from audio_ops.balance import BalanceConfig, TurnIndex, assign_speakers, balance_columns
from audio_ops.clips import ClipConfig, clip_id, segment_file
from audio_ops.duplicates import (
    FP_RATE,
    DuplicateConfig,
    DuplicateIndex,
    at_print_rate,
    fingerprint,
    landmarks,
    partitions_for,
)
from audio_ops.errors import error_kind
from audio_ops.filters import Funnel, first_failure, parse_rules
from audio_ops.io import ANALYSIS_RATE
from audio_ops.packing import pack, unpack
from audio_ops.speakers import (
    SpeakerCheckConfig,
    check_from_diarization,
    check_speakers,
    split_clip,
)
from audio_ops.transcription import TRANSCRIPT_COLUMNS, segment_words
from audio_ops.vad import VadConfig, speech_seconds
from pipelines.engine.config import ConfigError, StageResources
from pipelines.engine.filejob import LISTING_COLUMNS, FileJob, FileState, Stage, rows_to_batch
from pipelines.engine.resume import ShardStore, read_table, remove
from pipelines.engine.runtime import ErrorPolicy
from pipelines.engine.sinks import (
    RankedTableWriter,
    TableSink,
    is_local,
    join,
    write_bytes_atomic,
    write_table_atomic,
)
from pipelines.engine.stages import check_columns
from pipelines.engine.summary import JobSummary

#: Kept clips per part of ``clips.parquet`` held in the driver's memory while it is written
#: (:class:`~pipelines.engine.sinks.RankedTableWriter`); more are spilled to its temporary disk.
CLIPS_PER_PART = 8192

#: Steps in the order they run; ``steps:`` in the config picks a subset.
STEP_ORDER = ("separate", "enhance", "speaker", "transcribe", "quality")
DEFAULT_STEPS = ("enhance", "speaker", "transcribe", "quality")

#: Columns no filter tests: a clip's audio and speech map (payloads), and the seconds the funnel
#: accounts for it.
UNFILTERABLE = {"audio", "speech", "seconds"}


@dataclass(frozen=True)
class CleanRunConfig:
    """Everything ``voxflow clean`` runs with.

    Args:
        steps: which steps run (any of separate, enhance, speaker, transcribe, quality).
        sample_rate: rate of the processed and exported clips (the models see 16 kHz).
        target_lufs: loudness every file is normalised to.
        max_gain_db: the largest gain (either way) loudness normalisation applies.
        vad: speech detection.
        clips: clip bounds and the single-speaker policy.
        speaker: single-speaker check parameters.
        enhancement: the ``enhance`` step's options (see ``audio_ops.enhancement``).
        separation: the ``separate`` step's options (see ``audio_ops.separation``).
        transcription: the ``transcribe`` step's options (see ``audio_ops.transcription``).
        quality: the ``quality`` step's options (see ``audio_ops.quality``).
        filters: rules (``snr >= 15``...), a list or a ``name: rule`` mapping.
        duplicates: near-duplicate detection across the corpus (see ``audio_ops.duplicates``):
            of each group of kept clips with the same audio, the longest stays and the others
            are dropped with reason ``duplicate``.
        speaker_ids: ``diarize``: ``voxflow clean`` (and ``api.clean``) runs ``voxflow
            diarize`` on the same inputs into ``OUT/diarization`` first (resumable like any
            run), and each kept clip gets its ``speaker_global`` and ``speaker_share``; a folder
            or URL: an existing diarize run over the same input paths; None: no speaker ids.
        balance: hours per speaker (see ``audio_ops.balance``).
        resources: scheduling overrides by stage name.
        extensions: audio extensions a directory listing picks up.
        commit_files: finished files per committed shard (resume granularity) ...
        commit_seconds: ... or commit when the oldest uncommitted file waited this long.
    """

    steps: tuple[str, ...] = DEFAULT_STEPS
    sample_rate: int = 16000
    target_lufs: float = -23.0
    max_gain_db: float = 20.0
    vad: VadConfig = field(default_factory=VadConfig)
    clips: ClipConfig = field(default_factory=ClipConfig)
    speaker: SpeakerCheckConfig = field(default_factory=SpeakerCheckConfig)
    enhancement: dict[str, Any] = field(default_factory=dict)
    separation: dict[str, Any] = field(default_factory=dict)
    transcription: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    filters: Any = None
    # Folders written before the check existed resume with ``duplicates: {enabled: false}``.
    duplicates: DuplicateConfig = field(
        default_factory=DuplicateConfig,
        metadata={**ADDED_LATER, "before": DuplicateConfig(enabled=False)},
    )
    speaker_ids: str | None = field(default=None, metadata=ADDED_LATER)
    balance: BalanceConfig = field(default_factory=BalanceConfig, metadata=ADDED_LATER)
    resources: dict[str, StageResources] = field(default_factory=dict)
    extensions: tuple[str, ...] = ()
    commit_files: int = 64
    commit_seconds: float = 30.0

    def __post_init__(self) -> None:
        unknown = [s for s in self.steps if s not in STEP_ORDER]
        if unknown:
            raise ConfigError(
                f"steps: unknown operator {unknown[0]!r} (known: {', '.join(STEP_ORDER)})"
            )
        if self.sample_rate not in (8000, 16000, 22050, 24000, 32000, 44100, 48000):
            raise ConfigError(f"sample_rate: {self.sample_rate} is not a supported rate")
        if self.max_gain_db < 0:
            raise ConfigError("max_gain_db must be >= 0")
        if self.speaker.source == "auto":  # resolved here, so the config hash names it
            source = "diarization" if self.speaker_ids and "speaker" in self.steps else "embeddings"
            object.__setattr__(self, "speaker", replace(self.speaker, source=source))
        if self.speaker.source == "diarization" and not self.speaker_ids:
            raise ConfigError(
                "speaker.source: diarization needs speaker_ids (diarize, or a diarize output "
                "folder)"
            )
        if self.balance.active and self.balance.by == "speaker_global" and not self.speaker_ids:
            raise ConfigError(
                "balance.by: speaker_global needs speaker_ids (diarize, or a diarize output "
                "folder); or balance by another clip column"
            )


def validate(config: CleanRunConfig) -> list:
    """Parse the filters and build every step's options now, so a wrong config fails before any
    work starts, naming the key."""
    from pipelines.engine.config import from_dict

    columns = filter_columns(config)
    rules = parse_rules(config.filters, columns)
    if config.balance.active and config.balance.by != "speaker_global":
        if config.balance.by not in columns | {"clip_id", "rel_path"}:
            raise ConfigError(
                f"balance.by: no step gives the clips a column {config.balance.by!r} "
                f"(known: speaker_global with speaker_ids, {', '.join(sorted(columns))})"
            )
    for step in config.steps:
        cls, section = _step_config_class(step)
        if cls is not None:
            from_dict(cls, getattr(config, section), section)
    return rules


def _step_config_class(step: str) -> tuple[type | None, str]:
    if step == "enhance":
        from audio_ops.enhancement import EnhancementConfig

        return EnhancementConfig, "enhancement"
    if step == "separate":
        from audio_ops.separation import SeparationConfig

        return SeparationConfig, "separation"
    if step == "transcribe":
        from audio_ops.transcription import TranscriptionConfig

        return TranscriptionConfig, "transcription"
    if step == "quality":
        from audio_ops.quality import QualityConfig

        return QualityConfig, "quality"
    return None, ""


def filter_columns(config: CleanRunConfig) -> set[str]:
    """What filters may test: the columns the configured stages declare they add (checked as a
    chain, see :func:`pipelines.engine.stages.check_columns`), less :data:`UNFILTERABLE`."""
    return (check_columns(_chain(config), LISTING_COLUMNS) or set()) - UNFILTERABLE


def _chain(config: CleanRunConfig) -> list[tuple[str, type]]:
    """The stages a clip goes through before the filter, in order: (name, operator class)."""
    chain = [("segment", SegmentOperator), ("load", LoadClipOperator)]
    return chain + [
        (step, _step_operator_class(step)) for step in STEP_ORDER if step in config.steps
    ]


def _step_operator_class(step: str) -> type:
    if step == "enhance":
        from audio_ops.enhancement import EnhanceOperator

        return EnhanceOperator
    if step == "separate":
        from audio_ops.separation import SeparateOperator

        return SeparateOperator
    if step == "quality":
        from audio_ops.quality import QualityOperator

        return QualityOperator
    return {"transcribe": TranscribeAt16k, "speaker": SpeakerCheckOperator}[step]


def _stage_options(stage: str, config: CleanRunConfig) -> dict[str, Any]:
    """The constructor arguments of a stage of :func:`_chain`."""
    from pipelines.engine.config import from_dict

    if stage == "segment":
        return {"config": config}
    if stage == "load":
        return {"sample_rate": config.sample_rate}
    if stage == "speaker":
        return {"config": config.speaker, "clip_config": config.clips}
    cls, section = _step_config_class(stage)
    options = {"config": from_dict(cls, getattr(config, section), section)}
    if stage == "transcribe":
        options["vad"] = config.vad  # word snapping and speech seconds use the job's Silero
    return options


# ----------------------------------------------------------------------------------------------
# Stage operators (numpy batches in and out)
# ----------------------------------------------------------------------------------------------


def _gain_db(lufs: float, target: float, limit: float) -> float:
    if not np.isfinite(lufs):
        return 0.0
    return float(np.clip(target - lufs, -limit, limit))


class SegmentOperator:
    """Segment stage: each file row fans out into one ``kind=file`` summary row and one row per
    clip span (``ok``), or per span set aside (``skip`` with its reason).

    Args:
        config: the run config.
    """

    uses_model = True
    num_cpus = 0.25
    batch_size = 1
    max_actors = 2
    inputs = ("path",)
    outputs = (
        "start",
        "end",
        "seconds",
        "duration",
        "gain_db",
        "loudness_lufs",
        "speech_seconds",
        "speech",
    )

    def __init__(self, config: CleanRunConfig):
        from audio_ops.vad import make_vad

        self.config = config
        self.vad = make_vad(config.vad)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows: list[dict[str, Any]] = []
        for file_id, path in zip(batch["file_id"], batch["path"], strict=True):
            try:
                seg = segment_file(str(path), self.vad, self.config.vad, self.config.clips)
            except Exception as exc:
                rows.append(
                    _row(
                        file_id,
                        path,
                        "file",
                        status="error",
                        error_kind=error_kind(exc),
                        error=str(exc) or repr(exc),
                        error_stage="segment",
                    )
                )
                continue
            gain = _gain_db(seg.loudness_lufs, self.config.target_lufs, self.config.max_gain_db)
            speech = speech_seconds(seg.regions)
            in_clips = sum(c.duration for c in seg.clips)
            rows.append(
                _row(
                    file_id,
                    path,
                    "file",
                    status="skip",
                    reason="no_speech",
                    seconds=max(seg.duration - in_clips, 0.0),
                    duration=seg.duration,
                    loudness_lufs=seg.loudness_lufs,
                    speech_seconds=speech,
                    gain_db=gain,
                    parts=len(seg.clips),
                )
            )
            for index, clip in enumerate(seg.clips):
                local = clip.speech - clip.start
                rows.append(
                    _row(
                        file_id,
                        path,
                        "clip",
                        clip_index=index,
                        start=clip.start,
                        end=clip.end,
                        seconds=clip.duration,
                        status="skip" if clip.reason else "ok",
                        reason=clip.reason,
                        speech=pack(local),
                        gain_db=gain,
                        loudness_lufs=seg.loudness_lufs,
                        duration=clip.duration,
                        speech_seconds=speech_seconds(local),
                    )
                )
        return _columns(rows)


_DEFAULTS: dict[str, Any] = {
    "kind": "",
    "clip_index": -1,
    "start": 0.0,
    "end": 0.0,
    "seconds": 0.0,
    "status": "ok",
    "reason": "",
    "speech": b"",
    "gain_db": 0.0,
    "loudness_lufs": float("nan"),
    "duration": 0.0,
    "speech_seconds": 0.0,
    "audio": b"",
    "sample_rate": 0,
    "error_kind": "",
    "error": "",
    "error_stage": "",
    # Completeness, for committing whole files: the file row says how many clips it has, and the
    # last row a clip becomes (after a speaker split) is marked (see pipelines.engine.filejob).
    "parts": 0,
    "part_last": True,
}


def _row(file_id: str, path: str, kind: str, **values: Any) -> dict[str, Any]:
    row = dict(_DEFAULTS)
    row.update(file_id=file_id, path=path, kind=kind, **values)
    return row


def _columns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """A stage's rows (all with the same keys) as a numpy batch, each column typed by its
    :data:`_DEFAULTS` value, or by its first value where it has no default."""
    if not rows:
        return rows_to_batch([], _DEFAULTS)
    return rows_to_batch(rows, {key: _DEFAULTS.get(key, value) for key, value in rows[0].items()})


class LoadClipOperator:
    """Load stage: decodes each clip's window (only), at the run's rate, with the file's loudness
    gain applied and peaks kept below full scale.

    Args:
        sample_rate: output rate.
    """

    num_cpus = 0.25
    batch_size = 4
    inputs = ("path", "start", "end", "gain_db")
    outputs = ("audio", "sample_rate")

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from audio_ops.io import load_audio

        audio, rates = [], []
        for path, start, end, gain in zip(
            batch["path"], batch["start"], batch["end"], batch["gain_db"], strict=True
        ):
            samples, rate = load_audio(
                str(path), self.sample_rate, start=float(start), end=float(end)
            )
            samples = samples * np.float32(10 ** (float(gain) / 20))
            peak = float(np.max(np.abs(samples))) if samples.size else 0.0
            if peak > 0.98:  # the gain must not clip
                samples = samples * np.float32(0.98 / peak)
            audio.append(samples.astype(np.float32).tobytes())
            rates.append(rate)
        out = dict(batch)
        out["audio"] = np.array(audio, dtype=object)
        out["sample_rate"] = np.array(rates, dtype=np.int64)
        return out


def diarization_segments(folder: str):
    """``(filesystem, path)`` of a ``voxflow diarize`` run's ``segments/`` table, or a
    ConfigError naming the folder."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(join(folder, "segments"))
    if not fs.exists(path):
        raise ConfigError(
            f"speaker_ids: {folder} has no segments/ table: a voxflow diarize run folder is "
            "needed (speaker_ids: diarize makes one when run by voxflow clean or api.clean)"
        )
    return fs, path


def read_turns(folder: str, speaker: str) -> TurnIndex:
    """The turns of a ``voxflow diarize`` run's segments, with ``speaker`` (a column: the local
    ``speaker`` or ``speaker_global``) as their speaker, in a compact :class:`TurnIndex`. The
    id columns are read dictionary-encoded, so no string per turn is ever made."""
    import pyarrow.parquet as pq

    fs, path = diarization_segments(folder)
    columns = ["file_id", "start", "end", speaker]
    parts = [path] if fs.isfile(path) else sorted(fs.find(path))
    parts = [p for p in parts if p.endswith(".parquet")]
    footers = []
    for part in parts:  # the footers first: the index is then filled in place
        with fs.open(part, "rb") as f:
            footers.append(pq.ParquetFile(f).metadata)

    def batches():
        for part, footer in zip(parts, footers, strict=True):
            with fs.open(part, "rb") as f:  # its footer is not read again
                reader = pq.ParquetFile(f, metadata=footer, read_dictionary=["file_id", speaker])
                yield from reader.iter_batches(batch_size=1 << 16, columns=columns)

    return TurnIndex.from_batches(batches(), speaker, sum(m.num_rows for m in footers))


class SpeakerCheckOperator:
    """Speaker stage: one speaker per clip. A clip with several is split at the changes (parts
    that meet the bounds become clips; the remainder is a ``skip`` row ``multi_speaker``) or
    set aside whole, by ``clips.single_speaker``.

    Args:
        config: embedding and clustering of the check.
        clip_config: bounds and policy.
        diarization: a ``voxflow diarize`` run over the same files: the clips are checked on its
            turns (:func:`audio_ops.speakers.check_from_diarization`) instead of embedded again;
            clips of a file it has no turn of are embedded. Each actor holds the run's turns
            in a :class:`~audio_ops.balance.TurnIndex` (28 bytes a turn).
    """

    uses_model = True
    num_cpus = 0.5
    batch_size = 4
    inputs = ("audio", "sample_rate", "speech", "start", "seconds")
    outputs = ("speaker_count", "overlap_ratio")

    def __init__(
        self, config: SpeakerCheckConfig, clip_config: ClipConfig, diarization: str | None = None
    ):
        self.config, self.clip_config = config, clip_config
        self.encoder, self.turns = None, None
        if diarization is not None:
            self.turns = read_turns(diarization, "speaker")
        else:
            self._encoder()

    def _encoder(self):
        if self.encoder is None:
            from audio_ops.embedding import make_encoder

            self.encoder = make_encoder(self.config.embedding)
        return self.encoder

    def _check(self, row: dict[str, Any], audio16: np.ndarray, speech: np.ndarray):
        # A file the diarization has no turn of (not in that run, or no speech found there) is
        # checked by embeddings: never passed unchecked.
        if self.turns is None or str(row["file_id"]) not in self.turns:
            encoder = self._encoder()
            return check_speakers(audio16, speech, encoder, self.config, self.clip_config)
        offset = float(row["start"])
        duration = len(audio16) / ANALYSIS_RATE
        turns = [
            (start - offset, end - offset, speaker)
            for start, end, speaker in self.turns.overlapping(
                str(row["file_id"]), offset, offset + duration
            )
        ]
        return check_from_diarization(turns, speech, duration, self.config, self.clip_config)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from audio_ops.io import resample

        rows = [{k: v[i] for k, v in batch.items()} for i in range(len(batch["file_id"]))]
        out: list[dict[str, Any]] = []
        for row in rows:
            rate = int(row["sample_rate"])
            audio = np.frombuffer(row["audio"], dtype=np.float32)
            audio16 = resample(audio, rate, ANALYSIS_RATE) if rate != ANALYSIS_RATE else audio
            speech = unpack(row["speech"]) if row["speech"] else np.zeros((0, 2))
            if self.clip_config.single_speaker == "off":
                out.append({**row, "speaker_count": -1, "overlap_ratio": float("nan")})
                continue
            check = self._check(row, audio16, speech)
            base = {
                **row,
                "speaker_count": check.speaker_count,
                "overlap_ratio": check.overlap_ratio,
            }
            if check.speaker_count <= 1:
                out.append(base)
                continue
            kept_seconds = 0.0
            for part in split_clip(audio, rate, speech, check, self.clip_config.single_speaker):
                out.append(
                    {
                        **base,
                        "start": float(row["start"]) + part.start,
                        "end": float(row["start"]) + part.end,
                        "seconds": part.end - part.start,
                        "duration": part.end - part.start,
                        "audio": part.audio.tobytes(),
                        "speech": pack(part.speech),
                        "speaker_count": 1,
                        "part_last": False,
                        "speech_seconds": part.speech_seconds,
                    }
                )
                kept_seconds += part.end - part.start
            out.append(
                {
                    **base,
                    "status": "skip",
                    "reason": "multi_speaker",
                    "audio": b"",
                    "seconds": max(float(row["seconds"]) - kept_seconds, 0.0),
                }
            )
        return _columns(out)


class TranscribeAt16k:
    """Transcription stage: the Whisper operator, fed 16 kHz whatever the run's rate.

    Each actor runs Whisper with ``threads`` CPU threads (the stage's reserved CPUs, at least one,
    as in ``voxflow transcribe``) unless ``transcription.cpu_threads`` is set, and the pool starts
    with both its actors: transcription is two thirds of the job's CPU, and an actor that starts
    mid-run pays its imports and model load for little work. Measured with ``examples/clean.yaml``
    on 2 cores (benchmarks/clean_speed.py's 12.7 min corpus, 3 runs each, whole process tree):
    before, Whisper ran one thread per core in each actor and the pool grew from one actor,
    64.0-66.4 s and 115-121 CPU-s; with one thread only, 60.3-62.8 s; now 57.1-63.4 s and
    103-114 CPU-s.
    """

    uses_model = True
    num_cpus = 0.5
    batch_size = 4
    min_actors = 2
    max_actors = 2
    inputs = ("audio", "sample_rate")
    outputs = tuple(TRANSCRIPT_COLUMNS)

    def __init__(self, config: Any, threads: int = 1, vad: VadConfig | None = None):
        from audio_ops.transcription import TranscribeOperator

        self.inner = TranscribeOperator(config, threads=config.cpu_threads or threads, vad=vad)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from audio_ops.io import resample

        rates = batch["sample_rate"]
        if np.all(rates == ANALYSIS_RATE):
            return self.inner(batch)
        original = batch["audio"]
        converted = np.array(
            [
                resample(np.frombuffer(a, np.float32), int(r), ANALYSIS_RATE).tobytes()
                for a, r in zip(original, rates, strict=True)
            ],
            dtype=object,
        )
        out = self.inner({**batch, "audio": converted})
        out["audio"] = original
        return out


class FilterWriteOperator:
    """Filter + write stage: the first failed rule's name becomes the clip's ``reason``; kept clips
    are written as FLAC to ``OUT/clips/<clip_id>.flac`` (temporary name, then rename). The audio
    column is dropped either way.

    Args:
        rules: the parsed filter rules.
        out: the run's output folder.
        fingerprints: give each kept clip its audio ``fingerprint`` (uint32 bytes, see
            :func:`audio_ops.duplicates.fingerprint`) for the corpus-wide duplicate check ...
        landmarks: ... and its ``landmarks`` (uint64 bytes, :func:`audio_ops.duplicates.landmarks`)
            for the duplicate index.
    """

    num_cpus = 0.25
    batch_size = 8
    inputs = ("file_id", "start", "audio", "sample_rate")
    outputs = ("reason", "status", "audio_path", "fingerprint", "landmarks")

    def __init__(self, rules: list, out: str, fingerprints: bool = True, landmarks: bool = True):
        self.rules, self.out, self.fingerprints = rules, out, fingerprints
        self.landmarks = fingerprints and landmarks

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import io

        import soundfile as sf

        n = len(batch["file_id"])
        reasons, paths, prints, marks = [], [], [], []
        for i in range(n):
            row = {
                k: (v[i].item() if hasattr(v[i], "item") else v[i])
                for k, v in batch.items()
                if k != "audio"
            }
            reason = first_failure(row, self.rules)
            reasons.append(reason)
            if reason:
                paths.append("")
                prints.append(b"")
                marks.append(b"")
                continue
            name = f"clips/{clip_id(row['file_id'], row['start'])}.flac"
            buffer = io.BytesIO()
            samples = np.frombuffer(batch["audio"][i], dtype=np.float32)
            rate = int(row["sample_rate"])
            if self.fingerprints:  # resampled once for both
                heard = at_print_rate(samples, rate)
                prints.append(fingerprint(heard, FP_RATE).tobytes())
                marks.append(landmarks(heard, FP_RATE).tobytes() if self.landmarks else b"")
            else:
                prints.append(b"")
                marks.append(b"")
            sf.write(buffer, samples, rate, format="FLAC", subtype="PCM_16")
            write_bytes_atomic(join(self.out, name), buffer.getvalue())
            paths.append(name)
        out = {k: v for k, v in batch.items() if k != "audio"}
        out["reason"] = np.array(reasons, dtype=object)
        out["status"] = np.where(np.array(reasons, dtype=object) == "", "ok", "skip").astype(object)
        out["audio_path"] = np.array(paths, dtype=object)
        out["fingerprint"] = np.array(prints, dtype=object)
        out["landmarks"] = np.array(marks, dtype=object)
        return out


# ----------------------------------------------------------------------------------------------
# The job
# ----------------------------------------------------------------------------------------------

_DROP = {
    "speech",
    "audio",
    "kind",
    "status",
    "reason",
    "error_kind",
    "error",
    "error_stage",
    "seconds",
    "parts",
    "part_last",
}
#: Kept in the shards for the corpus-wide steps, not written to clips.parquet.
_INTERNAL = ("fingerprint", "landmarks", "funnel_seconds")
#: Payloads of the duplicate check: streamed from the shards into its index, never all held.
_PRINTS = ("fingerprint", "landmarks")


_FUNNEL_SCHEMA = pa.schema(
    [("file_id", pa.string()), ("seconds", pa.float64()), ("reason", pa.string())]
)


class CleanJob(FileJob):
    """``voxflow clean`` on the one lifecycle: a file's row (kind ``file``) announces its clips
    (``parts``); each clip ends as a kept row, or rejected rows with reasons, and every row adds
    its seconds to the funnel. A clip that fails a step is rejected with reason ``error:STEP``;
    its file stays ``ok``."""

    name = "clean"
    config_class = CleanRunConfig
    outputs = ("rejected", "clips", "clips.parquet", "funnel.parquet")
    result_tables = {"clips": "clips.parquet", "rejected": "rejected", "funnel": "funnel.parquet"}
    failed_part_fails_file = False

    def preflight(self) -> None:
        self.rules = validate(self.config)
        if "transcribe" in self.config.steps:
            from audio_ops.alignment import check_aligner

            check_aligner(self.config.transcription.get("aligner"))
        if self.config.speaker_ids:  # read by the speaker step and at the end: fail now
            diarization_segments(self._diarization_folder())

    def identity(self) -> Any:
        from audio_ops.enhancement import EnhancementConfig
        from pipelines.engine.config import hashed_options

        if "enhance" not in self.config.steps:
            return self.config
        return hashed_options(self.config, "enhancement", EnhancementConfig)

    def _diarization_folder(self) -> str:
        """The diarize run ``speaker_ids`` names. ``diarize``: ``OUT/diarization``, which
        ``voxflow clean`` and ``api.clean`` run first (:func:`pipelines.api.diarize_for_clean`;
        a job never runs another)."""
        source = self.config.speaker_ids
        return join(self.out, "diarization") if source == "diarize" else source

    def _speaker_turns(self) -> TurnIndex:
        """The ``speaker_global`` turns of the diarization ``speaker_ids`` names."""
        return read_turns(self._diarization_folder(), "speaker_global")

    def schemas(self, listing: list[dict[str, Any]]) -> dict[str, pa.Schema | None]:
        return {
            "files": _FILES_SCHEMA,
            "rejected": _REJECTED_SCHEMA,
            "funnel": _FUNNEL_SCHEMA,
            "kept": None,
        }

    def stages(self) -> list[Stage]:
        stages = []
        for name, cls in _chain(self.config):
            kwargs = _stage_options(name, self.config)
            if name == "speaker" and self.config.speaker.source == "diarization":
                kwargs["diarization"] = self._diarization_folder()
            if name == "transcribe":
                kwargs["threads"] = self.threads_for(cls, name)
            stages.append(Stage(name, cls, kwargs))
        stages.append(
            Stage(
                "filter",
                FilterWriteOperator,
                {
                    "rules": self.rules,
                    "out": self.out,
                    "fingerprints": self.config.duplicates.enabled,
                    "landmarks": self.config.duplicates.index == "landmarks",
                },
                False,
            )
        )
        return stages

    def is_part(self, row: dict[str, Any]) -> bool:
        return row.get("kind") != "file"

    def part(self, row: dict[str, Any], file: FileState) -> None:
        """A clip's row: kept, or rejected with its reason; its seconds go to the funnel."""
        row.pop("audio", None)
        file_id = row["file_id"]
        seconds = float(row.get("seconds") or 0.0)
        reason = _reason(row)
        file.add("funnel", [{"file_id": file_id, "seconds": seconds, "reason": reason}])
        record = {k: _plain(v) for k, v in row.items() if k not in _DROP}
        record["clip_id"] = clip_id(file_id, float(row.get("start") or 0.0))
        record["rel_path"] = file.listing.get("rel_path")
        if row.get("status") == "ok" and not reason:
            record["funnel_seconds"] = seconds
            file.add("kept", [record])
            return
        file.add(
            "rejected", [_rejected_row({**row, "clip_id": record["clip_id"]}, reason, seconds)]
        )

    def file_record(self, row: dict[str, Any], file: FileState) -> dict[str, Any]:
        """The file's row; the seconds outside its clips go to the funnel (``no_speech``)."""
        file.add(
            "funnel",
            [
                {
                    "file_id": file.listing["file_id"],
                    "seconds": float(row.get("seconds") or 0.0),
                    "reason": _reason(row),
                }
            ],
        )
        failed = row.get("status") == "error"
        return {
            **file.listing,
            "duration": float(row.get("duration") or 0.0),
            "speech_seconds": row.get("speech_seconds"),
            "loudness_lufs": row.get("loudness_lufs"),
            "gain_db": row.get("gain_db"),
            "status": "error" if failed else "ok",
            "error_kind": row.get("error_kind") or "",
            "error": row.get("error") or "",
            "error_stage": row.get("error_stage") or "",
        }

    def finalise(self, seen: set[str]) -> dict[str, Any]:
        """``rejected/``, ``clips.parquet`` and the funnel from every committed shard; the
        corpus-wide steps (speaker ids, duplicates, balance) run here, over every kept clip.

        Two passes over the kept shards keep the driver's memory small per clip: the first
        reads a few columns and decides each clip's speaker, group and fate
        (:meth:`_decide`); the second streams the full rows shard by shard into
        ``clips.parquet`` (in clip id order, through :class:`RankedTableWriter`) or into
        ``rejected/``."""
        plan = self._decide(seen)
        self.funnel = plan.funnel
        self.speakers_matched = plan.speakers_matched
        rejected = TableSink(join(self.out, "rejected"), _REJECTED_FINAL)
        for table in self.store.read("rejected"):
            rejected.add(r for r in table.to_pylist() if r["file_id"] in seen)
        clips = RankedTableWriter(
            clips_table_path(self.out),
            plan.kept,
            first=_CLIP_COLUMNS,
            last=("words",),
            rows_per_part=CLIPS_PER_PART,
        )
        for table, rank in _in_order(self.store.read("kept", skip=_PRINTS), seen, plan.ids):
            for offset, batch in _batches(table):
                for row, i in zip(batch.to_pylist(), rank[offset:], strict=False):
                    plan.annotate(i, row)
                    reason = plan.reason[i]
                    if reason:  # dropped after its FLAC was written
                        rejected.add([plan.rejected_row(row, reason)])
                        if row.get("audio_path"):
                            remove(absolute_audio_path(self.out, row["audio_path"]))
                        continue
                    for name in _INTERNAL:
                        row.pop(name, None)
                    # Word timings (word_timestamps or an aligner), in the clip's own time.
                    row["words"] = segment_words(row.get("segments"))
                    clips.add(plan.kept_rank[i], row)
        rejected.close()
        clips.close()
        write_table_atomic(
            join(self.out, "funnel.parquet"), pa.Table.from_pylist(self.funnel.rows())
        )
        counts = {"clips_kept": self.funnel.clips_kept}
        if self.speakers_matched is not None:  # kept clips a diarized speaker was found for
            counts["clips_with_speaker"] = self.speakers_matched
        return counts

    def _decide(self, seen: set[str]) -> _Plan:
        """The corpus-wide decisions, from a few columns of every kept clip: each clip's
        speaker (``speaker_ids``), duplicate group, and whether the duplicate check or the
        balance drops it (reasons ``duplicate``, ``speaker_cap``, ``speaker_min_clips``); the
        funnel with those drops."""
        config = self.config
        names = ["clip_id", "file_id", "start", "end", "duration", "funnel_seconds"]
        by = config.balance.by if config.balance.active else None
        assigned = ("speaker_global", "speaker_share") if config.speaker_ids else ()
        if by is not None and by not in names and by not in assigned:
            names.append(by)
        tables = [t for t, _ in _in_order(self.store.read("kept", columns=names), seen)]
        if tables:
            table = pa.concat_tables(tables, promote_options="permissive")
            table = table.sort_by("clip_id").combine_chunks()
        else:
            table = pa.table({n: pa.array([], pa.string()) for n in names[:2]})
        plan = _Plan(table["clip_id"], _funnel_from(self.store, seen))
        n = plan.total
        if config.speaker_ids and n:
            spans = zip(
                table["file_id"].to_pylist(),
                _floats(table, "start"),
                _floats(table, "end"),
                strict=True,
            )
            found = assign_speakers(spans, self._speaker_turns())
            plan.speaker = np.array([s for s, _ in found], dtype=object)
            plan.share = np.array([share for _, share in found], dtype=np.float64)
            plan.speakers_matched = int(sum(s is not None for s, _ in found))
        seconds = _floats(table, "funnel_seconds") if n else np.zeros(0)
        duration = _floats(table, "duration") if n else np.zeros(0)
        if config.duplicates.enabled and n:
            group, keeper = self._duplicates(plan.ids, duration, seen)
            keeper_ids = plan.ids.take(pa.array(keeper)).to_numpy(zero_copy_only=False)
            plan.group = np.where(group >= 0, keeper_ids, None)
            for i in np.flatnonzero(keeper != np.arange(n)):
                plan.drop(int(i), "duplicate", seconds[i])
        if config.balance.active and n:
            if by in assigned:
                speakers = plan.speaker if by == "speaker_global" else plan.share
            elif by in table.column_names:
                speakers = table[by].to_numpy(zero_copy_only=False)
            else:
                # a shard without kept clips may have no columns: the first one with rows
                first = next(t for t in self.store.read("kept", skip=_PRINTS) if t.num_rows)
                have = sorted({*first.column_names, *assigned})
                raise ConfigError(
                    f"balance.by: the clips have no column {by!r} (they have: {', '.join(have)})"
                )
            alive = np.flatnonzero(plan.reason == "")
            ids = plan.ids.take(pa.array(alive)).to_pylist()
            reasons = balance_columns(ids, duration[alive], speakers[alive], config.balance)
            for i, reason in zip(alive, reasons, strict=True):
                if reason:
                    plan.drop(int(i), reason, seconds[i])
        plan.funnel.check()
        plan.kept_rank = np.cumsum(plan.reason == "") - 1
        plan.kept = int(plan.kept_rank[-1]) + 1 if n else 0
        return plan

    def _duplicates(
        self, ids: pa.Array, duration: np.ndarray, seen: set[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each kept clip's duplicate group (-1: none) and its group's kept clip (the longest,
        then the first by id), by index in ``ids`` (the clip ids, sorted). The fingerprints and
        landmarks are read from the shards one shard at a time into a
        :class:`~audio_ops.duplicates.DuplicateIndex` on the driver's temporary disk."""
        config = self.config.duplicates
        columns = ["clip_id", "file_id", "fingerprint"]
        if config.index == "landmarks":
            columns.append("landmarks")
        partitions = partitions_for(float(duration.sum()))
        with DuplicateIndex(len(ids), config, partitions=partitions) as index:
            for table, rank in _in_order(self.store.read("kept", columns=columns), seen, ids):
                for offset, batch in _batches(table):
                    prints = batch.column("fingerprint").to_pylist()
                    marks = (
                        batch.column("landmarks").to_pylist()
                        if "landmarks" in batch.schema.names
                        else [None] * batch.num_rows
                    )
                    for i, fp, lm in zip(rank[offset:], prints, marks, strict=False):
                        index.add(
                            int(i),
                            np.frombuffer(fp or b"", np.uint32),
                            np.frombuffer(lm or b"", np.uint64),
                        )
            group, keeper, _ = index.group(order=lambda i: (-float(duration[i]), i))
        return group, keeper

    def record(self) -> dict[str, Any]:
        funnel = self.funnel
        return {
            "funnel": {
                "hours_in": funnel.seconds_in / 3600,
                "hours_kept": funnel.kept / 3600,
                "hours_dropped": {k: v / 3600 for k, v in funnel.dropped.items()},
            }
        }

    def result(self, summary: JobSummary) -> tuple[JobSummary, Funnel]:
        return summary, self.funnel

    def previous_result(self, summary: JobSummary) -> tuple[JobSummary, Funnel]:
        # The funnel the finished run wrote: the corpus-wide steps are not run again.
        table = read_table(join(self.out, "funnel.parquet"))
        return summary, Funnel.from_rows(table.to_pylist())


def run_clean(
    inputs: list[str],
    out: str,
    config: CleanRunConfig | None = None,
    *,
    address: str | None = None,
    quiet: bool = False,
    num_cpus: int | None = None,
    policy: ErrorPolicy | None = None,
    overwrite: bool = False,
) -> tuple[JobSummary, Funnel]:
    """Clean a corpus into clips.

    Each file's rows (its ``files`` row, kept clips, rejected spans, funnel entries) are
    committed in shards once the file is complete (see :mod:`pipelines.engine.resume`), so a run
    that is cut off resumes where it stopped.

    Args:
        inputs: directories, globs, files or manifests.
        out: output folder, local or URL.
        config: the run's configuration (validated before anything runs).
        address: Ray address; None starts (and stops) a local Ray.
        quiet: no progress line.
        num_cpus: CPUs of a local Ray started for this job.
        policy: when failed files abort the job (default: never).
        overwrite: replace the outputs of a previous run with another config in ``out``.

    Returns:
        The summary and the funnel (``funnel.check()`` has passed).
    """
    return CleanJob.launch(
        inputs,
        out,
        config,
        address=address,
        quiet=quiet,
        num_cpus=num_cpus,
        policy=policy,
        overwrite=overwrite,
    )


def _reason(row: dict[str, Any]) -> str:
    """Why a row's seconds are dropped (empty: kept): the failed step, or the row's reason."""
    if row.get("status") == "error":
        return f"error:{row.get('error_stage') or 'unknown'}"
    return row.get("reason") or ""


def _rejected_row(row: dict[str, Any], reason: str, seconds: float) -> dict[str, Any]:
    """A ``rejected/`` row (:data:`_REJECTED_SCHEMA`) of a clip row that has its ``clip_id``."""
    text = row.get("text")
    return {
        "clip_id": row["clip_id"],
        "file_id": row["file_id"],
        "path": row.get("path"),
        "start": float(row.get("start") or 0.0),
        "end": float(row.get("end") or 0.0),
        "seconds": seconds,
        "reason": reason,
        "error": row.get("error") or "",
        "text": text if isinstance(text, str) else None,
    }


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _funnel_from(store: ShardStore, keep: set[str]) -> Funnel:
    funnel = Funnel()
    for table in store.read("funnel"):
        for row in table.to_pylist():
            if row["file_id"] in keep:
                funnel.add(row["seconds"], row["reason"] or "")
    funnel.check()
    return funnel


class _Plan:
    """What the corpus-wide steps decided, per kept clip in clip id order (index ``i``)."""

    def __init__(self, ids: pa.ChunkedArray | pa.Array, funnel: Funnel):
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks()
        self.ids = ids
        self.total = len(ids)
        self.funnel = funnel
        self.reason = np.full(self.total, "", dtype=object)
        self.speaker: np.ndarray | None = None  # speaker_global, speaker_share (speaker_ids)
        self.share: np.ndarray | None = None
        self.speakers_matched: int | None = None
        self.group: np.ndarray | None = None  # duplicate_group (duplicates enabled)
        self.kept_rank = np.zeros(0, dtype=np.int64)
        self.kept = 0

    def drop(self, i: int, reason: str, seconds: float) -> None:
        self.reason[i] = reason
        self.funnel.drop_kept(float(seconds), reason)

    def annotate(self, i: int, row: dict[str, Any]) -> None:
        """The columns the corpus-wide steps add to clip ``i``'s row."""
        if self.speaker is not None:
            row["speaker_global"] = self.speaker[i]
            row["speaker_share"] = float(self.share[i])
        if self.group is not None:
            row["duplicate_group"] = self.group[i]

    @staticmethod
    def rejected_row(row: dict[str, Any], reason: str) -> dict[str, Any]:
        """A ``rejected/`` row of a kept clip a corpus-wide step dropped (:data:`_REJECTED_FINAL`)."""
        seconds = float(row.get("funnel_seconds") or 0.0)
        return {
            **_rejected_row(row, reason, seconds),
            "duplicate_group": row.get("duplicate_group"),
            "audio_path": row.get("audio_path") or "",
            "speaker_global": row.get("speaker_global"),
        }


def _in_order(
    tables: Iterable[pa.Table], seen: set[str], ids: pa.Array | None = None
) -> Iterator[tuple[pa.Table, np.ndarray | None]]:
    """The rows of the files in ``seen`` of each shard table, with each row's index in ``ids``
    (the sorted clip ids of :meth:`CleanJob._decide`) when given."""
    value_set = pa.array(sorted(seen), pa.string())
    for table in tables:
        if not table.num_rows:  # a shard without kept clips may have no columns at all
            continue
        table = table.filter(pc.is_in(table["file_id"], value_set=value_set))
        if not table.num_rows:
            continue
        rank = None
        if ids is not None:
            found = pc.index_in(table["clip_id"], value_set=ids)
            if found.null_count:
                raise RuntimeError("a kept clip's id was not found in the first pass")
            rank = found.to_numpy().astype(np.int64)
        yield table, rank


def _batches(table: pa.Table, rows: int = 256) -> Iterator[tuple[int, pa.RecordBatch]]:
    """``table`` in record batches of at most ``rows`` rows, with each batch's first row."""
    offset = 0
    for batch in table.to_batches(rows):
        yield offset, batch
        offset += batch.num_rows


def _floats(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column as float64, nulls as 0."""
    if name not in table.column_names:
        return np.zeros(table.num_rows)
    column = pc.fill_null(table[name].cast(pa.float64()), 0.0)
    return column.to_numpy(zero_copy_only=False)


_REJECTED_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("file_id", pa.string()),
        ("path", pa.string()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("seconds", pa.float64()),
        ("reason", pa.string()),
        ("error", pa.string()),
        ("text", pa.string()),
    ]
)
#: ``rejected/`` as written: a clip the corpus-wide steps dropped names its FLAC (removed), a
#: duplicate its group (the clip kept in its place), a capped clip its speaker.
_REJECTED_FINAL = pa.schema(
    [
        *_REJECTED_SCHEMA,
        ("duplicate_group", pa.string()),
        ("audio_path", pa.string()),
        ("speaker_global", pa.string()),
    ]
)


_FILES_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("file_id", pa.string()),
        ("rel_path", pa.string()),
        ("source", pa.string()),
        ("duration", pa.float64()),
        ("speech_seconds", pa.float64()),
        ("loudness_lufs", pa.float64()),
        ("gain_db", pa.float64()),
        ("status", pa.string()),
        ("error_kind", pa.string()),
        ("error", pa.string()),
        ("error_stage", pa.string()),
    ]
)


#: The first columns of ``clips.parquet`` (then the others by name, then ``words``); plain
#: columns (no extension types), so pandas, DuckDB and ``datasets.load_dataset("parquet", ...)``
#: read it as it is.
_CLIP_COLUMNS = (
    "clip_id",
    "audio_path",
    "file_id",
    "path",
    "rel_path",
    "start",
    "end",
    "duration",
    "sample_rate",
)


def clips_table_path(out: str) -> str:
    """Where the kept clips' metadata lives."""
    return join(out, "clips.parquet")


def absolute_audio_path(out: str, audio_path: str) -> str:
    """The location of a clip's FLAC file."""
    return (
        os.path.join(os.path.abspath(out), audio_path) if is_local(out) else join(out, audio_path)
    )
