"""``voxflow transcribe``: Whisper transcripts of every file, clip by clip.

    list -> scan actors (each file streamed once at 16 kHz: VAD per chunk, then its speech cut
            into clips of at most ``clips.max_seconds`` that start and end in pauses; the file's
            row plus one row per clip)
         -> transcribe actors (each clip's window decoded on its own, Whisper in batches of clips:
            ``audio_ops.transcription.TranscribeOperator``)
         -> driver: transcripts/, files/, errors/, _run.json

A long file never goes whole into Whisper, nor into memory: it fans out into clips that stay
within Whisper's 30 s window, and the clips of one file spread over every transcribe actor. Every
clip is transcribed, short ones included; silence between clips is never sent to the model.

Output in DIR: ``transcripts/`` (one row per clip: ``clip_id`` (the file's id and the clip's
start in ms, as ``voxflow clean`` names clips), ``path``, ``file_id``, ``start``, ``end``,
``text``, ``language``, ``language_prob``, ``avg_logprob``, ``no_speech_prob``,
``compression_ratio``, the hallucination flags...), ``files/`` (clips, seconds transcribed,
words, hallucinated clips), ``errors/``, ``_run.json``. A file one of whose clips failed is an
error row (its other clips' transcripts are kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from audio_ops.clips import ClipConfig
from audio_ops.transcription import (
    WINDOW_SECONDS,
    TranscriptionConfig,
    segment_words,
    word_type,
)
from audio_ops.vad import VadConfig, speech_seconds
from pipelines.engine.config import ConfigError, StageResources
from pipelines.engine.filejob import (
    FileJob,
    FileState,
    Stage,
    batch_rows,
    make_files_schema,
    rows_to_batch,
)
from pipelines.engine.scan import SCAN_COLUMNS, SpeechScanOperator


def _default_clips() -> ClipConfig:
    # Short clips are transcribed too; min_seconds only steers where long speech is cut.
    return ClipConfig(min_seconds=1.0, max_seconds=WINDOW_SECONDS, single_speaker="off")


@dataclass(frozen=True)
class TranscribeRunConfig:
    """Everything ``voxflow transcribe`` runs with.

    Args:
        vad: speech detection (silence is never sent to Whisper).
        clips: how speech is cut into clips; ``max_seconds`` at most 30 (Whisper's window).
        transcription: backend, model, decoding and hallucination thresholds
            (``audio_ops.transcription.TranscriptionConfig``).
        chunk_seconds: audio scanned per step (bounds memory on long files).
        resources: scheduling overrides of the ``segment`` and ``transcribe`` stages (the
            ``transcribe`` stage's ``num_cpus`` is also each actor's thread count unless
            ``transcription.cpu_threads`` is set).
        extensions: audio extensions a directory listing picks up.
    """

    vad: VadConfig = field(default_factory=VadConfig)
    clips: ClipConfig = field(default_factory=_default_clips)
    transcription: TranscriptionConfig = field(default_factory=TranscriptionConfig)
    chunk_seconds: float = 60.0
    resources: dict[str, StageResources] = field(default_factory=dict)
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.clips.max_seconds > WINDOW_SECONDS:
            raise ConfigError(
                f"clips.max_seconds must be <= {WINDOW_SECONDS:g} (Whisper's window), "
                f"not {self.clips.max_seconds:g}"
            )
        if not self.chunk_seconds >= 5.0:
            raise ConfigError("chunk_seconds must be >= 5")


class SpeechClipsOperator(SpeechScanOperator):
    """Segment stage: each file row fans out into the file's row (``parts`` = its clip count) and
    one ``kind == "part"`` row per clip (``start``, ``end``, ``speech_seconds`` inside it)."""

    max_actors = 1  # Silero runs at hundreds of times real time: one actor feeds Whisper

    def rows(self, file: dict[str, Any], scan: Any) -> list[dict[str, Any]]:
        (summary,) = super().rows(file, scan)
        rows = [{**summary, "parts": len(scan.clips), "regions": b""}]
        for clip in scan.clips:
            speech = speech_seconds(clip.speech)
            rows.append(
                {
                    **file,
                    "kind": "part",
                    "start": clip.start,
                    "end": clip.end,
                    "duration": clip.duration,
                    "speech_seconds": speech,
                }
            )
        return rows


#: Columns of the rows the transcribe stage returns.
CLIP_COLUMNS: dict[str, Any] = {
    **{k: v for k, v in SCAN_COLUMNS.items() if k != "regions"},
    "text": "",
    "language": "",
    "language_prob": float("nan"),
    "avg_logprob": float("nan"),
    "no_speech_prob": float("nan"),
    "compression_ratio": float("nan"),
    "chars_per_second": float("nan"),
    "ngram_repeats": 0,
    "halluc_repetition": False,
    "halluc_cps": False,
    "halluc_silence": False,
    "hallucination": False,
    "segments": "[]",
}


class TranscribeClipsOperator:
    """Transcribe stage: decodes each clip row's window (16 kHz mono) and runs Whisper on the
    batch's clips together; file rows pass through. No audio leaves the stage.

    Args:
        config: the transcription config.
        threads: CPU threads of this actor (when ``config.cpu_threads`` is 0).
    """

    uses_model = True
    num_cpus = 1.0
    batch_size = 8
    max_actors = 2
    inputs = ("path", "kind", "start", "end", "speech_seconds")
    outputs = tuple(CLIP_COLUMNS)

    def __init__(self, config: TranscriptionConfig, threads: int = 1, vad: VadConfig | None = None):
        from audio_ops.transcription import TranscribeOperator

        self.whisper = TranscribeOperator(config, threads=config.cpu_threads or threads, vad=vad)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from audio_ops.io import ANALYSIS_RATE, load_audio

        rows = batch_rows(batch)
        clips = [r for r in rows if r["kind"] == "part"]
        if clips:
            audio = [
                load_audio(str(r["path"]), ANALYSIS_RATE, start=r["start"], end=r["end"])[
                    0
                ].tobytes()
                for r in clips
            ]
            result = self.whisper(
                {
                    "audio": np.array(audio, dtype=object),
                    "speech_seconds": np.array([r["speech_seconds"] for r in clips]),
                }
            )
            for i, row in enumerate(clips):
                row.update({k: result[k][i] for k in CLIP_COLUMNS if k in result})
        return rows_to_batch(rows, CLIP_COLUMNS)


TRANSCRIPTS_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("path", pa.string()),
        ("file_id", pa.string()),
        ("rel_path", pa.string()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("duration", pa.float64()),
        ("speech_seconds", pa.float64()),
        ("text", pa.string()),
        ("language", pa.string()),
        ("language_prob", pa.float64()),
        ("avg_logprob", pa.float64()),
        ("no_speech_prob", pa.float64()),
        ("compression_ratio", pa.float64()),
        ("chars_per_second", pa.float64()),
        ("ngram_repeats", pa.int64()),
        ("halluc_repetition", pa.bool_()),
        ("halluc_cps", pa.bool_()),
        ("halluc_silence", pa.bool_()),
        ("hallucination", pa.bool_()),
        ("segments", pa.string()),
        # word timings in file time (--words / word_timestamps, or an aligner; else empty)
        ("words", word_type()),
    ]
)


class TranscribeJob(FileJob):
    """``voxflow transcribe`` on the per-file job skeleton: files fan out into clips."""

    name = "transcribe"
    config_class = TranscribeRunConfig
    files_schema = make_files_schema(
        ("duration", pa.float64()),
        ("speech_seconds", pa.float64()),
        ("loudness_lufs", pa.float64()),
        ("clips", pa.int64()),
        ("transcribed_seconds", pa.float64()),
        ("words", pa.int64()),
        ("hallucinated_clips", pa.int64()),
    )
    tables = {"transcripts": TRANSCRIPTS_SCHEMA}

    def preflight(self) -> None:
        from audio_ops.alignment import check_aligner

        check_aligner(self.config.transcription.aligner)

    def stages(self) -> list[Stage]:
        config = self.config
        scan = {
            "vad": config.vad,
            "clips": config.clips,
            "chunk_seconds": config.chunk_seconds,
            "stage": "segment",
        }
        whisper = {
            "config": config.transcription,
            "threads": self.threads_for(TranscribeClipsOperator, "transcribe"),
            "vad": config.vad,
        }
        return [
            Stage("segment", SpeechClipsOperator, scan),
            Stage("transcribe", TranscribeClipsOperator, whisper),
        ]

    def part(self, row: dict[str, Any], file: FileState) -> None:
        if row.get("status") != "ok":
            return
        from audio_ops.clips import clip_id

        text = row.get("text") if isinstance(row.get("text"), str) else ""
        words = segment_words(row.get("segments"), offset=float(row["start"]))
        file.add(
            "transcripts",
            [
                {
                    **row,
                    "text": text,
                    "clip_id": clip_id(row["file_id"], float(row["start"])),
                    "words": words,
                }
            ],
        )
        file.totals["transcribed_seconds"] += float(row.get("duration") or 0.0)
        file.totals["words"] += len(text.split())
        file.totals["hallucinated_clips"] += int(bool(row.get("hallucination")))

    def file_record(self, row: dict[str, Any], file: FileState) -> dict[str, Any]:
        return {
            **file.listing,
            **row,
            "clips": file.expected,
            "transcribed_seconds": float(file.totals["transcribed_seconds"]),
            "words": int(file.totals["words"]),
            "hallucinated_clips": int(file.totals["hallucinated_clips"]),
        }

    def counts(self) -> dict[str, Any]:
        return {"clips": self.sinks["transcripts"].rows_written}


#: ``voxflow transcribe``: see :meth:`pipelines.engine.filejob.FileJob.launch`.
run_transcribe = TranscribeJob.launch
