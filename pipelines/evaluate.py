"""Diarization evaluation and RTTM export.

DER, JER, miss / false alarm / confusion come from pyannote.metrics (the ``eval`` extra). Collars
follow the NIST md-eval convention: ``collar 0.25`` forgives 0.25 s on *each* side of every
reference boundary, which is pyannote's ``collar=0.5`` (pyannote counts the collar's total width).

Global identity is scored across files: each reference speaker of each file is mapped to the
hypothesis speaker that the optimal (DER) mapping gives it, and through that to its global id.
``identity_coverage`` is the share of reference file-speakers whose global id is their voice's
most common one; ``merged_voices`` counts global ids given to more than one reference voice.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RttmTurn:
    """One RTTM ``SPEAKER`` line."""

    file: str
    start: float
    duration: float
    speaker: str


def read_rttm(path: str | os.PathLike[str]) -> list[RttmTurn]:
    """Parse the ``SPEAKER`` lines of an RTTM file (other line types are ignored)."""
    turns = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            parts = line.split()
            if not parts or parts[0] != "SPEAKER":
                continue
            if len(parts) < 8:
                raise ValueError(f"{path}:{number}: an RTTM SPEAKER line needs at least 8 fields")
            turns.append(RttmTurn(parts[1], float(parts[3]), float(parts[4]), parts[7]))
    return turns


def rttm_line(file: str, start: float, duration: float, speaker: str) -> str:
    """One RTTM ``SPEAKER`` line."""
    return f"SPEAKER {file} 1 {start:.3f} {duration:.3f} <NA> <NA> {speaker} <NA> <NA>\n"


def _annotation(turns: list[RttmTurn], uri: str):
    from pyannote.core import Annotation, Segment

    ann = Annotation(uri=uri)
    for i, t in enumerate(turns):
        ann[Segment(t.start, t.start + t.duration), i] = t.speaker
    return ann


@dataclass
class FileScore:
    """Scores of one file."""

    file: str
    der: float
    der_collar0: float
    jer: float
    miss: float
    false_alarm: float
    confusion: float
    total: float
    ref_speakers: int
    hyp_speakers: int
    mapping: dict[str, str] = field(default_factory=dict)


@dataclass
class Report:
    """Scores of a corpus."""

    files: list[FileScore]
    der: float
    der_collar0: float
    jer: float
    miss: float
    false_alarm: float
    confusion: float
    count_exact: float
    identity_coverage: float | None
    merged_voices: int | None
    global_speakers: int | None

    def text(self) -> str:
        """A table a person reads."""
        lines = [
            f"{'file':<32} {'DER%':>6} {'DER0%':>6} {'JER%':>6} {'miss%':>6} {'FA%':>6} {'conf%':>6} {'ref':>4} {'hyp':>4}"
        ]
        for s in self.files:
            t = max(s.total, 1e-9)
            lines.append(
                f"{s.file[:32]:<32} {100 * s.der:6.2f} {100 * s.der_collar0:6.2f} {100 * s.jer:6.2f} "
                f"{100 * s.miss / t:6.2f} {100 * s.false_alarm / t:6.2f} {100 * s.confusion / t:6.2f} "
                f"{s.ref_speakers:4d} {s.hyp_speakers:4d}"
            )
        lines.append(
            f"{'OVERALL':<32} {100 * self.der:6.2f} {100 * self.der_collar0:6.2f} {100 * self.jer:6.2f} "
            f"{100 * self.miss:6.2f} {100 * self.false_alarm:6.2f} {100 * self.confusion:6.2f}"
        )
        lines.append(f"speaker count exact on {100 * self.count_exact:.1f}% of files")
        if self.identity_coverage is not None:
            lines.append(
                f"global identity: {100 * self.identity_coverage:.1f}% of file-speakers carry their voice's id; "
                f"{self.merged_voices} global ids merge distinct voices; {self.global_speakers} global speakers"
            )
        lines.append(
            "DER uses a 0.25 s collar on each side of reference boundaries (md-eval); DER0 none."
        )
        return "\n".join(lines)


def evaluate(
    reference: dict[str, list[RttmTurn]],
    hypothesis: dict[str, list[RttmTurn]],
    global_ids: dict[str, dict[str, str]] | None = None,
) -> Report:
    """Score hypothesis turns against reference turns, file by file.

    Args:
        reference: file stem -> reference turns.
        hypothesis: file stem -> hypothesis turns (files missing here count as all missed).
        global_ids: file stem -> {local hypothesis speaker: global id}, to score identity.
    """
    try:
        from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate
    except ImportError as exc:
        raise ImportError("evaluation needs pyannote.metrics: pip install 'voxflow[eval]'") from exc

    der_metric = DiarizationErrorRate(collar=0.5, skip_overlap=False)
    der0_metric = DiarizationErrorRate(collar=0.0, skip_overlap=False)
    jer_metric = JaccardErrorRate(collar=0.0, skip_overlap=False)
    files = []
    exact = 0
    voice_globals: dict[str, list[str]] = defaultdict(list)
    for stem in sorted(reference):
        ref = _annotation(reference[stem], stem)
        hyp = _annotation(hypothesis.get(stem, []), stem)
        detail = der_metric(ref, hyp, detailed=True)
        der0 = der0_metric(ref, hyp)
        jer = jer_metric(ref, hyp)
        mapping = der_metric.optimal_mapping(ref, hyp)  # hyp label -> ref label
        n_ref, n_hyp = len(ref.labels()), len(hyp.labels())
        exact += int(n_ref == n_hyp)
        files.append(
            FileScore(
                stem,
                detail["diarization error rate"],
                der0,
                jer,
                detail["missed detection"],
                detail["false alarm"],
                detail["confusion"],
                detail["total"],
                n_ref,
                n_hyp,
                {str(r): str(h) for h, r in mapping.items()},
            )
        )
        if global_ids is not None:
            for ref_label, hyp_label in files[-1].mapping.items():
                gid = global_ids.get(stem, {}).get(hyp_label)
                if gid is not None:
                    voice_globals[ref_label].append(gid)
    totals = Counter()
    for s in files:
        totals.update(total=s.total, miss=s.miss, fa=s.false_alarm, conf=s.confusion)
    total = max(totals["total"], 1e-9)
    coverage = merged = n_global = None
    if global_ids is not None:
        file_speakers = sum(len(v) for v in voice_globals.values())
        majority = sum(Counter(v).most_common(1)[0][1] for v in voice_globals.values() if v)
        coverage = majority / file_speakers if file_speakers else 0.0
        owners: dict[str, set[str]] = defaultdict(set)
        for voice, gids in voice_globals.items():
            for gid in gids:
                owners[gid].add(voice)
        merged = sum(1 for voices in owners.values() if len(voices) > 1)
        n_global = len({g for ids in global_ids.values() for g in ids.values()})
    return Report(
        files=files,
        der=abs(der_metric),
        der_collar0=abs(der0_metric),
        jer=abs(jer_metric),
        miss=totals["miss"] / total,
        false_alarm=totals["fa"] / total,
        confusion=totals["conf"] / total,
        count_exact=exact / max(len(files), 1),
        identity_coverage=coverage,
        merged_voices=merged,
        global_speakers=n_global,
    )


def read_rttm_dir(directory: str | os.PathLike[str]) -> dict[str, list[RttmTurn]]:
    """All ``*.rttm`` of a folder, by file id (the RTTM's second field)."""
    out: dict[str, list[RttmTurn]] = defaultdict(list)
    paths = sorted(Path(directory).glob("*.rttm"))
    if not paths:
        raise FileNotFoundError(f"no .rttm files in {directory}")
    for path in paths:
        for turn in read_rttm(path):
            out[turn.file].append(turn)
    return dict(out)


def report_dict(report: Report) -> dict[str, Any]:
    """The report as JSON-able data."""
    from dataclasses import asdict

    return asdict(report)
