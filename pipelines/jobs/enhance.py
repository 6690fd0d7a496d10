"""``voxflow enhance``: denoise whole files, written as FLAC under ``OUT/audio/`` mirroring each
input's path below its input root.

Each file is streamed in blocks (bounded memory whatever its length) through
``audio_ops.enhancement.Enhancer.stream``, the same enhancer ``voxflow clean`` applies per clip:
``method: auto`` estimates the SNR of the file's first block and picks DeepFilterNet3, spectral
gating or nothing (see ``Enhancer.choose``); DFN3 runs as one stream over the whole file (its
recurrent state carries across blocks), spectral gating per block. The decision is a column of
``files/``.

Output names come from input names, so they are sanitised: ``..`` and ``.`` components, leading
slashes and drive-like prefixes are dropped, and the result must stay inside ``OUT/audio``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.engine.config import StageResources
from pipelines.engine.filejob import (
    FileJob,
    Stage,
    UnsafePathError,
    WholeFileOperator,
    arrow_fields,
    flac_output,
    make_files_schema,
    output_location,
    safe_relative_path,
)

__all__ = ["UnsafePathError", "output_location", "safe_relative_path", "run_enhance"]

BLOCK_SECONDS = 60.0


@dataclass(frozen=True)
class EnhanceRunConfig:
    """Everything ``voxflow enhance`` runs with.

    Args:
        enhancement: options of ``audio_ops.enhancement.EnhancementConfig``.
        resources: scheduling override of the ``enhance`` stage.
        extensions: audio extensions a directory listing picks up.
    """

    enhancement: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, StageResources] = field(default_factory=dict)
    extensions: tuple[str, ...] = ()


class EnhanceFilesOperator(WholeFileOperator):
    """Enhance whole files, streaming, and write each as FLAC (16-bit, the input's rate, mono).

    Args:
        config: the enhancement options.
        out: the run's output folder.
    """

    num_cpus = 1.0
    max_actors = 2
    columns = {
        "output": "",
        "enhancement": "",
        "enhancement_atten_db": float("nan"),
        "snr_before_db": float("nan"),
        "duration": 0.0,
        "sample_rate": 0,
    }

    def __init__(self, config: Any, out: str):
        from audio_ops.enhancement import Enhancer

        self.enhancer = Enhancer(config)
        self.out = out

    def process(self, path: str, rel_path: str) -> dict[str, Any]:
        from audio_ops.io import AudioReader

        target = output_location(self.out, rel_path)
        with AudioReader(path) as reader:
            rate = reader.info.sample_rate
            blocks = _mono_blocks(reader.blocks(int(BLOCK_SECONDS * rate)), path)
            first = next(blocks, None)
            if first is None:
                raise ValueError("no audio decoded")
            stream = self.enhancer.stream(itertools.chain([first], blocks), rate)
            frames = 0
            with flac_output(target, rate) as sink:
                for enhanced in stream:
                    sink.write(np.clip(enhanced, -1.0, 1.0))
                    frames += len(enhanced)
        return {
            "output": target,
            "enhancement": stream.method,
            "enhancement_atten_db": float(stream.atten_lim_db),
            "snr_before_db": float(stream.snr_before_db),
            "duration": frames / rate,
            "sample_rate": rate,
        }


def _mono_blocks(blocks: Iterator[np.ndarray], path: str) -> Iterator[np.ndarray]:
    """Decoded blocks as mono float32; NaN or infinity fails the file, naming it."""
    from audio_ops.io import check_finite, to_mono

    for block in blocks:
        check_finite(block, path)
        yield to_mono(block).astype(np.float32)


FILES_SCHEMA = make_files_schema(*arrow_fields(EnhanceFilesOperator.columns))


class EnhanceJob(FileJob):
    """``voxflow enhance`` on the per-file job skeleton: one stage, one FLAC per input."""

    name = "enhance"
    output_folders = ("audio",)
    config_class = EnhanceRunConfig
    files_schema = FILES_SCHEMA

    def preflight(self) -> None:
        from audio_ops.enhancement import EnhancementConfig
        from pipelines.engine.config import from_dict

        self.options = from_dict(EnhancementConfig, self.config.enhancement, "enhancement")

    def identity(self) -> Any:
        from audio_ops.enhancement import EnhancementConfig
        from pipelines.engine.config import hashed_options

        return hashed_options(self.config, "enhancement", EnhancementConfig)

    def stages(self) -> list[Stage]:
        return [Stage("enhance", EnhanceFilesOperator, {"config": self.options, "out": self.out})]


#: ``voxflow enhance``: see :meth:`pipelines.engine.filejob.FileJob.launch`.
run_enhance = EnhanceJob.launch
