"""Declarative clip filters and the funnel that accounts for every dropped second.

A rule is a short sentence over one column: ``duration between 3 and 30``, ``snr >= 15``,
``language == en``, ``language_prob >= 0.8``, ``speaker_count <= 1``, ``text != ""``,
``language in [en, de]``. Rules are parsed (and checked against the columns the pipeline
produces) before any work starts; a clip is tested against every rule in order and rejected by
the *first* it fails, so the funnel's rows add up exactly: hours in = sum of hours dropped by
each rule + hours kept.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

_OPS = (">=", "<=", "!=", "==", ">", "<")
_RULE = re.compile(r"^\s*(?P<column>[A-Za-z_][A-Za-z0-9_]*)\s+(?P<rest>.+?)\s*$")


class FilterError(ValueError):
    """A rule cannot be parsed, or names a column no stage produces."""


def _literal(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


@dataclass(frozen=True)
class Rule:
    """One parsed filter rule.

    Args:
        name: the rule's name (recorded with each rejection and in the funnel).
        column: the column tested.
        op: ``>=``, ``<=``, ``>``, ``<``, ``==``, ``!=``, ``between`` or ``in``.
        value: the operand (a pair for ``between``, a tuple for ``in``).
        text: the rule as written.
    """

    name: str
    column: str
    op: str
    value: Any
    text: str

    def passes(self, row: dict[str, Any]) -> bool:
        """Whether ``row`` satisfies the rule; a missing or NaN value fails it."""
        value = row.get(self.column)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        if self.op == "between":
            lo, hi = self.value
            return lo <= value <= hi
        if self.op == "in":
            return value in self.value
        return {
            ">=": value >= self.value,
            "<=": value <= self.value,
            ">": value > self.value,
            "<": value < self.value,
            "==": value == self.value,
            "!=": value != self.value,
        }[self.op]


def parse_rule(text: str, name: str | None = None) -> Rule:
    """Parse one rule sentence (see the module docstring)."""
    match = _RULE.match(text or "")
    if not match:
        raise FilterError(f"cannot parse filter rule {text!r}")
    column, rest = match.group("column"), match.group("rest")
    between = re.match(r"^between\s+(\S+)\s+and\s+(\S+)$", rest)
    if between:
        lo, hi = _literal(between.group(1)), _literal(between.group(2))
        if not all(isinstance(v, (int, float)) for v in (lo, hi)) or lo > hi:
            raise FilterError(f"filter {text!r}: 'between' needs two numbers, low first")
        return Rule(name or column, column, "between", (lo, hi), text)
    inside = re.match(r"^in\s+\[(.*)\]$", rest)
    if inside:
        values = tuple(_literal(v) for v in inside.group(1).split(",") if v.strip())
        return Rule(name or column, column, "in", values, text)
    for op in _OPS:
        if rest.startswith(op):
            return Rule(name or column, column, op, _literal(rest[len(op) :]), text)
    raise FilterError(
        f"filter {text!r}: expected one of {', '.join(_OPS)}, 'between A and B' or 'in [...]'"
    )


def parse_rules(
    spec: list[Any] | dict[str, str] | None, known_columns: set[str] | None = None
) -> list[Rule]:
    """Rules from a config: a list of sentences, a list of ``{name, rule}`` mappings, or a mapping
    ``name: sentence``. With ``known_columns``, a rule on any other column is an error naming it.
    """
    if not spec:
        return []
    items: list[tuple[str | None, str]] = []
    if isinstance(spec, dict):
        items = [(str(k), str(v)) for k, v in spec.items()]
    else:
        for entry in spec:
            if isinstance(entry, str):
                items.append((None, entry))
            elif isinstance(entry, dict) and "rule" in entry and set(entry) <= {"name", "rule"}:
                items.append((entry.get("name"), str(entry["rule"])))
            else:
                raise FilterError(
                    f"filters: expected a rule sentence or {{name, rule}}, got {entry!r}"
                )
    rules = [parse_rule(text, name) for name, text in items]
    names = [r.name for r in rules]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise FilterError(
            f"filters: rule names must be unique; give 'name:' to tell {duplicated} apart"
        )
    if known_columns is not None:
        for rule in rules:
            if rule.column not in known_columns:
                raise FilterError(
                    f"filters.{rule.name}: no stage produces the column {rule.column!r} "
                    f"(available: {', '.join(sorted(known_columns))})"
                )
    return rules


def first_failure(row: dict[str, Any], rules: list[Rule]) -> str:
    """The name of the first rule ``row`` fails, or ``""`` when it passes them all."""
    for rule in rules:
        if not rule.passes(row):
            return rule.name
    return ""


class Funnel:
    """Seconds in, seconds dropped per reason, seconds kept; ``check()`` proves they add up."""

    def __init__(self) -> None:
        self.seconds_in = 0.0
        self.kept = 0.0
        self.dropped: dict[str, float] = {}
        self.clips_in = 0
        self.clips_kept = 0
        self.clips_dropped: dict[str, int] = {}

    def add(self, seconds: float, reason: str) -> None:
        """Count one span: kept when ``reason`` is empty, else dropped for ``reason``."""
        self.seconds_in += seconds
        self.clips_in += 1
        if reason:
            self.dropped[reason] = self.dropped.get(reason, 0.0) + seconds
            self.clips_dropped[reason] = self.clips_dropped.get(reason, 0) + 1
        else:
            self.kept += seconds
            self.clips_kept += 1

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]]) -> Funnel:
        """The funnel :meth:`rows` wrote (``stage``, ``clips``, ``hours``), read back."""
        funnel = cls()
        for row in rows:
            seconds, clips = float(row["hours"]) * 3600, int(row["clips"])
            funnel.seconds_in += seconds
            funnel.clips_in += clips
            if row["stage"] == "kept":
                funnel.kept, funnel.clips_kept = seconds, clips
            else:
                funnel.dropped[row["stage"]] = seconds
                funnel.clips_dropped[row["stage"]] = clips
        funnel.check()
        return funnel

    def drop_kept(self, seconds: float, reason: str) -> None:
        """Move one kept clip's seconds to ``reason`` (a corpus-wide decision, such as
        ``duplicate``, taken after the clip was counted as kept)."""
        self.kept -= seconds
        self.clips_kept -= 1
        self.dropped[reason] = self.dropped.get(reason, 0.0) + seconds
        self.clips_dropped[reason] = self.clips_dropped.get(reason, 0) + 1

    def check(self) -> None:
        """Raise if the parts do not sum to the whole (to float rounding)."""
        total = self.kept + sum(self.dropped.values())
        if not math.isclose(total, self.seconds_in, rel_tol=1e-9, abs_tol=1e-6):
            raise AssertionError(f"funnel does not add up: {total} != {self.seconds_in}")

    def rows(self) -> list[dict[str, Any]]:
        """The funnel as table rows: one per reason, then ``kept``."""
        out = [
            {"stage": reason, "clips": self.clips_dropped[reason], "hours": seconds / 3600}
            for reason, seconds in self.dropped.items()
        ]
        out.append({"stage": "kept", "clips": self.clips_kept, "hours": self.kept / 3600})
        return out

    def text(self) -> str:
        """The funnel as a person reads it."""
        lines = [f"in:   {self.seconds_in / 3600:9.4f} h  {self.clips_in:7d} spans"]
        for reason, seconds in sorted(self.dropped.items(), key=lambda kv: -kv[1]):
            lines.append(
                f"  - {reason:<20} {seconds / 3600:9.4f} h  {self.clips_dropped[reason]:7d}"
            )
        lines.append(f"kept: {self.kept / 3600:9.4f} h  {self.clips_kept:7d} clips")
        return "\n".join(lines)
