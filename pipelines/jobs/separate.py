"""``voxflow separate``: vocals against accompaniment of whole files, with Hybrid Demucs, written as
FLAC under ``OUT/audio/`` mirroring each input's path below its input root:
``OUT/audio/<rel dir>/<stem>.vocals.flac`` (and ``<stem>.accompaniment.flac`` with
``accompaniment: true``).

Each file is streamed: blocks in, chunked overlap-add through the model
(:meth:`audio_ops.separation.Separator.separate_stream`), blocks out, so memory is bounded by one
model chunk whatever the file's length. Outputs keep the input's rate and length; stereo stays
stereo, any other channel count is downmixed to mono.

The default model (``torchaudio:HDEMUCS_HIGH_MUSDB_PLUS``) is fetched from download.pytorch.org
unless torchaudio's cache holds it; a model that cannot be had (offline, say) stops the job on the
driver before Ray starts, with the path to put the file at. A local checkpoint (``model: PATH``,
pinned by ``sha256``) needs nothing from the network.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audio_ops.separation import SeparationConfig
from pipelines.engine.config import StageResources
from pipelines.engine.filejob import (
    FileJob,
    Stage,
    WholeFileOperator,
    arrow_fields,
    flac_output,
    make_files_schema,
    output_location,
)

#: Seconds of input decoded per step.
BLOCK_SECONDS = 30.0


@dataclass(frozen=True)
class SeparateRunConfig:
    """Everything ``voxflow separate`` runs with.

    Args:
        separation: the model and its chunking (``audio_ops.separation.SeparationConfig``).
        accompaniment: also write ``<stem>.accompaniment.flac`` (everything but the vocals).
        resources: scheduling override of the ``separate`` stage (``num_gpus`` on GPU nodes;
            its ``num_cpus`` is also the torch thread count of each actor).
        extensions: audio extensions a directory listing picks up.
    """

    separation: SeparationConfig = field(default_factory=SeparationConfig)
    accompaniment: bool = False
    resources: dict[str, StageResources] = field(default_factory=dict)
    extensions: tuple[str, ...] = ()


def check_weights(config: SeparationConfig) -> None:
    """Find the model's weights on this machine (fetching a URL once into the cache), checking
    the pin, without loading them.

    Raises:
        audio_ops.models.ModelError: the weights cannot be had; the message says where to put them.
    """
    from audio_ops.models import ModelRef, resolve
    from audio_ops.separation import BUNDLES, resolve_torchaudio_asset

    if config.model.startswith("torchaudio:"):
        resolve_torchaudio_asset(BUNDLES[config.model.split(":", 1)[1]].asset, config.sha256)
    else:
        resolve(ModelRef(config.model, sha256=config.sha256))


class SeparateFilesOperator(WholeFileOperator):
    """Separate whole files, streaming, into vocals (and accompaniment) FLAC files (16-bit, the
    input's rate and length; stereo kept, other channel counts downmixed).

    Args:
        config: the model and chunking.
        out: the run's output folder.
        accompaniment: also write the accompaniment.
        threads: torch CPU threads of this actor.
    """

    num_cpus = 1.0
    max_actors = 1
    columns = {
        "vocals": "",
        "accompaniment": "",
        "separation": "",
        "accompaniment_db": float("nan"),
        "duration": 0.0,
        "sample_rate": 0,
        "channels": 0,
    }

    def __init__(
        self, config: SeparationConfig, out: str, accompaniment: bool = False, threads: int = 1
    ):
        from audio_ops.separation import Separator

        self.separator = Separator(config, threads=threads)
        self.out, self.accompaniment = out, accompaniment

    def process(self, path: str, rel_path: str) -> dict[str, Any]:
        from audio_ops.errors import EmptyAudioError
        from audio_ops.io import AudioReader, check_finite, to_mono

        stems = ("vocals", "accompaniment") if self.accompaniment else ("vocals",)
        targets = {s: output_location(self.out, rel_path, f".{s}.flac") for s in stems}
        read = {"frames": 0, "energy": 0.0}
        with AudioReader(path) as reader:
            rate = reader.info.sample_rate
            channels = 2 if reader.info.channels == 2 else 1

            def blocks():
                for block in reader.blocks(int(BLOCK_SECONDS * rate)):
                    check_finite(block, path)
                    samples = block if channels == 2 else to_mono(block)
                    read["frames"] += samples.shape[0]
                    read["energy"] += float(np.sum(np.square(samples, dtype=np.float64)))
                    yield samples

            written, removed = 0, 0.0
            with contextlib.ExitStack() as stack:
                sinks = {
                    s: stack.enter_context(flac_output(t, rate, channels))
                    for s, t in targets.items()
                }
                for part in self.separator.separate_stream(blocks(), rate):
                    # The output lags the input: crop the resamplers' rounding so the outputs
                    # are exactly as long as the input.
                    keep = max(0, min(part["vocals"].shape[0], read["frames"] - written))
                    for stem, sink in sinks.items():
                        sink.write(np.clip(part[stem][:keep], -1.0, 1.0))
                    removed += float(
                        np.sum(np.square(part["accompaniment"][:keep], dtype=np.float64))
                    )
                    written += keep
                if read["frames"] == 0:
                    raise EmptyAudioError(f"no samples decoded from {path}")
                if written < read["frames"]:
                    tail = np.zeros((read["frames"] - written, channels), np.float32)
                    for sink in sinks.values():
                        sink.write(tail if channels == 2 else tail[:, 0])
        return {
            "vocals": targets["vocals"],
            "accompaniment": targets.get("accompaniment", ""),
            "separation": self.separator.name,
            "accompaniment_db": (
                10.0 * np.log10(removed / read["energy"])
                if removed > 0 and read["energy"] > 0
                else float("nan")
            ),
            "duration": read["frames"] / rate,
            "sample_rate": rate,
            "channels": channels,
        }


class SeparateJob(FileJob):
    """``voxflow separate`` on the per-file job skeleton."""

    name = "separate"
    output_folders = ("audio",)
    config_class = SeparateRunConfig
    files_schema = make_files_schema(*arrow_fields(SeparateFilesOperator.columns))

    def preflight(self) -> None:
        check_weights(self.config.separation)

    def stages(self) -> list[Stage]:
        kwargs = {
            "config": self.config.separation,
            "out": self.out,
            "accompaniment": self.config.accompaniment,
            "threads": self.threads_for(SeparateFilesOperator, "separate"),
        }
        return [Stage("separate", SeparateFilesOperator, kwargs)]


#: ``voxflow separate``: see :meth:`pipelines.engine.filejob.FileJob.launch`.
run_separate = SeparateJob.launch
