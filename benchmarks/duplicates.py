"""Near-duplicate detection on real speech with known copies: pair precision and recall.

    python benchmarks/duplicates.py        # about a minute on 2 cores

Two corpora are built from ``../shared/realdata`` (real recordings, see its README):

- ``librispeech`` (the set the thresholds were looked at on): the 100 LibriSpeech utterances of
  10 speakers; every third one is in the corpus four more times.
- ``ami`` (held out from the bit error rate thresholds, not from the landmark index, whose
  parameters were looked at on both): the 10 real meeting recordings (AMI excerpts and
  pyannote's sample, 30 s each) cut into clips of 3-8 s at random places, so clips of one
  meeting share its speakers and room; every third clip is copied the same four ways.
- ``voicebank`` (held out from everything, first run 2026-12-06 after the index was fixed): the
  25 clean VoiceBank utterances of ``enh/clean`` (two speakers), copied the same way.

The four copies: MP3 at 22.05 kHz and 32 kb/s; 10 dB quieter; 0.5 s later (silence first) through
an MP3 at 24 kHz; its first 0.5 s cut, 6 dB louder, through an MP3 at 16 kHz and 24 kb/s. Each
clip is fingerprinted (:func:`audio_ops.duplicates.fingerprint` and
:func:`~audio_ops.duplicates.landmarks`) and the corpus grouped by
:class:`audio_ops.duplicates.DuplicateIndex` twice in the same run: with the default landmark
index and with ``index: minhash`` (the method before 2026-12-06). A pair of clips is a true duplicate
when both come from the same source clip; precision and recall are over pairs, and "wrong
same-speaker pairs" counts grouped pairs of two different source clips of one speaker (or one
meeting). Also reported: the bit error rates of true copies and of the closest different
clips, fingerprint speed (x real time) and grouping time.

Writes ``benchmarks/results/duplicates.json``.
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, save  # noqa: E402

REALDATA = Path(
    os.environ.get("VOXFLOW_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata")
)
RATE = 16000


def mp3(audio: np.ndarray, rate: int, kbps: int) -> np.ndarray:
    import av

    from audio_ops.io import resample

    x = resample(audio, RATE, rate)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=rate, layout="mono")
        stream.bit_rate = kbps * 1000
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(x[None].astype(np.float32)), format="fltp", layout="mono"
        )
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    buffer.seek(0)
    with av.open(buffer) as container:
        decoded = np.concatenate([f.to_ndarray().mean(0) for f in container.decode(audio=0)])
    return resample(decoded.astype(np.float32), rate, RATE)


def copies(audio: np.ndarray) -> list[np.ndarray]:
    half = RATE // 2
    return [
        mp3(audio, 22050, 32),
        audio * 10 ** (-10 / 20),
        np.concatenate([np.zeros(half, np.float32), mp3(audio, 24000, 48)]),
        mp3(audio[half:], 16000, 24) * 2.0,
    ]


def librispeech() -> list[tuple[str, np.ndarray]]:
    """(speaker, audio) per utterance."""
    from audio_ops.io import load_audio

    files = sorted((REALDATA / "speakers").glob("libri_*/*.flac"))
    return [(f.parent.name, load_audio(str(f), RATE)[0]) for f in files]


def ami(rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """(meeting, clip) of 3-8 s, cut at random places without overlap."""
    from audio_ops.io import load_audio

    out = []
    for path in sorted((REALDATA / "diar" / "audio").glob("*.wav")):
        audio = load_audio(str(path), RATE)[0]
        position = int(rng.uniform(0, 1) * RATE)
        while True:
            length = int(rng.uniform(3.0, 8.0) * RATE)
            if position + length > audio.size:
                break
            out.append((path.stem, audio[position : position + length]))
            position += length + int(rng.uniform(0.2, 1.0) * RATE)
    return out


def voicebank() -> list[tuple[str, np.ndarray]]:
    """(speaker, audio) of the 25 clean VoiceBank utterances."""
    from audio_ops.io import load_audio

    files = sorted((REALDATA / "enh" / "clean").glob("*.wav"))
    return [(f.stem.split("_")[2], load_audio(str(f), RATE)[0]) for f in files]


def with_copies(sources: list[tuple[str, np.ndarray]]) -> tuple[list, list[int], list[str]]:
    """``(clips, origin, label)``: every source, each third one followed by its four
    :func:`copies`; ``origin`` is the source's index and ``label`` its speaker (or meeting)."""
    clips, origin, label = [], [], []
    for index, (who, audio) in enumerate(sources):
        for clip in [audio, *(copies(audio) if index % 3 == 0 else [])]:
            clips.append(clip)
            origin.append(index)
            label.append(who)
    return clips, origin, label


def _group(clips: list[np.ndarray], prints, marks, index: str) -> tuple[list[int], int, int]:
    """``(group, candidate pairs, verified pairs)`` of the corpus by one candidate method."""
    from audio_ops.duplicates import DuplicateConfig, DuplicateIndex, candidate_pairs, minhash

    with DuplicateIndex(len(clips), DuplicateConfig(index=index)) as dup:
        for i in range(len(clips)):
            dup.add(i, prints[i], marks[i])
        group, _, pairs = dup.group()
        candidates = dup.candidates_seen
    if index == "minhash":  # the pairs sharing a MinHash value (group_duplicates counts none)
        candidates = len(set(candidate_pairs(np.stack([minhash(p) for p in prints]))))
    return group.tolist(), candidates, len(pairs)


def evaluate(name: str, sources: list[tuple[str, np.ndarray]]) -> dict:
    from audio_ops.duplicates import FP_HOP, DuplicateConfig, bit_error_rate, fingerprint, landmarks

    clips, origin, speaker = with_copies(sources)
    seconds = sum(c.size for c in clips) / RATE
    t0 = time.perf_counter()
    prints = [fingerprint(c, RATE) for c in clips]
    t_print = time.perf_counter() - t0
    t0 = time.perf_counter()
    marks = [landmarks(c, RATE) for c in clips]
    t_marks = time.perf_counter() - t0
    n = len(clips)
    result = {
        "set": name,
        "clips": n,
        "source_clips": len(sources),
        "audio_seconds": seconds,
        "fingerprint_x_real_time": seconds / t_print,
        "landmarks_x_real_time": seconds / t_marks,
        "landmarks_per_second": sum(m.size for m in marks) / seconds,
    }
    for index in ("landmarks", "minhash"):
        t0 = time.perf_counter()
        group, candidates, verified = _group(clips, prints, marks, index)
        t_group = time.perf_counter() - t0
        tp = fp = fn = wrong_same_speaker = 0
        for i in range(n):
            for j in range(i + 1, n):
                truth = origin[i] == origin[j]
                found = group[i] >= 0 and group[i] == group[j]
                tp += truth and found
                fp += found and not truth
                fn += truth and not found
                wrong_same_speaker += found and not truth and speaker[i] == speaker[j]
        result[index] = {
            "true_pairs": tp + fn,
            "precision": tp / (tp + fp) if tp + fp else 1.0,
            "recall": tp / (tp + fn) if tp + fn else 1.0,
            "wrong_same_speaker_pairs": wrong_same_speaker,
            "candidate_pairs": candidates,
            "candidate_share_of_pairs": candidates / (n * (n - 1) / 2),
            "verified_pairs": verified,
            "group_seconds": t_group,
        }
        r = result[index]
        print(
            f"{name}, {index}: {n} clips ({seconds / 60:.1f} min), precision "
            f"{r['precision']:.3f}, recall {r['recall']:.3f}, wrong same-speaker pairs "
            f"{wrong_same_speaker}, candidates {candidates} "
            f"({100 * r['candidate_share_of_pairs']:.1f} % of pairs), grouping {t_group:.2f} s",
            flush=True,
        )
    config = DuplicateConfig()
    shift = int(round(config.max_shift * RATE / FP_HOP))
    copy_bers, other_bers = [], []
    for i in range(n):
        for j in range(i + 1, n):
            if origin[i] == origin[j]:
                copy_bers.append(bit_error_rate(prints[i], prints[j], shift, config.min_overlap)[0])
            elif speaker[i] == speaker[j]:
                other_bers.append(
                    bit_error_rate(prints[i], prints[j], shift, config.min_overlap)[0]
                )
    result.update(
        copy_ber_max=float(max(copy_bers)),
        copy_ber_mean=float(np.mean(copy_bers)),
        different_same_speaker_ber_min=float(min(other_bers)),
        different_same_speaker_pairs=len(other_bers),
    )
    print(
        f"  copy BER <= {result['copy_ber_max']:.3f}, different clips of one speaker BER >= "
        f"{result['different_same_speaker_ber_min']:.3f}; fingerprint "
        f"{result['fingerprint_x_real_time']:.0f}x, landmarks "
        f"{result['landmarks_x_real_time']:.0f}x real time "
        f"({result['landmarks_per_second']:.0f} a second)",
        flush=True,
    )
    return result


def main() -> None:
    rng = np.random.default_rng(20261205)
    results = [
        evaluate("librispeech", librispeech()),
        evaluate("ami", ami(rng)),
        evaluate("voicebank (held out)", voicebank()),
    ]
    lines = [
        "| set | clips | true pairs | candidates | method | precision | recall "
        "| wrong same-speaker pairs | copy BER max | different clips' BER min |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for index in ("landmarks", "minhash"):
            m = r[index]
            lines.append(
                f"| {r['set']} | {r['clips']} | {m['true_pairs']} | "
                f"{m['candidate_pairs']} ({100 * m['candidate_share_of_pairs']:.1f} %) | "
                f"{index} | {m['precision']:.3f} | {m['recall']:.3f} | "
                f"{m['wrong_same_speaker_pairs']} | {r['copy_ber_max']:.3f} | "
                f"{r['different_same_speaker_ber_min']:.3f} |"
            )
    markdown = "\n".join(lines)
    path = save({"results": results, "machine": machine(), "markdown": markdown}, "duplicates")
    print(markdown)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
