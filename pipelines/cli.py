"""The ``voxflow`` command line.

Exit codes: 0 the job ran (some inputs may be error rows: see the summary and ``errors/``);
2 bad usage, configuration or input listing; 1 the job itself failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from audio_ops.filters import FilterError
from audio_ops.models import ModelError
from pipelines.engine.config import ConfigError, ProbeRunConfig, load_config
from pipelines.engine.runtime import JobAborted
from pipelines.engine.sources import SourceError

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
    parser.add_argument(
        "--num-cpus",
        type=int,
        metavar="N",
        help="CPUs of a local Ray started for this job (default: all)",
    )
    parser.add_argument(
        "--max-error-rate",
        type=float,
        default=0.05,
        metavar="R",
        help="abort when more than this share of inputs fail, judged after 20 (default 0.05)",
    )
    parser.add_argument(
        "--fail-fast", action="store_true", help="abort at the first failed input (debugging)"
    )


def _add_resume(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume",
        action="store_true",
        help="skip inputs an earlier run with the same config committed in DIR (the default)",
    )
    mode.add_argument(
        "--overwrite",
        action="store_true",
        help="delete a previous run's outputs in DIR and start again (required when the config changed)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="voxflow",
        description="Distributed batch pipelines for audio corpora on Ray.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"voxflow {_version()}")
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
    _add_resume(probe)

    diarize = sub.add_parser(
        "diarize", help="who spoke when in every file, with one speaker id across the corpus"
    )
    _add_common(diarize)
    count = diarize.add_mutually_exclusive_group()
    count.add_argument("--num-speakers", type=int, metavar="N", help="exact speakers per file")
    diarize.add_argument(
        "--min-speakers", type=int, metavar="A", help="at least A speakers per file"
    )
    diarize.add_argument(
        "--max-speakers", type=int, metavar="B", help="at most B speakers per file"
    )
    diarize.add_argument(
        "--speakers",
        metavar="TABLE",
        help="known speakers (parquet/csv: name + embedding, or name + path of reference audio)",
    )
    diarize.add_argument(
        "--embeddings", action="store_true", help="also write window-level embeddings/"
    )
    _add_resume(diarize)

    clean = sub.add_parser(
        "clean",
        help="turn raw recordings into training clips: cut, enhance, check speakers, transcribe, score, filter",
    )
    _add_common(clean)
    _add_resume(clean)

    enhance = sub.add_parser(
        "enhance", help="denoise whole files into DIR/audio/ (FLAC, mirroring input paths)"
    )
    _add_common(enhance)
    _add_resume(enhance)
    enhance.add_argument(
        "--method",
        choices=["auto", "dfn3", "spectral_gating", "none"],
        help="default: auto (decided per file from its SNR)",
    )

    separate = sub.add_parser(
        "separate",
        help="vocals vs accompaniment (HDemucs) of whole files into DIR/audio/<stem>.vocals.flac",
    )
    _add_common(separate)
    _add_resume(separate)
    separate.add_argument(
        "--model", metavar="REF", help="torchaudio:BUNDLE or a local/URL checkpoint (pin: config)"
    )
    separate.add_argument(
        "--accompaniment", action="store_true", help="also write <stem>.accompaniment.flac"
    )

    vad = sub.add_parser("vad", help="speech regions of every file into DIR/segments/")
    _add_common(vad)
    _add_resume(vad)
    vad.add_argument("--method", choices=["silero", "energy"], help="default: silero")

    transcribe = sub.add_parser(
        "transcribe", help="Whisper transcripts, clip by clip at pauses, into DIR/transcripts/"
    )
    _add_common(transcribe)
    _add_resume(transcribe)
    transcribe.add_argument(
        "--model", metavar="REF", help="default: bundled:whisper-tiny-en (faster-whisper)"
    )
    transcribe.add_argument("--language", metavar="CODE", help="default: detected per clip")
    transcribe.add_argument(
        "--words",
        action="store_true",
        help="word timings (transcripts/ column words; transcription.word_timestamps)",
    )

    export = sub.add_parser("export", help="export a run's tables to other formats")
    export_sub = export.add_subparsers(dest="format", required=True)
    rttm = export_sub.add_parser("rttm", help="one RTTM file per input, named after its stem")
    rttm.add_argument("run", metavar="DIR", help="a voxflow diarize output folder")
    rttm.add_argument("--to", required=True, metavar="RTTM_DIR", help="folder for the .rttm files")
    rttm.add_argument(
        "--global",
        dest="use_global",
        action="store_true",
        help="label turns with corpus-wide speaker ids (or enrolled names) instead of file-local ones",
    )

    submit = sub.add_parser(
        "submit",
        help="run a voxflow job on a Ray cluster (Jobs API): voxflow submit --address URL -- diarize ...",
    )
    submit.add_argument(
        "--address",
        required=True,
        metavar="URL",
        help="the cluster's dashboard, e.g. http://127.0.0.1:8265",
    )
    submit.add_argument(
        "--wait",
        action="store_true",
        help="follow the job's logs until it ends; exit 0 only if it succeeded",
    )
    submit.add_argument(
        "--pip",
        action="append",
        metavar="REQ",
        help="extra pip requirement for the job (repeatable)",
    )
    submit.add_argument(
        "job", nargs=argparse.REMAINDER, help="-- then the voxflow command to run there"
    )

    jobs = sub.add_parser("jobs", help="status, logs or stop of a submitted job")
    jobs.add_argument("action", choices=["status", "logs", "stop"])
    jobs.add_argument("job_id", metavar="JOB_ID")
    jobs.add_argument(
        "--address", required=True, metavar="URL", help="the cluster's dashboard address"
    )

    nemo = export_sub.add_parser("nemo", help="NeMo JSONL manifest of a clean run's clips")
    nemo.add_argument("run", metavar="DIR", help="a voxflow clean output folder")
    nemo.add_argument(
        "--to", metavar="FILE", help="manifest path (default DIR/nemo_manifest.jsonl)"
    )
    lhotse = export_sub.add_parser(
        "lhotse", help="Lhotse recordings/supervisions/cuts JSONL of a clean run's clips"
    )
    lhotse.add_argument("run", metavar="DIR", help="a voxflow clean output folder")
    lhotse.add_argument("--to", metavar="DIR", help="folder for the manifests (default DIR/lhotse)")

    evaluate = sub.add_parser("eval", help="score a run against references")
    eval_sub = evaluate.add_subparsers(dest="task", required=True)
    ev = eval_sub.add_parser(
        "diarization", help="DER, JER, miss/false alarm/confusion, speaker counts, global identity"
    )
    ev.add_argument(
        "--ref", required=True, metavar="RTTM_DIR", help="folder of reference .rttm files"
    )
    ev.add_argument(
        "--hyp",
        required=True,
        metavar="DIR",
        help="a voxflow diarize output folder, or a folder of .rttm files",
    )
    ev.add_argument("--json", metavar="FILE", help="also write the scores as JSON")

    report = sub.add_parser(
        "report", help="write DIR/report.html: a run's summary, plots and errors in one page"
    )
    report.add_argument("run", metavar="DIR", help="the --out folder of any voxflow job")
    report.add_argument("--open", action="store_true", help="open the page in a web browser")
    inspect = sub.add_parser("inspect", help="print a run's summary as tables in the terminal")
    inspect.add_argument("run", metavar="DIR", help="the --out folder of any voxflow job")
    doctor = sub.add_parser(
        "doctor",
        help="check what this machine can run: models offline, GPU, Ray cluster, storage",
    )
    doctor.add_argument("--address", help="a Ray cluster to connect to (default: RAY_ADDRESS)")
    doctor.add_argument(
        "--storage", metavar="URL", help="a folder to list, e.g. s3://bucket/corpus"
    )
    return parser


def _cmd_diarize(args: argparse.Namespace) -> int:
    from pipelines.jobs.diarize import DiarizeRunConfig, run_diarize

    overrides = {
        "diarization.clustering.num_speakers": args.num_speakers,
        "diarization.clustering.min_speakers": args.min_speakers,
        "diarization.clustering.max_speakers": args.max_speakers,
        "write_embeddings": True if args.embeddings else None,
    }
    config = load_config(DiarizeRunConfig, args.config, overrides)
    summary = run_diarize(
        args.inputs,
        args.out,
        config,
        speakers=args.speakers,
        **_job_options(args),
        overwrite=args.overwrite,
    )
    return _finish(summary)


def _cmd_export(args: argparse.Namespace) -> int:
    from pipelines.reports import report

    if args.format == "rttm":
        written = report.export_rttm(args.run, args.to, use_global=args.use_global)
        print(f"wrote {len(written)} RTTM files to {args.to}")
    elif args.format == "nemo":
        print(f"wrote {report.export_nemo(args.run, args.to)}")
    else:
        paths = report.export_lhotse(args.run, args.to)
        print("wrote " + ", ".join(paths.values()))
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from pipelines.submit import submit

    job = args.job[1:] if args.job and args.job[0] == "--" else args.job
    job_id, status = submit(args.address, job, wait=args.wait, pip=args.pip)
    print(f"job {job_id}: {status}")
    return 0 if (not args.wait or status == "SUCCEEDED") else 1


def _cmd_jobs(args: argparse.Namespace) -> int:
    from pipelines import submit

    if args.action == "status":
        print(submit.job_status(args.address, args.job_id))
    elif args.action == "logs":
        print(submit.job_logs(args.address, args.job_id), end="")
    else:
        print(
            "stop requested"
            if submit.stop_job(args.address, args.job_id)
            else "job was not running"
        )
    return 0


def _cmd_enhance(args: argparse.Namespace) -> int:
    from pipelines.jobs.enhance import EnhanceRunConfig, run_enhance

    config = load_config(EnhanceRunConfig, args.config, {"enhancement.method": args.method})
    summary = run_enhance(
        args.inputs,
        args.out,
        config,
        overwrite=args.overwrite,
        **_job_options(args),
    )
    return _finish(summary)


def _cmd_file_job(args: argparse.Namespace) -> int:
    """``separate``, ``vad`` and ``transcribe``: per-file jobs with the same options."""
    import importlib

    module = importlib.import_module(f"pipelines.jobs.{args.command}")
    run_config, overrides = {
        "separate": ("SeparateRunConfig", {"separation.model": getattr(args, "model", None)}),
        "vad": ("VadRunConfig", {"vad.backend": getattr(args, "method", None)}),
        "transcribe": (
            "TranscribeRunConfig",
            {
                "transcription.model": getattr(args, "model", None),
                "transcription.language": getattr(args, "language", None),
                "transcription.word_timestamps": True if getattr(args, "words", False) else None,
            },
        ),
    }[args.command]
    if getattr(args, "accompaniment", None):
        overrides["accompaniment"] = True
    config = load_config(getattr(module, run_config), args.config, overrides)
    summary = getattr(module, f"run_{args.command}")(
        args.inputs,
        args.out,
        config,
        overwrite=args.overwrite,
        **_job_options(args),
    )
    return _finish(summary)


def _cmd_clean(args: argparse.Namespace) -> int:
    from pipelines.api import diarize_for_clean
    from pipelines.jobs.clean import CleanRunConfig, run_clean

    config = load_config(CleanRunConfig, args.config)
    diarize_for_clean(args.inputs, args.out, config, **_job_options(args), overwrite=args.overwrite)
    summary, funnel = run_clean(
        args.inputs,
        args.out,
        config,
        **_job_options(args),
        overwrite=args.overwrite,
    )
    return _finish(summary, funnel.text())


def _cmd_eval(args: argparse.Namespace) -> int:
    from pipelines.reports.report import evaluate_run

    report = evaluate_run(args.ref, args.hyp, json_path=args.json)
    print(report.text())
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pipelines.reports.run_report import write_report

    print(f"wrote {write_report(args.run, open_page=args.open)}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from pipelines.reports.run_report import inspect_text

    print(inspect_text(args.run), end="")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from pipelines.doctor import run_doctor

    text, code = run_doctor(address=args.address, storage=args.storage)
    print(text)
    return code


def _version() -> str:
    from pipelines.doctor import voxflow_version

    return voxflow_version()


def _finish(summary, *extra: str) -> int:
    """Print a job's summary; exit code 2 when its inputs held no audio file."""
    print(summary.text())
    for text in extra:
        print(text)
    if summary.inputs == 0:
        print(f"voxflow {summary.job}: no audio files found in the inputs", file=sys.stderr)
        return 2
    return 0


def _job_options(args: argparse.Namespace) -> dict:
    """The options every job takes from the command line: where to run, how loud, when to
    abort."""
    return {
        "address": args.address,
        "quiet": args.quiet,
        "num_cpus": args.num_cpus,
        "policy": _policy(args),
    }


def _policy(args: argparse.Namespace):
    from pipelines.engine.runtime import ErrorPolicy

    return ErrorPolicy(max_error_rate=args.max_error_rate, fail_fast=args.fail_fast)


def _cmd_probe(args: argparse.Namespace) -> int:
    from pipelines.jobs.probe import run_probe

    config = load_config(ProbeRunConfig, args.config, {"probe.min_duration": args.min_duration})
    summary = run_probe(
        args.inputs, args.out, config, overwrite=args.overwrite, **_job_options(args)
    )
    return _finish(summary)


COMMANDS = {
    "probe": _cmd_probe,
    "diarize": _cmd_diarize,
    "clean": _cmd_clean,
    "enhance": _cmd_enhance,
    "separate": _cmd_file_job,
    "vad": _cmd_file_job,
    "transcribe": _cmd_file_job,
    "export": _cmd_export,
    "submit": _cmd_submit,
    "jobs": _cmd_jobs,
    "eval": _cmd_eval,
    "report": _cmd_report,
    "inspect": _cmd_inspect,
    "doctor": _cmd_doctor,
}


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
    except (
        ConfigError,
        SourceError,
        FilterError,
        FileNotFoundError,
        ValueError,
        ModelError,
    ) as exc:
        print(f"voxflow {args.command}: {exc}", file=sys.stderr)
        return 2
    except JobAborted as exc:
        print(f"voxflow {args.command}: aborted: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        # A stage that cannot start reaches here wrapped in Ray's errors, with long tracebacks
        # of remote processes: print the line that names the stage and the cause.
        cause = _stage_start_line(str(exc))
        if cause is None:
            raise
        print(f"voxflow {args.command}: failed: {cause}", file=sys.stderr)
        return 1


def _stage_start_line(text: str) -> str | None:
    """The ``stage '...': X could not start: ...`` line in a (Ray) error's text, if any."""
    for line in reversed(text.splitlines()):
        if "could not start:" in line and "stage '" in line:
            return line[line.index("stage '") :].strip()
    return None


if __name__ == "__main__":
    sys.exit(main())
