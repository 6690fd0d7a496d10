"""Word timestamps of ``voxflow transcribe --words`` against a reference STM.

Runs the transcribe job (offline default: the bundled Whisper tiny.en in faster-whisper) on the
STM's recording, then reports:

- WER of the whole recording's text against the STM's (both normalised as
  ``audio_ops.transcription.normalize_transcript`` does);
- how many of the recognised words lie inside their reference utterance's span: the recognised
  words are aligned to the reference words (Levenshtein, matches and substitutions aligned), and
  an aligned word counts as inside when ``utterance.start - tol <= start`` and
  ``end <= utterance.end + tol``; for ``tol`` 0, 0.1 and 0.25 s.

    python benchmarks/word_timestamps.py \\
        --stm ../shared/realdata/diar/stm/pyannote_sample.stm \\
        --audio ../shared/realdata/diar/audio/pyannote_sample.wav

``--aligner MODEL`` times the words by CTC forced alignment (``transcription.aligner``: a hub id
such as ``facebook/wav2vec2-base-960h``, or a local folder) instead of Whisper's cross-attention;
it needs the hub or a downloaded model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from audio_ops.evaluation import read_stm, word_timing_scores  # noqa: E402
from benchmarks.common import machine, save  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stm", type=Path, required=True)
    ap.add_argument("--audio", type=Path, required=True)
    ap.add_argument("--language", default="en")
    ap.add_argument("--aligner", default=None, help="a CTC model: hub id or local folder")
    args = ap.parse_args()

    from pipelines import api

    with tempfile.TemporaryDirectory() as out:
        result = api.transcribe(
            [str(args.audio)],
            out,
            transcription__word_timestamps=True,
            transcription__language=args.language,
            transcription__aligner=args.aligner,
        )
        transcripts = result.table("transcripts").sort_values("start")
    words = [dict(w) for row in transcripts["words"] for w in row]
    figures = word_timing_scores(read_stm(args.stm), words)
    print(
        f"WER {100 * figures['wer']:.1f} % over {figures['reference_words']} reference words; "
        f"{figures['aligned_words']} of {figures['recognised_words']} recognised words aligned"
    )
    for tol, share in figures["inside"].items():
        print(f"inside their utterance (tolerance {tol:g} s): {100 * share:.1f} %")
    save(
        {
            "machine": machine(),
            "stm": str(args.stm),
            "audio": str(args.audio),
            "aligner": args.aligner,
            **figures,
        },
        "word_timestamps",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
