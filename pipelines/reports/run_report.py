"""A run folder, seen: ``voxflow report`` (one self-contained HTML page) and ``voxflow inspect``
(the same sections as plain-text tables).

Both render one list of :class:`Section` built from ``_run.json`` and the run's tables, so the
page and the terminal never disagree. The page needs no network: CSS and the script are inline,
plots are PNGs in ``data:`` URIs, and a Content-Security-Policy forbids every other source. Every
string that comes from data (file names, error messages, config values) is HTML-escaped: input
names are hostile input.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import os
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from audio_ops.io import is_local, normalize_uri
from pipelines.engine.sinks import join, read_run_json, write_bytes_atomic

#: Files drawn on the speaker timeline; more would make an unreadable picture.
MAX_TIMELINE_FILES = 40
#: Speakers drawn in the hours-per-speaker chart and listed in its table.
MAX_SPEAKERS = 40
#: Rows of the per-file and error tables on the page (the terminal shows fewer).
MAX_ROWS = 200
#: Clip columns whose distributions a cleaning run shows, with their axis labels.
QUALITY_COLUMNS = {
    "snr_db": "SNR (dB, WADA)",
    "loudness_lufs": "loudness (LUFS)",
    "duration": "duration (s)",
    "vad_snr_db": "SNR (dB, VAD)",
    "speech_ratio": "speech ratio",
}
#: ``files/`` columns worth a column in the per-file table, where the job wrote them.
FILE_COLUMNS = (
    "status",
    "duration",
    "num_speakers",
    "num_segments",
    "speech_seconds",
    "codec",
    "sample_rate",
    "channels",
    "loudness_lufs",
    "enhancement",
    "error_kind",
)
#: Counts that a missing value turns into floats in Parquet: shown without decimals.
COUNT_COLUMNS = frozenset({"num_speakers", "num_segments", "sample_rate", "channels"})


@dataclass
class Table:
    """Rows of already formatted cells.

    Args:
        columns: column headings.
        rows: one list of cells per row (any value; rendered with ``str``).
        note: a line under the table (for example that it was capped).
    """

    columns: list[str]
    rows: list[list[Any]]
    note: str = ""


@dataclass
class Section:
    """One part of the report: a heading, notes, an optional plot, tables.

    Args:
        title: the heading (``Summary``, ``Speaker timeline``...).
        tables: what the terminal and the page both show.
        notes: sentences shown above the tables.
        plot: draws the section's figure as PNG bytes; called only for the page.
        plot_alt: the figure's alt text.
    """

    title: str
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plot: Callable[[], bytes] | None = None
    plot_alt: str = ""


@dataclass
class RunFolder:
    """A run's ``_run.json`` record and lazy access to its tables.

    Args:
        directory: the output folder (local path or URL).
        record: the parsed ``_run.json``.
    """

    directory: str
    record: dict[str, Any]
    _tables: dict[tuple, pd.DataFrame | None] = field(default_factory=dict, repr=False)

    @property
    def job(self) -> str:
        """The job that wrote the folder (``probe``, ``diarize``, ``clean``, ``enhance``...)."""
        return str(self.record.get("job") or "run")

    def table(
        self, name: str, columns: list[str] | None = None, file_ids: list[str] | None = None
    ) -> pd.DataFrame | None:
        """A table of the folder (a shard folder such as ``segments`` or a file such as
        ``clips.parquet``), or None when the job did not write it.

        Args:
            name: the table's folder or file name.
            columns: read only these (those the table has); None for all.
            file_ids: read only the rows of these files (a corpus's segments can be large).
        """
        key = (name, tuple(columns or ()), tuple(file_ids or ()))
        if key not in self._tables:
            self._tables[key] = self._read(name, columns, file_ids)
        return self._tables[key]

    def _read(
        self, name: str, columns: list[str] | None, file_ids: list[str] | None
    ) -> pd.DataFrame | None:
        import pyarrow.dataset as pads

        url = join(self.directory, name)
        if is_local(url):
            fs, path = None, normalize_uri(url)
            present = os.path.exists(path)
        else:
            import fsspec

            fs, path = fsspec.core.url_to_fs(url)
            present = fs.exists(path)
        if not present:
            return None
        dataset = pads.dataset(path, filesystem=fs, format="parquet")
        wanted = [c for c in columns if c in dataset.schema.names] if columns else None
        where = pads.field("file_id").isin(file_ids) if file_ids is not None else None
        return dataset.to_table(columns=wanted, filter=where).to_pandas()


def load_run(directory: str) -> RunFolder:
    """Open a voxflow output folder.

    Args:
        directory: the ``--out`` folder of a probe, diarize, clean or enhance run.

    Raises:
        FileNotFoundError: the folder does not exist or holds no ``_run.json``.
    """
    if is_local(directory) and not os.path.isdir(normalize_uri(directory)):
        raise FileNotFoundError(f"{directory}: no such folder")
    record = read_run_json(directory)
    if record is None:
        raise FileNotFoundError(
            f"{directory} is not a voxflow run folder (no _run.json): "
            "give the --out folder of a voxflow job"
        )
    return RunFolder(directory, record)


# ----------------------------------------------------------------------------------------------
# The sections: data only, shared by the page and the terminal
# ----------------------------------------------------------------------------------------------


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.3f} h"


def _number(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _capped(count: int, limit: int, what: str) -> str:
    return f"showing {limit} of {count} {what}" if count > limit else ""


def _with_names(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` sorted by a ``_name`` column: the input's relative path, else its path."""
    name = pd.Series("", index=frame.index, dtype=object)
    for column in ("file_id", "path", "rel_path"):  # later columns win where they are set
        if column in frame:
            values = frame[column].astype(object)
            name = values.where(values.notna() & (values != ""), name)
    return frame.assign(_name=name.astype(str)).sort_values("_name", kind="stable")


def summary_section(run: RunFolder) -> Section:
    """What ran, on what, how long, how fast, and what failed by kind."""
    rec = run.record
    counts = dict(rec.get("counts") or {})
    seconds = float(counts.pop("audio_seconds", 0.0) or 0.0)
    wall = float(rec.get("wall_seconds") or 0.0)
    by_kind = counts.pop("errors_by_kind", {}) or {}
    rows = [
        ["job", run.job],
        ["status", rec.get("status", "complete")],
        ["output", run.directory],
        ["inputs", " ".join(map(str, rec.get("inputs") or []))],
        ["files", counts.pop("inputs", "")],
        ["ok", counts.pop("ok", "")],
        ["errors", counts.pop("errors", "")],
        ["audio", _hours(seconds)],
        ["wall time", f"{wall:.1f} s"],
        ["speed", f"{seconds / wall:.1f}x real time" if wall else ""],
        ["started", rec.get("started_at", "")],
        ["ended", rec.get("ended_at", "")],
        ["config hash", str(rec.get("config_hash", ""))[:16]],
    ]
    rows += [[key.replace("_", " "), value] for key, value in sorted(counts.items())]
    tables = [Table(["", "value"], rows)]
    kinds = sorted(by_kind.items(), key=lambda kv: (-kv[1], kv[0]))
    tables.append(
        Table(["error kind", "files"], [list(kv) for kv in kinds], "" if kinds else "no errors")
    )
    notes = []
    if rec.get("status") not in (None, "complete"):
        notes.append(
            f"this run did not finish (status: {rec.get('status')}): tables may be partial"
        )
    return Section("Summary", tables, notes)


def _flatten(value: Any, prefix: str = "") -> list[list[str]]:
    if isinstance(value, dict) and value:
        rows: list[list[str]] = []
        for key in sorted(value):
            rows += _flatten(value[key], f"{prefix}.{key}" if prefix else str(key))
        return rows
    return [[prefix, json.dumps(value, default=str)]]


def config_section(run: RunFolder) -> Section:
    """The resolved configuration (dotted keys) and the package versions."""
    config = Table(["key", "value"], _flatten(run.record.get("config") or {}))
    versions = sorted((run.record.get("versions") or {}).items())
    return Section(
        "Configuration and versions",
        [config, Table(["package", "version"], [list(kv) for kv in versions])],
    )


def files_section(run: RunFolder, max_rows: int = MAX_ROWS) -> Section | None:
    """One row per input file with the columns this job wrote."""
    files = run.table("files")
    if files is None:
        return None
    columns = [c for c in FILE_COLUMNS if c in files.columns]
    files = _with_names(files)
    rows = [
        [row["_name"], *(_number(row[c], 0 if c in COUNT_COLUMNS else 2) for c in columns)]
        for _, row in files.head(max_rows).iterrows()
    ]
    return Section(
        "Files", [Table(["file", *columns], rows, _capped(len(files), max_rows, "files"))]
    )


def errors_section(run: RunFolder, max_rows: int = MAX_ROWS) -> Section:
    """Every failed input: its name, the stage, the kind and the message."""
    errors = run.table("errors")
    if errors is None or errors.empty:
        return Section("Errors", [Table(["file", "stage", "kind", "message"], [], "no errors")])
    errors = _with_names(errors)
    rows = [
        [row["_name"], row.get("stage", ""), row.get("error_kind", ""), row.get("error", "")]
        for _, row in errors.head(max_rows).iterrows()
    ]
    note = _capped(len(errors), max_rows, "errors")
    return Section("Errors", [Table(["file", "stage", "kind", "message"], rows, note)])


def speaker_hours(run: RunFolder) -> pd.DataFrame:
    """Global speakers by speech time, longest first: ``speaker_global``, ``name`` (enrolled, or
    empty), ``label`` (the name or the id), ``hours``, ``file_count``."""
    speakers = run.table(
        "speakers", columns=["speaker_global", "name", "speech_seconds", "file_count"]
    )
    if speakers is None or speakers.empty:
        return pd.DataFrame(columns=["speaker_global", "name", "label", "hours", "file_count"])
    names = speakers["name"] if "name" in speakers else pd.Series([None] * len(speakers))
    table = pd.DataFrame(
        {
            "speaker_global": speakers["speaker_global"].astype(str),
            "name": [n if isinstance(n, str) else "" for n in names],
            "label": [
                str(n) if isinstance(n, str) and n else str(g)
                for n, g in zip(names, speakers["speaker_global"], strict=True)
            ],
            "hours": speakers["speech_seconds"].astype(float) / 3600,
            "file_count": speakers["file_count"],
        }
    )
    return table.sort_values(["hours", "speaker_global"], ascending=[False, True]).reset_index(
        drop=True
    )


def speakers_section(run: RunFolder, max_rows: int = MAX_SPEAKERS) -> Section:
    """Hours per global speaker (a chart and a table)."""
    hours = speaker_hours(run)
    rows = [
        [r.speaker_global, r.name, f"{r.hours:.4f}", r.file_count]
        for r in hours.head(max_rows).itertuples()
    ]
    table = Table(
        ["speaker", "name", "hours", "files"], rows, _capped(len(hours), max_rows, "speakers")
    )
    plot = (lambda: _plot_speaker_hours(hours.head(max_rows))) if len(hours) else None
    return Section("Hours per speaker", [table], plot=plot, plot_alt="hours of speech per speaker")


def timeline_section(run: RunFolder, max_files: int = MAX_TIMELINE_FILES) -> Section:
    """Who spoke when in each file, coloured by global speaker (a plot only)."""
    files = run.table("files")
    if files is None:
        return Section("Speaker timeline", notes=["no files/ table"])
    ok = _with_names(files[files["status"] == "ok"])
    notes = []
    if len(ok) > max_files:
        notes.append(
            f"showing the first {max_files} of {len(ok)} files (by name); "
            "every file is in the segments/ table"
        )
    drawn = ok.head(max_files)
    segments = run.table("segments", file_ids=list(drawn["file_id"]))
    if segments is None:
        return Section("Speaker timeline", notes=["no segments/ table"])
    speakers = speaker_hours(run)
    if len(speakers) > len(_PALETTE):
        notes.append(f"{len(speakers)} speakers share {len(_PALETTE)} colours")
    plot = None
    if len(drawn):
        plot = lambda: _plot_timeline(drawn, segments, speakers)  # noqa: E731
    return Section("Speaker timeline", notes=notes, plot=plot, plot_alt="speaker timeline per file")


def funnel_table(run: RunFolder) -> Table:
    """The cleaning funnel: hours and clips dropped by each rule, then kept, then the total in."""
    funnel = run.table("funnel.parquet")
    if funnel is None or funnel.empty:
        return Table(["stage", "clips", "hours", "share"], [], "no funnel.parquet")
    total = float(funnel["hours"].sum())
    dropped = funnel[funnel["stage"] != "kept"].sort_values(
        ["hours", "stage"], ascending=[False, True]
    )
    ordered = pd.concat([dropped, funnel[funnel["stage"] == "kept"]])
    rows = [
        [
            r.stage if r.stage == "kept" else f"dropped: {r.stage}",
            int(r.clips),
            f"{r.hours:.4f}",
            f"{100 * r.hours / total:.1f} %" if total else "",
        ]
        for r in ordered.itertuples()
    ]
    rows.append(["in", int(funnel["clips"].sum()), f"{total:.4f}", "100.0 %" if total else ""])
    return Table(["stage", "clips", "hours", "share"], rows)


def funnel_section(run: RunFolder) -> Section:
    """Where a cleaning run's hours went."""
    table = funnel_table(run)
    plot = (lambda: _plot_funnel(run.table("funnel.parquet"))) if table.rows else None
    return Section("Cleaning funnel", [table], plot=plot, plot_alt="hours dropped by each rule")


def quality_section(run: RunFolder) -> Section:
    """Distributions of the kept clips' scores: a histogram and percentiles per column."""
    clips = run.table("clips.parquet", columns=list(QUALITY_COLUMNS))
    columns = [] if clips is None else [c for c in QUALITY_COLUMNS if c in clips.columns]
    rows = []
    for column in columns:
        values = pd.to_numeric(clips[column], errors="coerce").dropna()
        if values.empty:
            continue
        q = values.quantile([0.1, 0.5, 0.9])
        rows.append([column, len(values), *(f"{v:.2f}" for v in (values.min(), *q, values.max()))])
    table = Table(["score", "clips", "min", "p10", "median", "p90", "max"], rows)
    plotted = [r[0] for r in rows]
    plot = (lambda: _plot_distributions(clips, plotted)) if plotted else None
    return Section(
        "Quality scores",
        [table],
        notes=["kept clips (clips.parquet); rejected spans are not scored"],
        plot=plot,
        plot_alt="distributions of quality scores",
    )


def run_sections(run: RunFolder, max_rows: int = MAX_ROWS) -> list[Section]:
    """Every section of a run's report, in page order.

    Args:
        run: the opened folder.
        max_rows: cap of the per-file and error tables.
    """
    sections = [summary_section(run)]
    if run.job == "diarize":
        sections += [timeline_section(run), speakers_section(run)]
    if run.job == "clean":
        sections += [funnel_section(run), quality_section(run)]
    files = files_section(run, max_rows)
    sections += [s for s in (files,) if s is not None]
    sections += [errors_section(run, max_rows), config_section(run)]
    return sections


# ----------------------------------------------------------------------------------------------
# Plots (matplotlib, Agg, no pyplot state)
# ----------------------------------------------------------------------------------------------

# tab10's strong hues first, so the few speakers of a small run are easy to tell apart, then
# tab20b and tab20c, then tab10's light hues: 60 colours.
_PALETTE: list[str] = [
    *("#1f77b4 #ff7f0e #2ca02c #d62728 #9467bd #8c564b #e377c2 #7f7f7f #bcbd22 #17becf").split(),
    *("#393b79 #637939 #8c6d31 #843c39 #7b4173 #5254a3 #8ca252 #bd9e39 #ad494a #a55194").split(),
    *("#3182bd #e6550d #31a354 #756bb1 #636363 #6baed6 #fd8d3c #74c476 #9e9ac8 #969696").split(),
    *("#6b6ecf #b5cf6b #e7ba52 #d6616b #ce6dbd #9c9ede #cedb9c #e7cb94 #e7969c #de9ed6").split(),
    *("#9ecae1 #fdae6b #a1d99b #bcbddc #bdbdbd #c6dbef #fdd0a2 #c7e9c0 #dadaeb #d9d9d9").split(),
    *("#aec7e8 #ffbb78 #98df8a #ff9896 #c5b0d5 #c49c94 #f7b6d2 #c7c7c7 #dbdb8d #9edae5").split(),
]


def _label(text: str, width: int = 48) -> str:
    """A data string made safe for a matplotlib label: ``$`` would start mathtext (and a
    malformed formula raises), long names are shortened from the left."""
    text = str(text)
    if len(text) > width:
        text = "…" + text[-(width - 1) :]
    return text.replace("$", r"\$")


def _in_unit(hours: Any) -> tuple[list[float], str]:
    """Hours, or minutes when every value is under an hour (small runs)."""
    values = [float(h) for h in hours]
    if values and max(values) < 1:
        return [60 * v for v in values], "minutes"
    return values, "hours"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _plot_timeline(files: pd.DataFrame, segments: pd.DataFrame, speakers: pd.DataFrame) -> bytes:
    from matplotlib.patches import Patch

    colour = {
        g: _PALETTE[i % len(_PALETTE)] for i, g in enumerate(sorted(speakers["speaker_global"]))
    }
    figure = _figure(12, 1.2 + 0.42 * len(files))
    axes = figure.subplots()
    by_file = {k: g for k, g in segments.groupby("file_id")}
    for y, row in enumerate(files.itertuples()):
        duration = float(row.duration or 0.0)
        axes.broken_barh([(0, duration)], (y - 0.4, 0.8), color="#eeeeee")
        turns = by_file.get(row.file_id)
        if turns is None:
            continue
        for turn in turns.itertuples():
            axes.broken_barh(
                [(float(turn.start), float(turn.end) - float(turn.start))],
                (y - 0.35, 0.7),
                color=colour.get(str(turn.speaker_global), "#555555"),
                hatch="///" if bool(getattr(turn, "overlap", False)) else None,
                edgecolor="white",
                linewidth=0.3,
            )
    axes.set_yticks(range(len(files)), [_label(n) for n in files["_name"]], fontsize=8)
    axes.set_ylim(len(files) - 0.5, -0.5)  # first file on top, no empty rows
    axes.set_xlabel("time (s)")
    axes.set_xlim(left=0)
    labels = dict(zip(speakers["speaker_global"], speakers["label"], strict=True))
    drawn = segments[segments["file_id"].isin(set(files["file_id"]))]
    shown = sorted(set(drawn["speaker_global"].astype(str)) & set(colour))[:MAX_SPEAKERS]
    if shown:
        figure.legend(
            handles=[Patch(color=colour[g], label=_label(labels[g], 20)) for g in shown],
            loc="outside lower center",
            ncol=min(len(shown), 8),
            fontsize=8,
            frameon=False,
        )
    return _png(figure)


def _plot_speaker_hours(hours: pd.DataFrame) -> bytes:
    colour = {g: _PALETTE[i % len(_PALETTE)] for i, g in enumerate(sorted(hours["speaker_global"]))}
    figure = _figure(8, 1.0 + 0.28 * len(hours))
    axes = figure.subplots()
    values, unit = _in_unit(hours["hours"])
    axes.barh(
        [_label(x, 24) for x in hours["label"]],
        values,
        color=[colour[g] for g in hours["speaker_global"]],
    )
    axes.invert_yaxis()
    axes.set_xlabel(f"{unit} of speech")
    axes.tick_params(axis="y", labelsize=8)
    return _png(figure)


def _plot_funnel(funnel: pd.DataFrame) -> bytes:
    dropped = funnel[funnel["stage"] != "kept"].sort_values("hours", ascending=False)
    kept = funnel[funnel["stage"] == "kept"]
    stages = [*dropped["stage"], *kept["stage"]]
    hours, unit = _in_unit([*dropped["hours"], *kept["hours"]])
    figure = _figure(8, 1.0 + 0.35 * len(stages))
    axes = figure.subplots()
    axes.barh(
        [_label(s, 28) for s in stages],
        hours,
        color=["#d62728"] * len(dropped) + ["#2ca02c"] * len(kept),
    )
    axes.invert_yaxis()
    axes.set_xlabel(unit)
    return _png(figure)


def _plot_distributions(clips: pd.DataFrame, columns: list[str]) -> bytes:
    ncols = min(3, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    figure = _figure(4 * ncols, 2.8 * nrows)
    grid = figure.subplots(nrows, ncols, squeeze=False).ravel()
    for axes, column in zip(grid, columns, strict=False):
        values = pd.to_numeric(clips[column], errors="coerce").dropna()
        axes.hist(values, bins=min(30, max(5, len(values) // 3)), color="#1f77b4")
        axes.set_xlabel(QUALITY_COLUMNS[column])
        axes.set_ylabel("clips")
    for axes in grid[len(columns) :]:
        axes.set_visible(False)
    return _png(figure)


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def render_text(sections: list[Section], width: int = 60) -> str:
    """The sections as plain-text tables (``voxflow inspect``); plots are left out.

    Args:
        sections: from :func:`run_sections`.
        width: longest cell, longer ones are cut with ``…``.
    """

    def cell(value: Any) -> str:
        # Names come from data: control characters (terminal escapes) are shown, not sent.
        text = "".join(
            c if c.isprintable() else repr(c)[1:-1] for c in " ".join(str(value).split())
        )
        return text if len(text) <= width else text[: width - 1] + "…"

    out: list[str] = []
    for section in sections:
        if not section.tables and not section.notes:
            continue
        out += [section.title, "=" * len(section.title)]
        out += [f"({note})" for note in section.notes]
        for table in section.tables:
            cells = [[cell(c) for c in table.columns]] + [[cell(v) for v in r] for r in table.rows]
            widths = [max(len(r[i]) for r in cells) for i in range(len(table.columns))]
            for n, row in enumerate(cells):
                if n == 0 and not any(row):
                    continue
                out.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
                if n == 0:
                    out.append("  ".join("-" * w for w in widths))
            if table.note:
                out.append(f"({table.note})")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1em 2em;
       color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td { max-width: 60em; overflow-wrap: break-word; }
img { max-width: 100%; display: block; margin: 0.6em 0; }
.note { color: #666; font-style: italic; margin: 0.3em 0; }
nav a { margin-right: 1em; }
"""

# The page checks itself once loaded: every image decoded, no script error. It records the result
# on <body> (data-ready="ok"), which is what the browser test reads back.
_SCRIPT = """
window.voxflowErrors = [];
window.onerror = function (message, source, line) {
  window.voxflowErrors.push(String(message) + " at line " + line);
};
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (img) { return !(img.complete && img.naturalWidth > 0); });
  var body = document.body;
  body.setAttribute("data-images", (images.length - broken.length) + "/" + images.length);
  body.setAttribute("data-errors", window.voxflowErrors.join(" | "));
  body.setAttribute("data-ready",
    broken.length === 0 && window.voxflowErrors.length === 0 ? "ok" : "failed");
});
"""


def _anchor(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower())


def _html_table(table: Table) -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(c))}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>" for row in table.rows
    )
    parts = (
        [f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"]
        if table.rows
        else []
    )
    if table.note:
        parts.append(f'<p class="note">{e(table.note)}</p>')
    return "\n".join(parts)


def render_html(run: RunFolder, sections: list[Section]) -> str:
    """The sections as one self-contained HTML page (plots drawn here, inlined as PNG).

    Args:
        run: the folder the sections describe (for the title).
        sections: from :func:`run_sections`.
    """
    e = html.escape
    script_hash = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
    # Nothing but this page's own style, script and inline images may load.
    policy = (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{script_hash}'"
    )
    title = f"voxflow {run.job}: {run.directory}"
    body = [
        f"<h1>{e(title)}</h1>",
        "<nav>"
        + "".join(f'<a href="#{_anchor(s.title)}">{e(s.title)}</a>' for s in sections)
        + "</nav>",
    ]
    for section in sections:
        body.append(f'<section id="{_anchor(section.title)}"><h2>{e(section.title)}</h2>')
        body += [f'<p class="note">{e(note)}</p>' for note in section.notes]
        if section.plot is not None:
            data = base64.b64encode(section.plot()).decode()
            body.append(f'<img alt="{e(section.plot_alt)}" src="data:image/png;base64,{data}">')
        body += [_html_table(t) for t in section.tables]
        body.append("</section>")
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{policy}">',
            f"<title>{e(title)}</title>",
            f"<style>{_CSS}</style>",
            f"<script>{_SCRIPT}</script>",
            "</head><body>",
            *body,
            "</body></html>",
        ]
    )


def write_report(directory: str, open_page: bool = False) -> str:
    """Write ``DIRECTORY/report.html`` for a run folder and return its location.

    Args:
        directory: the run's output folder.
        open_page: open the page in the default web browser (local folders).
    """
    run = load_run(directory)
    page = render_html(run, run_sections(run))
    url = join(directory, "report.html")
    write_bytes_atomic(url, page.encode("utf-8"))
    if open_page:
        target = "file://" + os.path.abspath(normalize_uri(url)) if is_local(url) else url
        webbrowser.open(target)
    return url


def inspect_text(directory: str, max_rows: int = 20) -> str:
    """The report of a run folder as plain-text tables (``voxflow inspect``).

    Args:
        directory: the run's output folder.
        max_rows: cap of the per-file and error tables.
    """
    run = load_run(directory)
    return render_text(run_sections(run, max_rows))
