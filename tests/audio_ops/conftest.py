"""Fixtures of the audio_ops tests: a sample conversation and its reference, the bundled speaker
encoders, the windows method's results on the sample (each made once per session)."""

from __future__ import annotations

import pytest
from helpers import SAMPLE

from audio_ops.diarization import DiarizationConfig, diarize_audio
from audio_ops.embedding import (
    CAMPPlusEncoder,
    EmbeddingConfig,
    GE2EEncoder,
    make_encoder,
)
from audio_ops.io import load_audio
from audio_ops.vad import SileroVAD
from pipelines.reports.evaluate import read_rttm

CONV = SAMPLE / "audio" / "conv01_clean_3spk.flac"


@pytest.fixture(scope="session")
def conv():
    audio, _ = load_audio(str(CONV), 16000)
    return audio, read_rttm(SAMPLE / "rttm" / "conv01_clean_3spk.rttm")


@pytest.fixture(scope="session")
def encoder():
    return GE2EEncoder(device="cpu")


@pytest.fixture(scope="session")
def campplus():
    encoder = make_encoder(EmbeddingConfig(model="campplus", device="cpu"))
    assert isinstance(encoder, CAMPPlusEncoder)
    return encoder


@pytest.fixture(scope="session")
def sample_results(encoder):
    config = DiarizationConfig(chunk=DiarizationConfig().chunk.__class__(seconds=20.0, overlap=2.0))
    vad = SileroVAD()
    results = {}
    for path in sorted((SAMPLE / "audio").iterdir()):
        audio, _ = load_audio(str(path), 16000)
        results[path.stem] = diarize_audio(audio, config, vad, encoder)
    return results


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test, restored after it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
