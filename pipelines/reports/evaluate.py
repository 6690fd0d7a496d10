"""Diarization evaluation and RTTM export.

DER, JER, miss / false alarm / confusion come from pyannote.metrics (the ``eval`` extra). Collars
follow the NIST md-eval convention: ``collar 0.25`` forgives 0.25 s on *each* side of every
reference boundary, which is pyannote's ``collar=0.5`` (pyannote counts the collar's total width).

Global identity is scored across files: each reference speaker of each file is mapped to the
hypothesis speaker that the optimal (DER) mapping gives it, and through that to its global id.
``identity_coverage`` is the share of reference file-speakers whose global id is their voice's
most common one; ``merged_voices`` counts global ids given to more than one reference voice.
Cross-file pairs score the linking as a decision on every pair of reference file-speakers in two
different files: a pair is *linked* when both carry the same global id, and *true* when both are
the same reference person; ``pair_precision`` = linked true pairs / linked pairs, ``pair_recall``
= linked true pairs / true pairs (a file-speaker the diarization missed links nothing), and
``pair_f1`` their harmonic mean.
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
    """One RTTM ``SPEAKER`` line. RTTM fields are separated by white space, so any in the file
    id (``name with spaces.wav``) becomes ``_``."""
    file = "_".join(file.split())
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
    pair_precision: float | None = None
    pair_recall: float | None = None
    pair_f1: float | None = None
    true_pairs: int | None = None

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
        if self.true_pairs:
            lines.append(
                f"cross-file pairs: precision {_pct(self.pair_precision)}, recall "
                f"{_pct(self.pair_recall)}, F1 {_pct(self.pair_f1)} over {self.true_pairs} "
                "same-person pairs"
            )
        lines.append(
            "DER uses a 0.25 s collar on each side of reference boundaries (md-eval); DER0 none."
        )
        return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def pair_scores(
    file_speakers: list[tuple[str, str, str | None]],
) -> tuple[float | None, float | None, float | None, int]:
    """Cross-file pair precision, recall and F1 of global ids (see the module docstring).

    Args:
        file_speakers: ``(file, reference speaker, global id or None)`` per reference
            file-speaker.

    Returns:
        ``(precision, recall, f1, true pairs)``; None where undefined.
    """
    linked = true = both = 0
    for i, (file_a, ref_a, gid_a) in enumerate(file_speakers):
        for file_b, ref_b, gid_b in file_speakers[i + 1 :]:
            if file_a == file_b:
                continue
            same = ref_a == ref_b
            link = gid_a is not None and gid_a == gid_b
            true += same
            linked += link
            both += same and link
    precision = both / linked if linked else None
    recall = both / true if true else None
    if not true:
        f1 = None
    elif not both:
        f1 = 0.0
    else:
        f1 = 2 * both / (linked + true)  # the harmonic mean of both / linked and both / true
    return precision, recall, f1, true


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

    import warnings

    # Without a UEM pyannote.metrics scores the union of both extents, and says so per file.
    warnings.filterwarnings("ignore", message="'uem' was approximated", category=UserWarning)
    der_metric = DiarizationErrorRate(collar=0.5, skip_overlap=False)
    der0_metric = DiarizationErrorRate(collar=0.0, skip_overlap=False)
    jer_metric = JaccardErrorRate(collar=0.0, skip_overlap=False)
    files = []
    exact = 0
    voice_globals: dict[str, list[str]] = defaultdict(list)
    file_speakers: list[tuple[str, str, str | None]] = []
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
            for ref_label in ref.labels():
                hyp_label = files[-1].mapping.get(str(ref_label))
                gid = global_ids.get(stem, {}).get(hyp_label) if hyp_label is not None else None
                file_speakers.append((stem, str(ref_label), gid))
    totals = Counter()
    for s in files:
        totals.update(total=s.total, miss=s.miss, fa=s.false_alarm, conf=s.confusion)
    total = max(totals["total"], 1e-9)
    coverage = merged = n_global = None
    pair_p = pair_r = pair_f = true_pairs = None
    if global_ids is not None:
        pair_p, pair_r, pair_f, true_pairs = pair_scores(file_speakers)
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
        pair_precision=pair_p,
        pair_recall=pair_r,
        pair_f1=pair_f,
        true_pairs=true_pairs,
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
