"""Separation plumbing with a tiny randomly initialised HDemucs of the real class, saved and loaded
through the real path (safetensors and a weights-only ``.pt``), plus the overlap-add engine on
models whose right answer is known."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SAMPLE

from audio_ops.io import load_audio, resample
from audio_ops.models import ModelError, sha256_of
from audio_ops.separation import (
    MUSDB_SOURCES,
    OverlapAdd,
    SeparateOperator,
    SeparationConfig,
    Separator,
    build_hdemucs,
    energy_ratio_db,
    fade_in_ramp,
)

RATE = 16000


#: torch on one thread in these tests (see conftest), as a pipeline actor runs it.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> dict[str, Path]:
    """A 4-channel hdemucs_low (146k parameters) saved both ways."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = build_hdemucs("hdemucs_low", MUSDB_SOURCES, 4)
    root = tmp_path_factory.mktemp("tiny_hdemucs")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(root / "tiny.safetensors"))
    torch.save(state, root / "tiny.pt")
    return {"safetensors": root / "tiny.safetensors", "pt": root / "tiny.pt"}


def tiny_config(path: Path, **overrides) -> SeparationConfig:
    fields = dict(
        model=str(path),
        sha256=sha256_of(path),
        architecture="hdemucs_low",
        model_channels=4,
        model_sample_rate=RATE,
        chunk_seconds=2.0,
        overlap_seconds=0.5,
        device="cpu",
    )
    fields.update(overrides)
    return SeparationConfig(**fields)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    audio, _ = load_audio(str(SAMPLE / "audio" / "conv01_clean_3spk.flac"), RATE, end=8.0)
    return audio


def one_shot(separator: Separator, audio: np.ndarray) -> dict[str, np.ndarray]:
    """The model run once on the whole (mono) signal: the reference chunking must match."""
    with torch.inference_mode():
        x = torch.from_numpy(np.stack([audio, audio]))[None]
        y = separator.model(x)[0].numpy()  # (sources, 2, frames)
    vocals = MUSDB_SOURCES.index("vocals")
    others = [i for i in range(len(MUSDB_SOURCES)) if i != vocals]
    return {"vocals": y[vocals].mean(0), "accompaniment": y[others].sum(0).mean(0)}


@pytest.mark.parametrize("kind", ["safetensors", "pt"])
def test_loads_through_the_real_path_and_keeps_shapes(tiny_weights, speech, kind):
    separator = Separator(tiny_config(tiny_weights[kind]))
    assert separator.name == f"hdemucs_low:{tiny_weights[kind].name}"
    mono = separator.separate(speech[: RATE * 3], RATE)
    assert set(mono) == {"vocals", "accompaniment"}
    assert all(v.shape == (RATE * 3,) and v.dtype == np.float32 for v in mono.values())
    stereo_in = np.stack([speech[: RATE * 3], 0.5 * speech[: RATE * 3]], axis=1)
    stereo = separator.separate(stereo_in, RATE)
    assert all(v.shape == (RATE * 3, 2) for v in stereo.values())
    one_channel = separator.separate(speech[: RATE * 3, None], RATE)
    assert all(v.shape == (RATE * 3, 1) for v in one_channel.values())
    # A different input rate goes through the model's rate and comes back at its own length.
    at_22k = separator.separate(resample(speech[: RATE * 3], RATE, 22050), 22050)
    assert all(v.shape == (22050 * 3,) for v in at_22k.values())
    everything = Separator(tiny_config(tiny_weights[kind], keep_sources=True)).separate(
        speech[:RATE], RATE
    )
    assert set(everything) == {"vocals", "accompaniment", "drums", "bass", "other"}
    np.testing.assert_allclose(
        everything["accompaniment"],
        everything["drums"] + everything["bass"] + everything["other"],
        atol=1e-5,
    )


def test_safetensors_and_pt_give_the_same_model(tiny_weights, speech):
    a = Separator(tiny_config(tiny_weights["safetensors"])).separate(speech[:RATE], RATE)
    b = Separator(tiny_config(tiny_weights["pt"])).separate(speech[:RATE], RATE)
    np.testing.assert_array_equal(a["vocals"], b["vocals"])


def test_a_signal_shorter_than_a_chunk_is_processed_in_one_shot(tiny_weights, speech):
    separator = Separator(tiny_config(tiny_weights["safetensors"]))
    audio = speech[: int(1.7 * RATE)]  # chunk is 2.0 s
    got = separator.separate(audio, RATE)
    want = one_shot(separator, audio)
    for name in ("vocals", "accompaniment"):
        np.testing.assert_allclose(got[name], want[name], atol=1e-6)
    # Also with resampling on both sides (model at 8 kHz).
    low = Separator(tiny_config(tiny_weights["safetensors"], model_sample_rate=8000))
    got = low.separate(audio, RATE)
    ref = one_shot(low, resample(audio, RATE, 8000))
    np.testing.assert_allclose(
        got["vocals"], resample(ref["vocals"].astype(np.float32), 8000, RATE), atol=1e-5
    )


def test_very_short_input_is_padded_for_the_model(tiny_weights):
    separator = Separator(tiny_config(tiny_weights["safetensors"]))
    out = separator.separate(np.full(100, 0.1, np.float32), RATE)  # HDemucs needs > 320 frames
    assert out["vocals"].shape == (100,)
    assert separator.separate(np.zeros(0, np.float32), RATE)["vocals"].shape == (0,)


class ScaledCopies(torch.nn.Module):
    """A model whose right answer is known: each stem is the input times a fixed weight."""

    def __init__(self, weights=(0.1, 0.2, 0.3, 0.4)):
        super().__init__()
        self.register_buffer("weights", torch.tensor(weights))

    def forward(self, x):
        return self.weights[None, :, None, None] * x[:, None]


class ChunkLevel(torch.nn.Module):
    """Every stem is a constant: the chunk's RMS. Chunks of a signal whose level changes give
    different constants, so a hard cut between chunks is a step (a click)."""

    def forward(self, x):
        level = x.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
        return level[:, None].expand(x.shape[0], 4, *x.shape[1:]).clone()


def known_config(**overrides) -> SeparationConfig:
    fields = dict(
        model="unused.pt",
        architecture="hdemucs_low",
        model_sample_rate=RATE,
        chunk_seconds=1.0,
        overlap_seconds=0.25,
        device="cpu",
    )
    fields.update(overrides)
    return SeparationConfig(**fields)


@pytest.mark.parametrize("crossfade", ["linear", "cosine"])
def test_overlap_add_reproduces_a_linear_model_exactly(crossfade, speech):
    separator = Separator(known_config(crossfade=crossfade), model=ScaledCopies())
    audio = speech[: int(7.3 * RATE)]  # 10 chunks, a short last one
    out = separator.separate(audio, RATE)
    np.testing.assert_allclose(out["vocals"], 0.4 * audio, atol=1e-6)
    np.testing.assert_allclose(out["accompaniment"], 0.6 * audio, atol=1e-6)


@pytest.mark.parametrize("crossfade", ["linear", "cosine"])
def test_fade_weights_are_complementary(crossfade):
    ramp = fade_in_ramp(1000, crossfade)
    np.testing.assert_allclose(ramp + ramp[::-1], 1.0, atol=1e-12)
    assert 0 < ramp.min() and ramp.max() < 1 and np.all(np.diff(ramp) > 0)


def test_crossfade_removes_the_step_between_chunks():
    """A level change between chunks: a hard cut (no overlap) jumps, the cross-fade ramps."""
    audio = np.concatenate([np.full(RATE, 0.1), np.full(RATE * 2, 0.5)]).astype(np.float32)
    hard = Separator(known_config(overlap_seconds=0.0), model=ChunkLevel()).separate(audio, RATE)
    soft = Separator(known_config(), model=ChunkLevel()).separate(audio, RATE)
    step_hard = np.abs(np.diff(hard["vocals"])).max()
    step_soft = np.abs(np.diff(soft["vocals"])).max()
    assert step_hard > 0.3  # the two chunk levels, 0.1 vs 0.5
    assert step_soft < step_hard / 1000  # spread over the 4000-sample overlap


def test_chunk_boundaries_of_the_real_model_leave_no_click(tiny_weights, speech):
    """Chunked HDemucs output has no sample-to-sample jump larger than the one-shot output's
    largest: the fade edges are where a click would be."""
    separator = Separator(tiny_config(tiny_weights["safetensors"]))
    got = separator.separate(speech, RATE)
    want = one_shot(separator, speech)
    hop, overlap = int(1.5 * RATE), int(0.5 * RATE)
    edges = np.array([e for k in range(1, 5) for e in (k * hop, k * hop + overlap)])
    for name in ("vocals", "accompaniment"):
        natural = np.abs(np.diff(want[name])).max()
        at_edges = np.abs(got[name][edges] - got[name][edges - 1]).max()
        assert at_edges < natural
        assert np.abs(np.diff(got[name])).max() < 1.5 * natural


def test_stream_equals_whole_clip(tiny_weights, speech):
    separator = Separator(tiny_config(tiny_weights["safetensors"]))
    whole = separator.separate(speech, RATE)
    blocks = [speech[i : i + 7001] for i in range(0, speech.size, 7001)]
    parts = list(separator.separate_stream(blocks, RATE))
    streamed = np.concatenate([p["vocals"] for p in parts])
    assert streamed.shape == whole["vocals"].shape
    np.testing.assert_allclose(streamed, whole["vocals"], atol=1e-6)
    # With resampling to the model's rate and back as streams: same up to the resamplers.
    low = Separator(tiny_config(tiny_weights["safetensors"], model_sample_rate=8000))
    whole = low.separate(speech, RATE)["vocals"]
    streamed = np.concatenate([p["vocals"] for p in low.separate_stream(blocks, RATE)])
    assert abs(streamed.size - whole.size) <= 2
    n = min(streamed.size, whole.size)
    assert np.sqrt(np.mean((streamed[:n] - whole[:n]) ** 2)) < 1e-3 * np.sqrt(np.mean(whole**2))


def test_sha_mismatch_refuses(tiny_weights):
    with pytest.raises(ModelError, match="SHA-256 mismatch"):
        Separator(tiny_config(tiny_weights["pt"], sha256="0" * 64))


class _Payload:
    marker: str = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_pickled_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    payload = _Payload()
    payload.marker = str(marker)
    path = tmp_path / "evil.pt"
    torch.save({"weight": payload}, path)
    with pytest.raises(ModelError, match="weights_only"):
        Separator(tiny_config(path))
    assert not marker.exists()


def test_a_state_dict_of_another_architecture_is_refused(tiny_weights):
    with pytest.raises(ModelError, match="does not fit"):
        Separator(tiny_config(tiny_weights["pt"], architecture="hdemucs_medium"))


def test_unavailable_bundle_is_a_clear_model_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("VOXFLOW_CACHE", str(tmp_path / "cache"))
    started = time.monotonic()
    with pytest.raises(ModelError, match="hdemucs_high_trained.pt.*local path"):
        Separator(SeparationConfig(device="cpu"))
    assert time.monotonic() - started < 30


def test_config_validation():
    with pytest.raises(ValueError, match="unknown torchaudio bundle"):
        SeparationConfig(model="torchaudio:NOPE")
    with pytest.raises(ValueError, match="conflicts"):
        SeparationConfig(model_sample_rate=16000)
    with pytest.raises(ValueError, match="architecture"):
        SeparationConfig(model="x.pt", architecture="hdemucs_huge")
    with pytest.raises(ValueError, match="vocals_source"):
        SeparationConfig(model="x.pt", vocals_source="voice")
    with pytest.raises(ValueError, match="overlap"):
        SeparationConfig(chunk_seconds=2.0, overlap_seconds=1.5)
    with pytest.raises(ValueError, match="crossfade"):
        SeparationConfig(crossfade="square")
    with pytest.raises(ValueError, match="chunk_frames"):
        OverlapAdd(lambda c: c[None], 10, 6)


def test_separate_operator(tiny_weights, speech):
    config = tiny_config(tiny_weights["safetensors"])
    operator = SeparateOperator(config)
    clips = [speech[: 3 * RATE], resample(speech[: 2 * RATE], RATE, 8000)]
    batch = {
        "audio": np.array([c.astype(np.float32).tobytes() for c in clips], dtype=object),
        "sample_rate": np.array([RATE, 8000]),
        "file_id": np.array(["a", "b"], dtype=object),
    }
    out = operator(batch)
    assert set(SeparateOperator.outputs) <= set(out) and list(out["file_id"]) == ["a", "b"]
    separator = Separator(config)
    for i, clip in enumerate(clips):
        vocals = np.frombuffer(out["audio"][i], dtype=np.float32)
        stems = separator.separate(clip, int(batch["sample_rate"][i]))
        np.testing.assert_allclose(vocals, stems["vocals"], atol=1e-6)
        assert out["separation"][i] == "hdemucs_low:tiny.safetensors"
        assert out["accompaniment_db"][i] == pytest.approx(
            energy_ratio_db(stems["accompaniment"], clip), abs=1e-6
        )
    silent = operator(
        {
            "audio": np.array([np.zeros(RATE, np.float32).tobytes()], dtype=object),
            "sample_rate": np.array([RATE]),
        }
    )
    assert np.isnan(silent["accompaniment_db"][0])


def test_speed_of_the_tiny_model(tiny_weights, speech):
    """Not a benchmark: a guard that chunking adds no pathological cost (report the number)."""
    separator = Separator(tiny_config(tiny_weights["safetensors"]))
    started = time.perf_counter()
    separator.separate(speech, RATE)
    per_second = (time.perf_counter() - started) / (speech.size / RATE)
    print(f"tiny hdemucs_low, 16 kHz, 1 thread: {per_second * 1000:.1f} ms per second of audio")
    assert per_second < 0.5
