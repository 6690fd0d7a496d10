"""Word timestamps of ``voxflow transcribe --words`` against reference times, with Whisper's own
times and with ``transcription.snap_words`` (word edges moved out of silences) in one run.

Two references:

- ``--stm STM --audio WAV``: a recording with its STM (utterances with text). Reports the WER of
  the whole recording's text against the STM's (both normalised as
  ``audio_ops.transcription.normalize_transcript`` does), and how many of the recognised words
  lie inside their reference utterance's span: the recognised words are aligned to the
  reference words (Levenshtein, matches and substitutions aligned), and an aligned word counts
  as inside when ``utterance.start - tol <= start`` and ``end <= utterance.end + tol``; for
  ``tol`` 0, 0.1 and 0.25 s.
- ``--conversations DIR [DIR ...]``: folders written by ``real_conversations.py`` (``audio/``,
  ``rttm/``: speech known to the millisecond, no transcript). Reports the share of the
  recognised words lying inside the reference speech of any speaker
  (``audio_ops.evaluation.words_in_speech``): a word put in a pause of 0.3 s or more, or
  reaching into one, is out.

    python benchmarks/word_timestamps.py \\
        --stm ../shared/realdata/diar/stm/pyannote_sample.stm \\
        --audio ../shared/realdata/diar/audio/pyannote_sample.wav
    python benchmarks/real_conversations.py --out /tmp/conv_test --split test --n 20 --seed 2
    python benchmarks/word_timestamps.py --conversations /tmp/conv_test

``--aligner MODEL`` adds a run whose words come from CTC forced alignment
(``transcription.aligner``: a hub id such as ``facebook/wav2vec2-base-960h``, or a local folder);
it needs the hub or a downloaded model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from audio_ops.evaluation import (  # noqa: E402
    WORD_TIME_TOLERANCES,
    read_stm,
    word_timing_scores,
    words_in_speech,
)
from benchmarks.common import machine, save  # noqa: E402
from benchmarks.real_conversations import read_rttm  # noqa: E402

AUDIO_SUFFIXES = (".wav", ".flac")


def transcribe_words(audio: list[str], language: str, **options) -> dict[str, list[dict]]:
    """File path -> its recognised words in file time (``voxflow transcribe`` with word times)."""
    from pipelines import api

    options = {f"transcription__{k}": v for k, v in options.items()}
    with tempfile.TemporaryDirectory() as out:
        result = api.transcribe(
            audio,
            out,
            transcription__word_timestamps=True,
            transcription__language=language,
            **options,
        )
        transcripts = result.table("transcripts").sort_values(["path", "start"])
    words: dict[str, list[dict]] = {path: [] for path in audio}
    given = {Path(p).resolve(): p for p in audio}
    for path, row in zip(transcripts["path"], transcripts["words"], strict=True):
        words[given[Path(path).resolve()]] += [dict(w) for w in row]
    return words


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stm", type=Path)
    ap.add_argument("--audio", type=Path)
    ap.add_argument("--conversations", type=Path, nargs="+", default=[])
    ap.add_argument("--language", default="en")
    ap.add_argument("--aligner", default=None, help="a CTC model: hub id or local folder")
    args = ap.parse_args()
    if bool(args.stm) != bool(args.audio) or not (args.stm or args.conversations):
        ap.error("give --stm with --audio, or --conversations")

    runs = {"whisper": {"snap_words": False}, "whisper + snap_words": {"snap_words": True}}
    if args.aligner:
        runs["ctc aligner"] = {"aligner": args.aligner}
    results: dict = {"machine": machine(), "aligner": args.aligner}

    if args.stm:
        reference = read_stm(args.stm)
        results["stm"] = {"stm": str(args.stm), "audio": str(args.audio)}
        for name, options in runs.items():
            words = transcribe_words([str(args.audio)], args.language, **options)
            figures = word_timing_scores(reference, words[str(args.audio)])
            results["stm"][name] = figures
            print(
                f"{name}: WER {100 * figures['wer']:.1f} % over {figures['reference_words']} "
                f"reference words; {figures['aligned_words']} of {figures['recognised_words']} "
                "recognised words aligned; inside their utterance "
                + ", ".join(
                    f"{100 * share:.1f} % (tolerance {tol:g} s)"
                    for tol, share in figures["inside"].items()
                )
            )

    for folder in args.conversations:
        audio = sorted(str(p) for p in (folder / "audio").iterdir() if p.suffix in AUDIO_SUFFIXES)
        if not audio:
            raise SystemExit(f"{folder}/audio holds no {' or '.join(AUDIO_SUFFIXES)} file")
        speech = {
            path: [(s, e) for _, s, e in read_rttm(folder / "rttm" / f"{Path(path).stem}.rttm")]
            for path in audio
        }
        results[str(folder)] = {"files": len(audio)}
        for name, options in runs.items():
            words = transcribe_words(audio, args.language, **options)
            per_file = [words_in_speech(speech[p], words[p]) for p in audio]
            total = sum(f["words"] for f in per_file)
            if not total:
                raise SystemExit(f"{folder}: no words recognised in {len(audio)} files")
            inside = {
                tol: sum(f["inside"][tol] * f["words"] for f in per_file if f["words"]) / total
                for tol in WORD_TIME_TOLERANCES
            }
            results[str(folder)][name] = {"words": total, "inside": inside}
            print(
                f"{folder} ({len(audio)} files), {name}: {total} words; inside reference speech "
                + ", ".join(
                    f"{100 * share:.1f} % (tolerance {tol:g} s)" for tol, share in inside.items()
                )
            )
    save(results, "word_timestamps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
