"""Make the real-speech examples from ``shared/realdata`` (see README.md here).

    python examples/real/make_fixtures.py [--realdata ../shared/realdata]

Converts the chosen recordings to 16-bit FLAC (a third of their float WAV size) and copies their
reference RTTM; copies a few utterances of three LibriSpeech speakers and two real noise
recordings in ``shared/realdata``'s own layout (``voices/``), from which
``benchmarks/real_conversations.py --realdata examples/real/voices`` builds conversations whose
people recur across files. Run once; the outputs are committed.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import soundfile as sf

HERE = Path(__file__).resolve().parent
#: pyannote's sample conversation (2 speakers, overlap) and two AMI meeting excerpts whose
#: participant MEE067 recurs (3 and 2 speakers).
FILES = ("pyannote_sample", "pyannote_debug_trn00", "pyannote_debug_trn03")
#: For the tests only (``tests/data/real``, not the demo): an AMI excerpt whose third
#: participant says 0.6 s alone, and one where a participant talks over another for 3 s.
TEST_FILES = ("pyannote_debug_trn04", "pyannote_debug_trn06")
TESTS = HERE.parents[1] / "tests" / "data" / "real"
SPEAKERS = ("libri_1688", "libri_2414", "libri_533")
UTTERANCES = 3  # per speaker: the first three (the generator's dev split)
NOISES = ("cmgan_vbd_p232_003", "cmgan_vbd_p232_005")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--realdata", default=str(HERE.parents[2] / "shared" / "realdata"))
    args = parser.parse_args()
    diar = Path(args.realdata) / "diar"
    (HERE / "rttm").mkdir(exist_ok=True)
    (HERE / "audio").mkdir(exist_ok=True)
    (TESTS / "audio").mkdir(parents=True, exist_ok=True)
    (TESTS / "rttm").mkdir(exist_ok=True)
    for name in FILES + TEST_FILES:
        root = TESTS if name in TEST_FILES else HERE
        audio, rate = sf.read(diar / "audio" / f"{name}.wav", dtype="float32")
        sf.write(root / "audio" / f"{name}.flac", audio, rate, subtype="PCM_16")
        shutil.copy(diar / "rttm" / f"{name}.rttm", root / "rttm" / f"{name}.rttm")
        (root / "rttm" / f"{name}.rttm").chmod(0o644)
    voices = HERE / "voices"
    with open(Path(args.realdata) / "speakers" / "speakers.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    kept = []
    for speaker in SPEAKERS:
        mine = sorted((r for r in rows if r["speaker"] == speaker), key=lambda r: r["path"])
        for row in mine[:UTTERANCES]:
            target = voices / "speakers" / row["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(args.realdata) / "speakers" / row["path"], target)
            target.chmod(0o644)
            kept.append(row)
    with open(voices / "speakers" / "speakers.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    with open(Path(args.realdata) / "enh" / "pairs.csv", newline="") as f:
        pairs = [r for r in csv.DictReader(f) if Path(r["noisy"]).stem in NOISES]
    for row in pairs:
        for key in ("noisy", "clean"):
            audio, rate = sf.read(Path(args.realdata) / row[key], dtype="float32")
            row[key] = str(Path(row[key]).with_suffix(".flac"))
            (voices / row[key]).parent.mkdir(parents=True, exist_ok=True)
            sf.write(voices / row[key], audio, rate, subtype="PCM_16")
    with open(voices / "enh" / "pairs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(pairs[0]))
        writer.writeheader()
        writer.writerows(pairs)


if __name__ == "__main__":
    main()
