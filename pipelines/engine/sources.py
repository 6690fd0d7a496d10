"""Corpus listing: directories, globs, single files and manifests -> one row per input file.

Every row carries ``path`` (normalised URI), ``file_id`` (hash of that URI), ``rel_path`` (the
path below its input root, used to mirror outputs) and ``source`` (the input it came from).
Manifest rows keep their other columns. A name that does not exist still becomes a row: the first
stage that opens it turns it into an error row, so nothing named by the user is silently lost.
"""

from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Iterable
from typing import Any

from audio_ops.io import (
    AUDIO_EXTENSIONS,
    extension_of,
    file_id_for,
    is_local,
    normalize_uri,
    split_protocol,
)

log = logging.getLogger(__name__)

MANIFEST_EXTENSIONS = frozenset({"csv", "tsv", "jsonl", "json", "parquet"})
#: Columns a listing sets itself; a manifest column of the same name is kept as ``manifest_<name>``.
LISTING_COLUMNS = ("path", "file_id", "rel_path", "source")


class SourceError(ValueError):
    """An input cannot be listed at all (a manifest without a ``path`` column, say)."""


def _has_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _row(
    path: str, rel_path: str, source: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    uri = normalize_uri(path)
    row = {"path": uri, "file_id": file_id_for(uri), "rel_path": rel_path, "source": source}
    for key, value in (extra or {}).items():
        row[f"manifest_{key}" if key in LISTING_COLUMNS else key] = value
    return row


def _walk_local(root: str, extensions: frozenset[str]) -> Iterable[str]:
    """Files below ``root`` with a wanted extension, following directory symlinks once each (a
    symlink loop is visited once and then skipped, never recursed into forever)."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            log.warning("skipping %s: already listed through another path (symlink loop?)", dirpath)
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            if extension_of(name) in extensions:
                yield os.path.join(dirpath, name)


def _list_dir(uri: str, extensions: frozenset[str]) -> list[dict[str, Any]]:
    if is_local(uri):
        return [
            _row(path, os.path.relpath(path, uri).replace(os.sep, "/"), uri)
            for path in _walk_local(uri, extensions)
        ]
    import fsspec

    fs, root = fsspec.core.url_to_fs(uri)
    proto = split_protocol(uri)[0]
    root = root.rstrip("/")
    rows = []
    for path in sorted(fs.find(root)):
        if extension_of(path) in extensions:
            rows.append(_row(f"{proto}://{path}", posixpath.relpath(path, root), uri))
    return rows


def _list_glob(pattern: str, extensions: frozenset[str]) -> list[dict[str, Any]]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(pattern)
    proto = split_protocol(normalize_uri(pattern))[0] if "://" in pattern else "file"
    # The root of relative paths: everything before the first component with a wildcard.
    parts = path.split("/")
    first_glob = next(i for i, part in enumerate(parts) if _has_glob(part))
    root = "/".join(parts[:first_glob]) or "/"
    rows = []
    for match in sorted(fs.glob(path)):
        if fs.isdir(match):
            continue
        if extension_of(match) not in extensions:
            continue
        url = match if proto == "file" else f"{proto}://{match}"
        rows.append(_row(url, posixpath.relpath(match, root), pattern))
    return rows


def _read_manifest(uri: str) -> list[dict[str, Any]]:
    import fsspec
    import pandas as pd

    ext = extension_of(uri)
    try:
        with fsspec.open(uri, "rb") as f:
            if ext in ("csv", "tsv"):
                frame = pd.read_csv(f, sep="\t" if ext == "tsv" else ",", dtype={"path": str})
            elif ext in ("jsonl", "json"):
                frame = pd.read_json(f, lines=(ext == "jsonl"), dtype={"path": str})
            else:
                frame = pd.read_parquet(f)
    except Exception as exc:
        raise SourceError(f"cannot read manifest {uri}: {exc}") from exc
    if "path" not in frame.columns:
        raise SourceError(f"manifest {uri} has no 'path' column (columns: {list(frame.columns)})")
    base = posixpath.dirname(uri) if "://" in uri else os.path.dirname(uri)
    rows = []
    for record in frame.to_dict(orient="records"):
        raw = record.pop("path")
        if not isinstance(raw, str) or not raw.strip():
            raise SourceError(f"manifest {uri} has a row with an empty path: {record}")
        if "://" in raw or os.path.isabs(raw):
            full, rel = raw, posixpath.basename(split_protocol(raw)[1])
        else:
            full = posixpath.join(base, raw) if "://" in base else os.path.join(base, raw)
            rel = raw
        extra = {k: (None if _is_missing(v) else v) for k, v in record.items()}
        rows.append(_row(full, rel, uri, extra))
    return rows


def _is_missing(value: Any) -> bool:
    try:
        return value != value  # NaN
    except Exception:
        return False


def list_corpus(
    inputs: Iterable[str],
    extensions: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """List every input file of a corpus, once each, in a deterministic order.

    Args:
        inputs: directories (listed recursively), glob patterns, audio files, or manifests
            (``.csv``/``.tsv``/``.jsonl``/``.json``/``.parquet`` with a ``path`` column; relative
            paths are relative to the manifest's folder). Any fsspec URL.
        extensions: audio extensions a directory or glob picks up (default: every extension
            voxflow decodes). Files named directly or in a manifest are taken whatever their
            extension.

    Returns:
        Rows with ``path``, ``file_id``, ``rel_path``, ``source`` and any manifest columns; the
        same file named twice appears once.

    Raises:
        SourceError: a manifest is unreadable or lacks a ``path`` column.
    """
    wanted = frozenset(e.lower().lstrip(".") for e in (extensions or AUDIO_EXTENSIONS))
    rows: list[dict[str, Any]] = []
    for raw in inputs:
        raw = str(raw)
        proto, rest = split_protocol(raw)
        if _has_glob(rest):
            rows.extend(_list_glob(raw, wanted))
            continue
        uri = normalize_uri(raw)
        if is_local(uri):
            is_dir, is_file = os.path.isdir(uri), os.path.isfile(uri)
        else:
            import fsspec

            fs, path = fsspec.core.url_to_fs(uri)
            is_dir, is_file = fs.isdir(path), fs.isfile(path)
        if is_dir:
            found = _list_dir(uri, wanted)
            if not found:
                log.warning("no audio files found under %s", uri)
            rows.extend(found)
        elif is_file and extension_of(uri) in MANIFEST_EXTENSIONS:
            rows.extend(_read_manifest(uri))
        else:
            # An audio file, or a name that does not exist: kept, so that it is reported.
            rows.append(_row(uri, posixpath.basename(rest.rstrip("/")), uri))
    unique: dict[str, dict[str, Any]] = {}
    for row in rows:
        unique.setdefault(row["file_id"], row)
    columns: list[str] = []
    for row in unique.values():
        columns.extend(k for k in row if k not in columns)
    return [{c: row.get(c) for c in columns} for row in unique.values()]
