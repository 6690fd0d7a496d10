"""``voxflow probe``: the corpus inventory job.

list -> Ray Dataset of paths -> ProbeOperator tasks (0.5 CPU each, streaming decode) -> driver:
one ``files/`` row per input (the listing's columns, manifest ones included, then the probe's),
``errors/``, ``_run.json``. Only paths flow into the cluster and one small row per file flows
back, so memory stays bounded by a block of audio per task whatever the corpus or file size. On
the one job lifecycle, so a run that is cut off resumes and ``--overwrite`` starts again.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from audio_ops.probe import ProbeOperator
from pipelines.engine.config import ProbeRunConfig
from pipelines.engine.filejob import FileJob, Stage
from pipelines.engine.summary import files_schema


class ProbeJob(FileJob):
    """``voxflow probe``: one probe stage, no tables besides ``files/`` and ``errors/``."""

    name = "probe"
    config_class = ProbeRunConfig

    def schemas(self, listing: list[dict[str, Any]]) -> dict[str, pa.Schema | None]:
        return {"files": files_schema(listing)}

    def stages(self) -> list[Stage]:
        return [Stage("probe", ProbeOperator, {"config": self.config.probe})]


#: ``voxflow probe``: see :meth:`pipelines.engine.lifecycle.Job.launch`.
run_probe = ProbeJob.launch
