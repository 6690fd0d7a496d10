"""The ``voxflow`` command line.

Exit codes: 0 the job ran (some inputs may be error rows: see the summary and ``errors/``);
2 bad usage, configuration or input listing; 1 the job itself failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pipelines.config import ConfigError, ProbeRunConfig, load_config
from pipelines.sources import SourceError

log = logging.getLogger("voxflow")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="audio files, directories (recursive), globs or manifests (csv/jsonl/parquet with a 'path' column); any fsspec URL",
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (local path or URL)"
    )
    parser.add_argument("--config", metavar="FILE", help="YAML run configuration")
    parser.add_argument(
        "--address",
        metavar="ADDR",
        help="Ray cluster address (default: RAY_ADDRESS, else a local Ray started for this job)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress line")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="voxflow",
        description="Distributed batch pipelines for audio corpora on Ray.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    probe = sub.add_parser(
        "probe", help="inventory a corpus: format, duration, levels, loudness, errors"
    )
    _add_common(probe)
    probe.add_argument(
        "--min-duration",
        type=float,
        metavar="SECONDS",
        help="files shorter than this are errors (default 0.01)",
    )
    return parser


def _cmd_probe(args: argparse.Namespace) -> int:
    from pipelines.probe import run_probe

    config = load_config(ProbeRunConfig, args.config, {"probe.min_duration": args.min_duration})
    summary = run_probe(args.inputs, args.out, config, address=args.address, quiet=args.quiet)
    print(summary.text())
    if summary.inputs == 0:
        print("voxflow probe: no audio files found in the inputs", file=sys.stderr)
        return 2
    return 0


COMMANDS = {"probe": _cmd_probe}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``voxflow`` command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, SourceError) as exc:
        print(f"voxflow {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
