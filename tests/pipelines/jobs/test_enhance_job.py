"""``voxflow enhance``: whole files denoised into OUT/audio, mirrored and sanitised names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from helpers import SAMPLE

from audio_ops.evaluation import mix_at_snr, si_sdr, synthetic_noise
from audio_ops.io import load_audio
from pipelines.cli import main
from pipelines.jobs.enhance import UnsafePathError, output_location, safe_relative_path


@pytest.mark.parametrize(
    "rel,expected",
    [
        ("a/b/c.wav", "a/b/c.flac"),
        ("../../x.wav", "x.flac"),
        ("/etc/passwd.wav", "etc/passwd.flac"),
        ("a/./b/../c.mp3", "a/b/c.flac"),
        ("..evil.wav", "..evil.flac"),
        ("C:\\\\data\\\\y.wav", "C_/data/y.flac"),
    ],
)
def test_output_names_never_leave_the_output_folder(tmp_path, rel, expected):
    assert safe_relative_path(rel) == expected
    target = output_location(str(tmp_path), rel)
    assert target.startswith(str(tmp_path / "audio") + "/")


@pytest.mark.parametrize("rel", ["..", "/", "", "../..", "./.."])
def test_unusable_names_are_refused(rel):
    with pytest.raises(UnsafePathError):
        safe_relative_path(rel)


@pytest.mark.integration
def test_enhance_denoises_and_mirrors_paths(ray_local, tmp_path):
    clean, rate = load_audio(str(SAMPLE / "audio" / "conv01_clean_3spk.flac"), 16000)
    clean = clean[: 20 * rate]
    rng = np.random.default_rng(3)
    noisy = mix_at_snr(clean, synthetic_noise("white", len(clean), rate, rng), 0.0).astype(
        np.float32
    )
    corpus = tmp_path / "corpus"
    (corpus / "calls" / "day1").mkdir(parents=True)
    sf.write(corpus / "calls" / "day1" / "noisy.wav", noisy, rate, subtype="FLOAT")
    sf.write(corpus / "calls" / "clean.wav", clean, rate, subtype="FLOAT")
    (tmp_path / "lists").mkdir()
    pd.DataFrame({"path": ["../corpus/calls/day1/noisy.wav"]}).to_csv(
        tmp_path / "lists" / "m.csv", index=False
    )
    out = tmp_path / "out"
    assert main(["enhance", str(corpus), "--out", str(out), "-q"]) == 0
    files = pd.read_parquet(out / "files").set_index("rel_path")
    assert files.loc["calls/day1/noisy.wav", "enhancement"] == "dfn3"
    assert files.loc["calls/clean.wav", "enhancement"] == "none"
    enhanced, out_rate = sf.read(out / "audio" / "calls" / "day1" / "noisy.flac", dtype="float32")
    assert out_rate == rate and len(enhanced) == len(noisy)
    assert si_sdr(clean, enhanced) - si_sdr(clean, noisy) >= 6.0
    untouched, _ = sf.read(out / "audio" / "calls" / "clean.flac", dtype="float32")
    assert np.max(np.abs(untouched - clean)) < 1e-4  # clean input passes through (16-bit)
    # A manifest naming a file through '..' still writes inside OUT/audio.
    out2 = tmp_path / "out2"
    assert main(["enhance", str(tmp_path / "lists" / "m.csv"), "--out", str(out2), "-q"]) == 0
    written = sorted(p.relative_to(out2) for p in out2.rglob("*.flac"))
    assert [str(p) for p in written] == ["audio/corpus/calls/day1/noisy.flac"]


@pytest.mark.integration
def test_folders_enhanced_by_an_older_default_are_refused_and_resume_with_its_options(
    ray_local, tmp_path, capsys
):
    """The babble check (``max_removed_speech``, 2026-12-06) and the gentler middle-band gate
    (``mid_gate_atten_db``, 10 dB since 2026-12-08) change what the default does, so a folder
    enhanced without them (written here with ``max_removed_speech: null`` and
    ``mid_gate_atten_db: 20``, which hash as the options did before) is refused by the default,
    naming both hashes, and is found finished when given those options again."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    clean, rate = load_audio(str(SAMPLE / "audio" / "conv01_clean_3spk.flac"), 16000)
    sf.write(corpus / "a.wav", clean[: 5 * rate], rate, subtype="FLOAT")
    off = tmp_path / "off.yaml"
    off.write_text("enhancement: {max_removed_speech: null, mid_gate_atten_db: 20}\n")
    from audio_ops.enhancement import EnhancementConfig
    from pipelines.engine.config import config_hash, hashed_options, load_config
    from pipelines.jobs.enhance import EnhanceRunConfig

    # Older versions hashed the options as given ({} for the defaults).
    before = config_hash(load_config(EnhanceRunConfig, None, {}))
    nulled = load_config(EnhanceRunConfig, str(off), None)
    assert config_hash(hashed_options(nulled, "enhancement", EnhancementConfig)) == before
    out = tmp_path / "out"
    assert main(["enhance", str(corpus), "--out", str(out), "--config", str(off), "-q"]) == 0
    capsys.readouterr()
    assert main(["enhance", str(corpus), "--out", str(out), "-q"]) == 2
    assert "hash" in capsys.readouterr().err
    assert main(["enhance", str(corpus), "--out", str(out), "--config", str(off)]) == 0
    assert "nothing to do" in capsys.readouterr().err
