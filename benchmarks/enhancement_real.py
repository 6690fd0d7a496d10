"""Speech enhancement on real recorded noise: SI-SDR gain per input SNR band, per method.

    python benchmarks/enhancement_real.py                    # everything, about 8 minutes
    python benchmarks/enhancement_real.py --split tune       # p232 only (the policy was tuned on it)
    python benchmarks/enhancement_real.py --split held_out   # p257 only (never tuned on)

The pairs are ``../shared/realdata/enh/pairs.csv``: 25 VoiceBank-DEMAND test utterances
(recorded DEMAND noise, 48 kHz resampled to 16 kHz here), each with its clean reference and the
true input SNR. The auto policy's thresholds (:class:`audio_ops.enhancement.EnhancementConfig`)
were chosen on speaker p232 (14 pairs, the ``tune`` split); speaker p257 (11 pairs, ``held_out``)
was run once after the choice and is the figure reported. Each noisy file goes through ``none``,
``dfn3`` (unlimited attenuation), ``dfn3_18`` (limited to 18 dB), ``spectral_gating``, the
``auto`` default, ``auto_dfn3_upper`` (auto with DFN3 limited to 18 dB from 15 dB estimated
SNR, ``dfn3_upper_snr_db: 15``; the default leaves it unlimited), ``auto_dec07`` (auto as on
2026-12-07: DFN3 unlimited, the middle band gated by up to 20 dB where the default now takes
10), ``auto_no_check`` (that without the babble check, as before 2026-12-06) and
``auto_before`` (the policy before 2026-12-05: DFN3 below 8 dB estimated SNR, the gate up to
20, nothing above), and is scored by SI-SDR against the clean reference.

The pairs above 15 dB are few (4 tuned on, 1 held out), so a remixed set checks the "no loss on
clean-ish input" side: each pair's recorded noise (noisy minus clean, sample-aligned) added back to
its clean utterance at 15, 20 and 25 dB SNR (the ratio of mean powers, as ``pairs.csv`` measures
it). Real speech, real noise, only the gain changed; p257's remixes are held out like p257.
VoiceBank's "clean" references carry a noise floor of their own (p257's read 22.5-26 dB to the
SNR estimate), which any enhancer removes and SI-SDR then counts as error; so the held-out
speakers of the babble set (LibriSpeech, other recordings) are remixed the same way over p257's
noises too.

``--dnsmos`` (needs ``pip install speechmos``, whose wheel ships Microsoft's DNSMOS P.835 ONNX
models, MIT) also scores the remixes without a reference: DNSMOS's SIG (speech distortion), BAK
(background noise) and OVRL on a 1-5 scale for the clean reference, the input and the outputs of
DFN3, the gate and auto. Where the references carry noise of their own, this says whether an
output lost speech quality or only lost the reference's noise.

A third set checks the policy where DFN3 is known to fail: real three-voice babble. Each of the
ten LibriSpeech speakers in ``../shared/realdata/speakers`` reads one utterance over the sum of
three other speakers' utterances (each at unit RMS), mixed at 5, 10, 15 and 20 dB SNR. The babble
check's threshold was set looking at the first four targets (``tune``) and p232; the other six
(``held_out``) were run after.

Prints a Markdown table per split and writes ``benchmarks/results/enhancement_real.json``.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, save  # noqa: E402

REALDATA = Path(
    os.environ.get("VOXFLOW_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata")
)
RATE = 16000
SPLITS = {"tune": "p232", "held_out": "p257"}
BANDS = ((0.0, 10.0, "0-10 dB"), (10.0, 15.0, "10-15 dB"), (15.0, 99.0, ">= 15 dB"))
METHODS = (
    "none",
    "dfn3",
    "dfn3_18",
    "spectral_gating",
    "auto",
    "auto_dfn3_upper",
    "auto_dec07",
    "auto_no_check",
    "auto_before",
)
#: Babble targets: the first four speakers were looked at to set the check's threshold
#: (``max_removed_speech``), the other six were run once after (held out).
BABBLE_SPLITS = {"tune": range(0, 4), "held_out": range(4, 10)}


def pairs(split: str) -> list[dict]:
    with open(REALDATA / "enh" / "pairs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    speakers = set(SPLITS.values()) if split == "all" else {SPLITS[split]}
    out = []
    for row in rows:
        speaker = Path(row["noisy"]).stem.split("_")[-2]
        if speaker in speakers:
            out.append({**row, "speaker": speaker, "snr_db": float(row["snr_db"])})
    return out


def babble_mixtures(targets=range(4)):
    """(name, snr, clean, mixture) for the real three-voice babble check: each target speaker's
    first utterance over the second utterances of the next three speakers."""
    from audio_ops.evaluation import mix_at_snr
    from audio_ops.io import load_audio

    speakers = sorted((REALDATA / "speakers").glob("libri_*"))

    def utterance(speaker: Path, index: int) -> np.ndarray:
        return load_audio(str(sorted(speaker.glob("*.flac"))[index]), RATE)[0]

    for t in targets:
        clean = utterance(speakers[t], 0)
        babble = np.zeros(clean.size)
        for k in range(1, 4):
            voice = np.resize(utterance(speakers[(t + k) % len(speakers)], 1), clean.size)
            babble += voice / np.sqrt(np.mean(voice.astype(np.float64) ** 2) + 1e-12)
        for snr in (5.0, 10.0, 15.0, 20.0):
            mixture = mix_at_snr(clean, babble.astype(np.float32), snr)
            yield f"{speakers[t].name}+babble", snr, clean, mixture


#: Input SNRs of the remixed set (dB).
REMIX_SNRS = (15.0, 20.0, 25.0)


def remixes(name: str, noise: np.ndarray, clean: np.ndarray):
    """(name, snr, mixture): a pair's recorded ``noise`` (noisy minus clean) put back on its
    ``clean`` utterance at each of :data:`REMIX_SNRS`."""
    from audio_ops.evaluation import mix_at_snr

    for snr in REMIX_SNRS:
        yield f"{name}@{snr:.0f}dB", snr, mix_at_snr(clean, noise, snr)


def libri_remixes(noises: list[np.ndarray], targets=BABBLE_SPLITS["held_out"]):
    """(name, snr, clean, mixture): each held-out babble target's third utterance over one of
    ``noises`` (in turn, looped to its length) at each of :data:`REMIX_SNRS`."""
    from audio_ops.evaluation import mix_at_snr
    from audio_ops.io import load_audio

    speakers = sorted((REALDATA / "speakers").glob("libri_*"))
    for i, t in enumerate(targets):
        clean = load_audio(str(sorted(speakers[t].glob("*.flac"))[2]), RATE)[0]
        noise = np.resize(noises[i % len(noises)], clean.size)
        for snr in REMIX_SNRS:
            yield f"{speakers[t].name}@{snr:.0f}dB", snr, clean, mix_at_snr(clean, noise, snr)


#: What ``--dnsmos`` scores: the reference, the input, and these methods' outputs.
DNSMOS_METHODS = ("dfn3", "spectral_gating", "auto")
DNSMOS_SCORES = ("ovrl", "sig", "bak")


def dnsmos(audio: np.ndarray) -> dict[str, float]:
    """DNSMOS P.835 of 16 kHz ``audio`` (``speechmos``'s bundled models): OVRL, SIG, BAK."""
    from speechmos import dnsmos as model

    scores = model.run(np.clip(audio, -1.0, 1.0).astype(np.float32), RATE)
    return {k: float(scores[f"{k}_mos"]) for k in DNSMOS_SCORES}


def run_methods(
    methods: dict, clean: np.ndarray, mixture: np.ndarray, row: dict, quality=None
) -> dict:
    """``row`` with each method's SI-SDR gain over ``mixture`` and, for the auto policies, the
    choice, the attenuation limit and the SNR estimate; with ``quality`` (:func:`dnsmos`), also
    its scores of the reference, the input and the outputs of :data:`DNSMOS_METHODS`
    (``dnsmos_<what>_<score>``)."""
    from audio_ops.evaluation import si_sdr

    n = clean.size
    base = si_sdr(clean, mixture)
    row["si_sdr_in_db"] = base
    scored = {"clean": clean, "input": mixture} if quality else {}
    for method, run in methods.items():
        out = run(mixture)
        if isinstance(out, tuple):
            out, info = out
            row[f"{method}_choice"] = info["enhancement"]
            row[f"{method}_atten_db"] = info["enhancement_atten_db"]
            row["snr_estimate_db"] = info["snr_before_db"]
        row[f"gain_{method}_db"] = si_sdr(clean, out[:n]) - base
        if quality and method in DNSMOS_METHODS:
            scored[method] = out[:n]
    for what, audio in scored.items():
        for score, value in quality(audio).items():
            row[f"dnsmos_{what}_{score}"] = value
    return row


def dnsmos_table(remix_rows: list[dict]) -> tuple[list[dict], list[str]]:
    """Mean DNSMOS per remix group (speaker, input SNR), and its Markdown table: OVRL, SIG and
    BAK of the reference, the input and each of :data:`DNSMOS_METHODS`."""
    columns = ("clean", "input", *DNSMOS_METHODS)
    table = []
    for speaker in sorted({r["speaker"] for r in remix_rows}):
        for label, group in remix_groups(remix_rows, speaker).items():
            if not group:
                continue
            entry = {"group": f"{speaker}, {label}", "n": len(group)}
            for what in columns:
                for score in DNSMOS_SCORES:
                    key = f"dnsmos_{what}_{score}"
                    entry[key] = float(np.mean([r[key] for r in group]))
            table.append(entry)
    lines = [
        "| remixes, input SNR | n | " + " | ".join(columns) + " |",
        "|---|---:|" + "---|" * len(columns),
    ]
    for t in table:
        cells = [
            " / ".join(f"{t[f'dnsmos_{what}_{score}']:.2f}" for score in DNSMOS_SCORES)
            for what in columns
        ]
        lines.append(f"| {t['group']} | {t['n']} | " + " | ".join(cells) + " |")
    return table, lines


def gain_table(groups: dict[str, list[dict]]) -> list[dict]:
    """Per group: its size, mean SNR estimate, and each method's mean and lowest gain."""
    table = []
    for name, group in groups.items():
        if not group:
            continue
        entry = {"group": name, "n": len(group)}
        entry["snr_estimate_db"] = float(np.mean([r["snr_estimate_db"] for r in group]))
        for m in METHODS:
            gains = [r[f"gain_{m}_db"] for r in group]
            entry[f"gain_{m}_db"] = float(np.mean(gains))
            entry[f"min_gain_{m}_db"] = float(np.min(gains))
        entry["auto_choices"] = dict(Counter(r["auto_choice"] for r in group))
        table.append(entry)
    return table


def remix_groups(remix_rows: list[dict], speaker: str) -> dict[str, list[dict]]:
    """``speaker``'s remixes by input SNR (``"15 dB"``: rows), in :data:`REMIX_SNRS` order."""
    mine = [r for r in remix_rows if r["speaker"] == speaker]
    return {f"{snr:.0f} dB": [r for r in mine if r["snr_db"] == snr] for snr in REMIX_SNRS}


def remix_table(remix_rows: list[dict], speaker: str) -> list[dict]:
    """:func:`gain_table` of ``speaker``'s remixes, one group per input SNR."""
    return gain_table(remix_groups(remix_rows, speaker))


def gain_lines(table: list[dict], label: str, choices: bool = False) -> list[str]:
    """A Markdown table of :func:`gain_table`'s rows."""
    lines = [
        f"| {label} | n | est. SNR | "
        + " | ".join(METHODS)
        + (" | auto chose |" if choices else " |"),
        "|---|---:|---:|" + "---:|" * len(METHODS) + ("---|" if choices else ""),
    ]
    for t in table:
        lines.append(
            f"| {t['group']} | {t['n']} | {t['snr_estimate_db']:.1f} | "
            + " | ".join(
                f"{t[f'gain_{m}_db']:+.2f} ({t[f'min_gain_{m}_db']:+.2f})" for m in METHODS
            )
            + " |"
            + (
                " " + ", ".join(f"{k} {v}" for k, v in sorted(t["auto_choices"].items())) + " |"
                if choices
                else ""
            )
        )
    return lines


def band(snr: float) -> str:
    return next(name for lo, hi, name in BANDS if lo <= snr < hi)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--split", choices=("all", *SPLITS), default="all")
    parser.add_argument(
        "--dnsmos", action="store_true", help="also score the remixes with DNSMOS (speechmos)"
    )
    args = parser.parse_args()
    quality = dnsmos if args.dnsmos else None
    if quality:
        try:
            import speechmos  # noqa: F401
        except ImportError:
            parser.error("--dnsmos needs speechmos: pip install speechmos (the bench extra)")

    from audio_ops.enhancement import EnhancementConfig, Enhancer, enhance, spectral_gate
    from audio_ops.evaluation import si_sdr
    from audio_ops.io import load_audio

    auto = Enhancer(EnhancementConfig())
    upper = Enhancer(EnhancementConfig(dfn3_upper_snr_db=15.0))
    dec07 = {"mid_gate_atten_db": 20.0}
    dec07_auto = Enhancer(EnhancementConfig(**dec07))
    no_check = Enhancer(EnhancementConfig(max_removed_speech=None, **dec07))
    before = Enhancer(
        EnhancementConfig(
            noisy_snr_db=8.0, clean_snr_db=20.0, mid_method="spectral_gating", **dec07
        )
    )
    methods = {
        "none": lambda x: x.copy(),
        "dfn3": lambda x: enhance(x, RATE),
        "dfn3_18": lambda x: enhance(x, RATE, atten_lim_db=18.0),
        "spectral_gating": lambda x: spectral_gate(x, RATE),
        "auto": lambda x: auto.enhance(x, RATE),
        "auto_dfn3_upper": lambda x: upper.enhance(x, RATE),
        "auto_dec07": lambda x: dec07_auto.enhance(x, RATE),
        "auto_no_check": lambda x: no_check.enhance(x, RATE),
        "auto_before": lambda x: before.enhance(x, RATE),
    }
    rows, remix_rows, held_out_noises = [], [], []
    for pair in pairs(args.split):
        noisy, _ = load_audio(str(REALDATA / pair["noisy"]), RATE)
        clean, _ = load_audio(str(REALDATA / pair["clean"]), RATE)
        n = min(noisy.size, clean.size)
        noisy, clean = noisy[:n], clean[:n]
        row = {
            "file": Path(pair["noisy"]).name,
            "speaker": pair["speaker"],
            "snr_db": pair["snr_db"],
            "band": band(pair["snr_db"]),
        }
        run_methods(methods, clean, noisy, row)
        # The clean reference itself as input: what auto does to speech that needs nothing.
        kept, info = auto.enhance(clean, RATE)
        row["clean_input_choice"] = f"{info['enhancement']}@{info['enhancement_atten_db']:.0f}"
        row["clean_input_snr_estimate_db"] = info["snr_before_db"]
        row["clean_input_si_sdr_db"] = si_sdr(clean, kept[:n])
        rows.append(row)
        print(
            f"{row['file']} true {row['snr_db']:4.1f} est {row['snr_estimate_db']:5.1f} "
            + " ".join(f"{m} {row[f'gain_{m}_db']:+5.1f}" for m in METHODS)
            + f" auto->{row['auto_choice']}@{row['auto_atten_db']:.0f}",
            file=sys.stderr,
            flush=True,
        )
        noise = noisy.astype(np.float64) - clean
        for name, snr, mixture in remixes(Path(pair["noisy"]).stem, noise, clean):
            remix = {"file": name, "speaker": pair["speaker"], "snr_db": snr}
            remix_rows.append(run_methods(methods, clean, mixture, remix, quality))
        if pair["speaker"] == SPLITS["held_out"]:
            held_out_noises.append(noise)
    for name, snr, clean, mixture in libri_remixes(held_out_noises) if held_out_noises else ():
        remix = {"file": name, "speaker": "librispeech", "snr_db": snr}
        remix_rows.append(run_methods(methods, clean, mixture, remix, quality))

    babble_rows = []
    babble_splits = (
        BABBLE_SPLITS if args.split == "all" else {args.split: BABBLE_SPLITS[args.split]}
    )
    mixtures = [
        (split, *m) for split, targets in babble_splits.items() for m in babble_mixtures(targets)
    ]
    for split, name, snr, clean, mixture in mixtures:
        row = run_methods(methods, clean, mixture, {"file": name, "split": split, "snr_db": snr})
        babble_rows.append(row)
        print(
            f"{name} {snr:4.1f} est {row['snr_estimate_db']:5.1f} "
            + " ".join(f"{m} {row[f'gain_{m}_db']:+5.1f}" for m in METHODS)
            + f" auto->{row['auto_choice']}",
            file=sys.stderr,
            flush=True,
        )

    tables: dict[str, list[dict]] = {}
    lines = []
    for speaker in sorted({r["speaker"] for r in rows}):
        split = next(s for s, p in SPLITS.items() if p == speaker)
        mine = [r for r in rows if r["speaker"] == speaker]
        table = gain_table({name: [r for r in mine if r["band"] == name] for *_, name in BANDS})
        tables[split] = table
        changed = [
            r["clean_input_si_sdr_db"] for r in mine if np.isfinite(r["clean_input_si_sdr_db"])
        ]
        clean_note = (
            f"Clean references as input: auto left {len(mine) - len(changed)} of {len(mine)} "
            f"untouched (estimated SNR {min(r['clean_input_snr_estimate_db'] for r in mine):.1f}"
            f"-{max(r['clean_input_snr_estimate_db'] for r in mine):.1f} dB)"
            + (
                f"; the others' output is {min(changed):.1f}-{max(changed):.1f} dB SI-SDR "
                "against their input"
                if changed
                else ""
            )
        )
        tables[f"{split}_clean_input"] = [{"note": clean_note}]
        lines += [
            f"{split} (speaker {speaker}): mean SI-SDR gain in dB (lowest in brackets)",
            "",
            *gain_lines(table, "true input SNR"),
            "",
            clean_note,
            "",
        ]
        remixed = remix_table(remix_rows, speaker)
        tables[f"{split}_remixed"] = remixed
        lines += [
            f"{split} (speaker {speaker}), its recorded noise put back at higher SNR: "
            "mean SI-SDR gain in dB (lowest in brackets)",
            "",
            *gain_lines(remixed, "input SNR", choices=True),
            "",
        ]
    libri = remix_table(remix_rows, "librispeech")
    if libri:
        tables["librispeech_remixed"] = libri
        lines += [
            "LibriSpeech (the babble set's held-out speakers) over p257's recorded noises: "
            "mean SI-SDR gain in dB (lowest in brackets)",
            "",
            *gain_lines(libri, "input SNR", choices=True),
            "",
        ]
    if quality:
        tables["remixed_dnsmos"], dnsmos_lines = dnsmos_table(remix_rows)
        lines += [
            "DNSMOS of the remixes (mean OVRL / SIG / BAK, 1-5, no reference used)",
            "",
            *dnsmos_lines,
            "",
        ]
    babble_table = gain_table(
        {
            f"{split}, {snr:.0f} dB": [
                r for r in babble_rows if r["snr_db"] == snr and r["split"] == split
            ]
            for split, snr in sorted({(r["split"], r["snr_db"]) for r in babble_rows}, reverse=True)
        }
    )
    lines += [
        "Real three-voice babble (LibriSpeech): mean SI-SDR gain in dB (lowest in brackets)",
        "",
        *gain_lines(babble_table, "set, input SNR", choices=True),
    ]
    tables["babble"] = babble_table
    markdown = "\n".join(lines)
    report = {
        "description": "SI-SDR gain (dB) on real VoiceBank-DEMAND pairs per true input SNR band",
        "split": args.split,
        "splits": SPLITS,
        "config": asdict(EnhancementConfig()),
        "tables": tables,
        "rows": rows,
        "remix_rows": remix_rows,
        "babble_rows": babble_rows,
        "machine": machine(),
        "markdown": markdown,
    }
    path = save(
        report, "enhancement_real" if args.split == "all" else f"enhancement_real_{args.split}"
    )
    print(markdown)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
