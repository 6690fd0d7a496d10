"""Speaker embeddings (audio_ops.embedding, audio_ops.models): GE2E, CAM++, WavLM by reference, weights pinned and loaded safely."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from audio_ops.embedding import (
    EmbeddingConfig,
    GE2EEncoder,
    grid_windows,
    loudness_gain,
    make_encoder,
)
from audio_ops.models import ModelError, ModelRef, resolve


def test_ge2e_equals_resemblyzer(conv, encoder):
    import torch
    from resemblyzer import VoiceEncoder
    from resemblyzer.audio import normalize_volume, wav_to_mel_spectrogram

    audio, _ = conv
    reference = VoiceEncoder(device="cpu", verbose=False)
    for start in (16000, 16000 * 9):
        window = normalize_volume(audio[start : start + 24000], -30)
        mel = wav_to_mel_spectrogram(window)[:150]
        expected = reference(torch.from_numpy(mel[None])).detach().numpy()[0]
        ours = encoder.embed(audio, np.array([start]), 24000)[0]
        # resemblyzer zero-pads the window's own mel frames at its edges; voxflow slices the
        # chunk's spectrogram (real context at the edges), so the two differ only there.
        assert float(expected @ ours) > 0.998


def _assert_separates_voices(conv, encoder, margin):
    audio, turns = conv
    by_voice: dict[str, list[np.ndarray]] = {}
    for t in turns:
        if t.duration >= 2.0:
            start = int((t.start + 0.2) * 16000)
            by_voice.setdefault(t.speaker, []).append(
                encoder.embed(audio, np.array([start]), 24000)[0]
            )
    voices = sorted(by_voice)
    assert len(voices) == 3
    same = [a @ b for v in voices for i, a in enumerate(by_voice[v]) for b in by_voice[v][i + 1 :]]
    diff = [
        a @ b
        for i, v in enumerate(voices)
        for w in voices[i + 1 :]
        for a in by_voice[v]
        for b in by_voice[w]
    ]
    assert np.mean(same) > np.mean(diff) + margin
    assert min(same) > np.mean(diff)


def test_embeddings_separate_voices(conv, encoder):
    _assert_separates_voices(conv, encoder, 0.2)


def test_campplus_separates_voices(conv, campplus):
    _assert_separates_voices(conv, campplus, 0.2)


def test_campplus_is_level_invariant(conv, campplus):
    audio, _ = conv
    starts = np.array([16000, 16000 * 5])
    loud = campplus.embed(audio, starts, 24000)
    quiet = campplus.embed(audio * 0.05, starts, 24000)
    assert loud.shape == (2, 192)
    assert np.min(np.sum(loud * quiet, axis=1)) > 0.999


def test_campplus_slices_equal_the_reference_per_window_features(conv, campplus):
    """A window sliced from the chunk's filterbanks embeds as 3D-Speaker's own recipe does on the
    window alone (Kaldi fbank of the window at -30 dBFS, mean subtracted)."""
    import torch
    import torchaudio.compliance.kaldi as kaldi

    audio, _ = conv
    start = 160 * 700  # on the 10 ms frame grid
    window = np.ascontiguousarray(audio[start : start + 24000])
    window = torch.from_numpy(window * loudness_gain(window[None])[0])[None]
    feats = kaldi.fbank(window, num_mel_bins=80, sample_frequency=16000, dither=0.0)
    with torch.inference_mode():
        expected = campplus.network((feats - feats.mean(0, keepdim=True))[None])[0].numpy()
    expected = expected / np.linalg.norm(expected)
    ours = campplus.embed(audio, np.array([start]), 24000)[0]
    assert float(expected @ ours) > 0.9999


def test_campplus_in_onnxruntime_equals_pytorch(conv, tmp_path, monkeypatch):
    """On the CPU CAM++ runs in onnxruntime from a one-time export: the same embeddings as
    PyTorch (windows and one long input), the export cached and reused, a damaged cache file
    exported again, and a failed export falls back to PyTorch (or is an error when ``onnx`` is
    asked for)."""
    import torch

    monkeypatch.setenv("VOXFLOW_CACHE", str(tmp_path))
    audio, _ = conv
    onnx = make_encoder(EmbeddingConfig(model="campplus", device="cpu"))
    plain = make_encoder(EmbeddingConfig(model="campplus", device="cpu", runtime="torch"))
    assert onnx.session is not None and plain.session is None
    (cached,) = tmp_path.glob("campplus-*.onnx")
    starts = np.arange(0, len(audio) - 24000, 8000)
    a, b = onnx.embed(audio, starts, 24000), plain.embed(audio, starts, 24000)
    assert np.min(np.sum(a * b, axis=1)) > 0.9999
    whole = 16000 * 20
    a, b = (e.embed(audio[:whole], np.zeros(1, np.int64), whole) for e in (onnx, plain))
    assert float(a[0] @ b[0]) > 0.9999
    stamp = cached.stat().st_mtime_ns
    assert make_encoder(EmbeddingConfig(model="campplus", device="cpu")).session is not None
    assert cached.stat().st_mtime_ns == stamp  # reused, not exported again
    cached.write_bytes(b"not onnx")
    again = make_encoder(EmbeddingConfig(model="campplus", device="cpu"))
    assert again.session is not None and cached.stat().st_size > 10**6
    cached.unlink()

    def broken(*args, **kwargs):
        raise RuntimeError("no exporter here")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.warns(UserWarning, match="CAM\\+\\+ runs in PyTorch"):
        fallback = make_encoder(EmbeddingConfig(model="campplus", device="cpu"))
    assert fallback.session is None
    with pytest.raises(ModelError, match="cannot run in onnxruntime"):
        make_encoder(EmbeddingConfig(model="campplus", device="cpu", runtime="onnx"))
    assert not list(tmp_path.glob("*.part"))  # no half-written export left in the cache
    with pytest.raises(ValueError, match="runtime"):
        EmbeddingConfig(runtime="tensorrt")


def test_campplus_refuses_weights_of_another_network(tmp_path):
    from audio_ops.models import BUNDLED, package_file

    ge2e = package_file(BUNDLED["resemblyzer-ge2e"].package, "pretrained.pt")
    with pytest.raises(ModelError, match="not CAM"):
        make_encoder(EmbeddingConfig(model=f"campplus:{ge2e}", device="cpu"))


def test_embeddings_are_level_invariant(conv, encoder):
    audio, _ = conv
    starts = np.array([16000, 16000 * 5])
    loud = encoder.embed(audio, starts, 24000)
    quiet = encoder.embed(audio * 0.05, starts, 24000)
    assert np.min(np.sum(loud * quiet, axis=1)) > 0.999


def test_grid_windows_follow_speech():
    config = EmbeddingConfig(window=1.5, hop=0.75)
    regions = np.array([[1.0, 5.0], [10.0, 10.5]])
    starts = grid_windows(regions, 0.0, 60.0, config)
    assert np.all(
        np.isclose(np.mod(starts[:-1], 0.75), 0) | np.isclose(np.mod(starts[:-1], 0.75), 0.75)
    )
    assert starts[0] >= 0.0 and starts[-2] + 1.5 <= 5.0 + 0.75
    assert np.isclose(starts[-1], 10.25 - 0.75)  # the short region gets a centred window
    owned = grid_windows(regions, 0.0, 3.0, config)
    assert owned.max() < 3.0


def test_tiny_random_wavlm_loads_through_the_real_path(tmp_path, conv):
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    config = WavLMConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        tdnn_dim=(16, 16),
        tdnn_kernel=(3, 1),
        tdnn_dilation=(1, 1),
        xvector_output_dim=24,
        num_buckets=16,
        max_bucket_distance=32,
    )
    WavLMForXVector(config).save_pretrained(tmp_path / "wavlm")
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(tmp_path / "wavlm")
    encoder = make_encoder(
        EmbeddingConfig(model=str(tmp_path / "wavlm"), device="cpu", batch_size=3)
    )
    audio, _ = conv
    starts = np.array([0, 16000, 32000, 48000, 64000])
    out = encoder.embed(audio, starts, 24000)
    assert out.shape == (5, 24)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(encoder.embed(audio, starts[:2], 24000), out[:2], atol=1e-5)


def test_hub_id_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="wavlm-base-plus-sv"):
        make_encoder(EmbeddingConfig(model="microsoft/wavlm-base-plus-sv", device="cpu"))


def test_weights_hash_pin_and_safe_loading(tmp_path):
    path = resolve(ModelRef("bundled:resemblyzer-ge2e"))
    with pytest.raises(ModelError, match="SHA-256 mismatch"):
        GE2EEncoder(str(path), sha256="00" * 32, device="cpu")
    GE2EEncoder(str(path), sha256="39373b86", device="cpu")  # a correct prefix loads

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(tmp_path / 'ran')!r}, 'w').write('pwned')",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model_state": Payload()}))
    with pytest.raises(ModelError, match="weights_only"):
        GE2EEncoder(str(evil), device="cpu")
    assert not (tmp_path / "ran").exists()


def test_ge2e_band_limits_in_the_spectrogram_as_a_filter_would(conv, encoder):
    """GE2E's narrowband embeddings weight the chunk's power spectrogram by the band-pass
    response instead of filtering each window; they agree with the filtered windows' embeddings
    and differ from the full-band ones."""
    from audio_ops.embedding import SpeakerEncoder

    audio, _ = conv
    starts = np.arange(0, 30 * 16000, 24000)
    fast = encoder.embed_narrowband(audio, starts, 24000)
    filtered = SpeakerEncoder.embed_narrowband(encoder, audio, starts, 24000)
    full = encoder.embed(audio, starts, 24000)
    agree = np.sum(fast * filtered, axis=1)
    assert agree.mean() > 0.98 and agree.min() > 0.9, agree
    assert np.sum(fast * full, axis=1).mean() < 0.9
