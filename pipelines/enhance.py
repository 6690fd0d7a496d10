"""``voxflow enhance``: denoise whole files, written as FLAC under ``OUT/audio/`` mirroring each
input's path below its input root.

Each file is streamed in blocks (bounded memory whatever its length). ``method: auto`` estimates
the SNR of the file's first block and picks DeepFilterNet3, spectral gating or nothing (see
``audio_ops.enhancement.Enhancer.choose``); DFN3 runs as one stream over the whole file (its
recurrent state carries across blocks), spectral gating per block. The decision is a column of
``files/``.

Output names come from input names, so they are sanitised: ``..`` and ``.`` components, leading
slashes and drive-like prefixes are dropped, and the result must stay inside ``OUT/audio``.
"""

from __future__ import annotations

import itertools
import os
import posixpath
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.config import StageResources
from pipelines.probe import ERRORS_SCHEMA, JobSummary, error_record
from pipelines.runtime import ErrorPolicy, Progress, RaySession
from pipelines.sinks import TableSink, is_local, join, normalize_uri, utc_now, write_run_json
from pipelines.sources import list_corpus
from pipelines.stages import apply_operator, resources_for

BLOCK_SECONDS = 60.0


class UnsafePathError(ValueError):
    """An input name that cannot be turned into a path inside the output folder."""


def safe_relative_path(rel_path: str, suffix: str = ".flac") -> str:
    """A relative output path for an input's ``rel_path``: POSIX separators, no ``..``/``.``
    parts, no leading slash, the extension replaced by ``suffix``.

    Raises:
        UnsafePathError: nothing usable is left (``..``, ``/``, an empty name).
    """
    parts = [p for p in str(rel_path).replace("\\", "/").split("/") if p not in ("", ".", "..")]
    parts = [p.replace(":", "_") for p in parts]
    if not parts:
        raise UnsafePathError(f"input name {rel_path!r} gives no usable output name")
    stem, _ = posixpath.splitext(parts[-1])
    if not stem.strip(". "):
        raise UnsafePathError(f"input name {rel_path!r} gives no usable output name")
    parts[-1] = stem + suffix
    return "/".join(parts)


def output_location(out: str, rel_path: str) -> str:
    """Where an input's enhanced audio goes; always inside ``out/audio``."""
    relative = safe_relative_path(rel_path)
    root = join(out, "audio")
    target = join(root, *relative.split("/"))
    if is_local(out):
        root_abs, target_abs = (
            os.path.abspath(normalize_uri(root)),
            os.path.abspath(normalize_uri(target)),
        )
        if os.path.commonpath([root_abs, target_abs]) != root_abs:
            raise UnsafePathError(f"input name {rel_path!r} would write outside {root_abs}")
    return target


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


class EnhanceFilesOperator:
    """Enhance whole files, streaming, and write each as FLAC (16-bit, the input's rate, mono).

    Args:
        config: the enhancement options.
        out: the run's output folder.
    """

    uses_model = True
    num_cpus = 1.0
    batch_size = 1
    max_actors = 2

    def __init__(self, config: Any, out: str):
        from audio_ops.enhancement import Enhancer

        self.enhancer = Enhancer(config)
        self.out = out

    def _one(self, path: str, rel_path: str) -> dict[str, Any]:
        import soundfile as sf

        from audio_ops.enhancement import DFN3Stream, estimate_snr_db, spectral_gate
        from audio_ops.io import AudioReader, check_finite, to_mono

        target = output_location(self.out, rel_path)
        config = self.enhancer.config
        with AudioReader(path) as reader:
            rate = reader.info.sample_rate
            blocks = reader.blocks(int(BLOCK_SECONDS * rate))
            first = next(blocks, None)
            if first is None:
                raise ValueError("no audio decoded")
            snr = estimate_snr_db(to_mono(first), rate, config.gate_noise_quantile)
            method = self.enhancer.choose(snr)
            stream = (
                DFN3Stream(rate, config.atten_lim_db, config.dfn3_model, config.dfn3_sha256)
                if method == "dfn3"
                else None
            )
            fd, tmp = tempfile.mkstemp(suffix=".flac")
            os.close(fd)
            frames = 0
            try:
                with sf.SoundFile(tmp, "w", rate, 1, format="FLAC", subtype="PCM_16") as sink:
                    for block in itertools.chain([first], blocks):
                        check_finite(block, path)
                        mono = to_mono(block).astype(np.float32)
                        if method == "dfn3":
                            result = stream.process(mono)
                        elif method == "spectral_gating":
                            result = spectral_gate(
                                mono,
                                rate,
                                max_atten_db=config.gate_atten_db,
                                noise_quantile=config.gate_noise_quantile,
                            )
                        elif method == "torch":
                            result, _ = self.enhancer.enhance(mono, rate)
                        else:
                            result = mono
                        sink.write(np.clip(result, -1.0, 1.0))
                        frames += len(mono)
                    if stream is not None:
                        sink.write(np.clip(stream.flush(), -1.0, 1.0))
                _publish(tmp, target)
            finally:
                if stream is not None:
                    stream.close()
                if os.path.exists(tmp):
                    os.remove(tmp)
        return {
            "output": target,
            "enhancement": method,
            "snr_before_db": float(snr),
            "duration": frames / rate,
            "sample_rate": rate,
        }

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [
            self._one(str(p), str(r)) for p, r in zip(batch["path"], batch["rel_path"], strict=True)
        ]
        out = dict(batch)
        for key in ("output", "enhancement"):
            out[key] = np.array([r[key] for r in rows], dtype=object)
        for key in ("snr_before_db", "duration"):
            out[key] = np.array([r[key] for r in rows], dtype=np.float64)
        out["sample_rate"] = np.array([r["sample_rate"] for r in rows], dtype=np.int64)
        return out


def _publish(tmp: str, target: str) -> None:
    """Move a finished file into place: a rename locally, one upload elsewhere."""
    if is_local(target):
        path = normalize_uri(target)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        staging = f"{path}.tmp-{os.getpid()}"
        shutil.move(tmp, staging)  # across filesystems too; the final rename is atomic
        os.replace(staging, path)
        return
    import fsspec

    fs, path = fsspec.core.url_to_fs(target)
    fs.put_file(tmp, path)


FILES_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("file_id", pa.string()),
        ("rel_path", pa.string()),
        ("output", pa.string()),
        ("enhancement", pa.string()),
        ("snr_before_db", pa.float64()),
        ("duration", pa.float64()),
        ("sample_rate", pa.int64()),
        ("status", pa.string()),
        ("error_kind", pa.string()),
        ("error", pa.string()),
        ("error_stage", pa.string()),
    ]
)


def run_enhance(
    inputs: list[str],
    out: str,
    config: EnhanceRunConfig | None = None,
    *,
    address: str | None = None,
    quiet: bool = False,
    num_cpus: int | None = None,
    policy: ErrorPolicy | None = None,
) -> JobSummary:
    """Enhance every input file into ``out/audio/``.

    Args:
        inputs: directories, globs, files or manifests.
        out: output folder, local or URL.
        config: the run's configuration.
        address: Ray address; None starts (and stops) a local Ray.
        quiet: no progress line.
        num_cpus: CPUs of a local Ray started for this job.
        policy: when failures abort the job.
    """
    from audio_ops.enhancement import EnhancementConfig
    from pipelines.config import from_dict

    config = config or EnhanceRunConfig()
    options = from_dict(EnhancementConfig, config.enhancement, "enhancement")
    policy = policy or ErrorPolicy()
    started_at, t0 = utc_now(), time.perf_counter()
    listing = list_corpus(inputs, config.extensions or None)
    summary = JobSummary(job="enhance", out=out, inputs=len(listing))
    files = TableSink(join(out, "files"), FILES_SCHEMA)
    errors = TableSink(join(out, "errors"), ERRORS_SCHEMA)
    progress = Progress("enhance", len(listing), quiet=quiet)
    kinds: dict[str, int] = {}
    if listing:
        with RaySession(address=address, num_cpus=num_cpus, quiet=quiet):
            import ray.data

            ds = ray.data.from_items(
                [{k: r[k] for k in ("path", "file_id", "rel_path")} for r in listing],
                override_num_blocks=min(len(listing), 1000),
            )
            ds = apply_operator(
                ds,
                EnhanceFilesOperator,
                stage="enhance",
                kwargs={"config": options, "out": out},
                resources=resources_for(EnhanceFilesOperator, config.resources, "enhance"),
            )
            for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
                for row in batch.to_dict(orient="records"):
                    failed = row.get("status") != "ok"
                    if failed:
                        row["error_kind"] = row.get("error_kind") or "error"
                        errors.add([error_record(row)])
                        kinds[row["error_kind"]] = kinds.get(row["error_kind"], 0) + 1
                        summary.errors += 1
                    else:
                        summary.ok += 1
                        summary.audio_seconds += float(row.get("duration") or 0.0)
                    files.add([row])
                    progress.update(
                        1, 0.0 if failed else float(row.get("duration") or 0.0), int(failed)
                    )
                    policy.record(failed, f"{row.get('path')}: {row.get('error')}")
    files.close()
    errors.close()
    progress.close()
    summary.errors_by_kind = kinds
    summary.wall_seconds = time.perf_counter() - t0
    write_run_json(out, summary.run_record(inputs, config, started_at))
    return summary
