"""Each cleaning step as a job of its own, through a real local Ray: ``voxflow vad``,
``voxflow transcribe``, ``voxflow separate``, and the per-file job skeleton they share."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import soundfile as sf
from helpers import SAMPLE, write_tiny_hdemucs

from audio_ops.io import load_audio
from pipelines.cli import main
from pipelines.engine.config import ConfigError, load_config
from pipelines.engine.filejob import (
    FileJob,
    FileState,
    Stage,
    batch_rows,
    make_files_schema,
    output_location,
    rows_to_batch,
)
from pipelines.engine.scan import SpeechScanOperator
from pipelines.jobs.separate import SeparateRunConfig
from pipelines.jobs.transcribe import TranscribeRunConfig
from pipelines.jobs.vad import VadRunConfig
from pipelines.reports.evaluate import read_rttm

RATE = 16000


# ----------------------------------------------------------------------------------------------
# Configuration and names (no Ray)
# ----------------------------------------------------------------------------------------------


def test_configs_are_validated_before_anything_runs():
    with pytest.raises(ConfigError, match="Whisper's window"):
        load_config(TranscribeRunConfig, overrides={"clips.max_seconds": 45.0})
    with pytest.raises(ConfigError, match="vad.backend"):
        load_config(VadRunConfig, overrides={"vad.backend": "webrtc"})
    with pytest.raises(ConfigError, match="unknown key separation.modle"):
        load_config(SeparateRunConfig, overrides={"separation.modle": "x.pt"})
    with pytest.raises(ConfigError, match="transcription.beam_size"):
        load_config(TranscribeRunConfig, overrides={"transcription.beam_size": "five"})


@pytest.mark.parametrize("rel", ["../../x.wav", "/etc/passwd.wav", "a/./b/../c.mp3", "..evil.wav"])
def test_every_output_suffix_stays_inside_the_output_folder(tmp_path, rel):
    for suffix in (".vocals.flac", ".accompaniment.flac"):
        target = Path(output_location(str(tmp_path), rel, suffix))
        assert target.name.endswith(suffix)
        assert target.resolve().is_relative_to((tmp_path / "audio").resolve())


# ----------------------------------------------------------------------------------------------
# The skeleton: a file that fans out into parts, one of which fails
# ----------------------------------------------------------------------------------------------

PART_COLUMNS = {
    "path": "",
    "file_id": "",
    "rel_path": "",
    "kind": "file",
    "parts": 0,
    "start": 0.0,
    "duration": 0.0,
    "status": "ok",
    "error_kind": "",
    "error": "",
    "error_stage": "",
}


class ThreeParts:
    """Each file -> its row (3 parts announced, 3 s long) and three one-second parts."""

    num_cpus = 0.25
    batch_size = 1

    def __call__(self, batch):
        rows = []
        for row in batch_rows(batch):
            rows.append({**row, "parts": 3, "duration": 3.0})
            rows += [{**row, "kind": "part", "start": float(i), "duration": 1.0} for i in range(3)]
        return rows_to_batch(rows, PART_COLUMNS)


class FailsOnTheSecondPartOfB:
    num_cpus = 0.25
    batch_size = 8

    def __call__(self, batch):
        for row in batch_rows(batch):
            if row["kind"] == "part" and row["rel_path"] == "b.wav" and row["start"] == 1.0:
                raise RuntimeError("model exploded")
        return batch


class PartsJob(FileJob):
    name = "parts"
    config_class = VadRunConfig  # any config with resources/extensions
    files_schema = make_files_schema(("duration", pa.float64()))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ok_parts: dict[str, int] = {}

    def stages(self):
        return [Stage("split", ThreeParts), Stage("model", FailsOnTheSecondPartOfB)]

    def part(self, row, file: FileState):
        file.totals["ok_parts"] += int(row["status"] == "ok")
        self.ok_parts[row["rel_path"]] = file.totals["ok_parts"]


class ScoresText:
    """A stage that needs a transcript: nothing in a VAD-only chain gives one."""

    inputs = ("text",)
    outputs = ("score",)

    def __call__(self, batch):
        return batch


class ScoresWithoutText(FileJob):
    name = "needs-text"
    config_class = VadRunConfig

    def stages(self):
        vad = {"vad": self.config.vad, "chunk_seconds": self.config.chunk_seconds}
        return [Stage("vad", SpeechScanOperator, vad), Stage("score", ScoresText)]


def test_a_stage_needing_a_column_no_stage_gives_is_refused_before_anything_runs(tmp_path):
    out = tmp_path / "out"
    job = ScoresWithoutText(str(out), VadRunConfig(), quiet=True)
    with pytest.raises(ConfigError, match=r"stage 'score' \(ScoresText\) needs column\(s\) text"):
        job.run([str(tmp_path / "not-listed-yet")])
    assert not out.exists()  # refused before the inputs were listed or the folder opened


@pytest.mark.integration
def test_a_failed_part_makes_its_file_an_error_and_nothing_is_lost(ray_local, tmp_path):
    corpus = tmp_path / "in"
    corpus.mkdir()
    for name in ("a.wav", "b.wav", "c.wav"):
        sf.write(corpus / name, np.zeros(RATE, np.float32), RATE)
    job = PartsJob(str(tmp_path / "out"), VadRunConfig(), quiet=True)
    summary = job.run([str(corpus)])
    files = pd.read_parquet(tmp_path / "out" / "files").set_index("rel_path")
    errors = pd.read_parquet(tmp_path / "out" / "errors")
    assert sorted(files.index) == ["a.wav", "b.wav", "c.wav"]
    assert files.loc["b.wav", "status"] == "error"
    assert files.loc["b.wav", "error_stage"] == "model"
    assert "1 of 3 parts failed" in files.loc["b.wav", "error"]
    assert "model exploded" in files.loc["b.wav", "error"]
    assert list(errors["rel_path"]) == ["b.wav"] and list(errors["stage"]) == ["model"]
    assert (files.drop(index="b.wav")["status"] == "ok").all()
    assert job.ok_parts == {"a.wav": 3, "b.wav": 2, "c.wav": 3}  # b's good parts still arrive
    assert (summary.ok, summary.errors, summary.audio_seconds) == (2, 1, 6.0)


# ----------------------------------------------------------------------------------------------
# voxflow vad
# ----------------------------------------------------------------------------------------------

#: Where the synthesized file's utterances go (seconds); the third straddles the 60 s chunk edge.
PLACEMENTS = (5.0, 31.0, 58.7, 95.0)


def reference_turns(stem: str) -> list[tuple[float, float, str]]:
    """The sample's reference turns of one file: (start, end, text)."""
    turns = []
    for line in (SAMPLE / "transcripts.jsonl").read_text().splitlines():
        row = json.loads(line)
        if Path(row["file"]).stem == stem:
            turns.append((row["start"], row["end"], row["text"]))
    return sorted(turns)


@pytest.fixture(scope="module")
def placed_speech(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A 120 s file: four real utterances at known places over faint noise; plus a broken file."""
    audio, _ = load_audio(str(SAMPLE / "audio" / "conv01_clean_3spk.flac"), RATE)
    rng = np.random.default_rng(0)
    signal = (rng.standard_normal(120 * RATE) * 10 ** (-60 / 20)).astype(np.float32)
    truth = []
    for at, (start, end, _) in zip(PLACEMENTS, reference_turns("conv01_clean_3spk"), strict=False):
        utterance = audio[int(start * RATE) : int(end * RATE)]
        signal[int(at * RATE) : int(at * RATE) + len(utterance)] += utterance
        truth.append((at, at + len(utterance) / RATE))
    root = tmp_path_factory.mktemp("vad_in")
    sf.write(root / "placed.flac", signal, RATE)
    (root / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt ")
    return root, np.array(truth)


def _overlap(regions: np.ndarray, lo: float, hi: float) -> float:
    return float(
        np.clip(np.minimum(regions[:, 1], hi) - np.maximum(regions[:, 0], lo), 0, None).sum()
    )


@pytest.mark.integration
@pytest.mark.parametrize("method,coverage", [("silero", 0.9), ("energy", 0.8)])
def test_vad_finds_the_speech_where_it_was_placed(
    ray_local, placed_speech, tmp_path, method, coverage
):
    root, truth = placed_speech
    out = tmp_path / "out"
    assert main(["vad", str(root), "--out", str(out), "--method", method, "-q"]) == 0
    files = pd.read_parquet(out / "files").set_index("rel_path")
    segments = pd.read_parquet(out / "segments")
    regions = segments[["start", "end"]].to_numpy()
    for lo, hi in truth:  # every utterance is found...
        assert _overlap(regions, lo, hi) >= coverage * (hi - lo), (lo, hi)
    # ...and almost nothing else (the padding around each utterance aside).
    found_in_truth = sum(_overlap(regions, lo - 0.3, hi + 0.3) for lo, hi in truth)
    assert segments["duration"].sum() - found_in_truth < 0.5
    # The chunk edge at 60 s leaves no cut inside the utterance that straddles it.
    assert not np.any(np.isclose(regions, 60.0, atol=1e-3))
    placed = files.loc["placed.flac"]
    assert placed["status"] == "ok" and placed["duration"] == pytest.approx(120.0)
    assert placed["num_segments"] == len(segments)
    assert placed["speech_seconds"] == pytest.approx(segments["duration"].sum())
    assert (segments["end"] - segments["start"]).round(9).equals(segments["duration"].round(9))
    # The broken file is an error row, named, with the stage that met it.
    broken = files.loc["broken.wav"]
    assert broken["status"] == "error" and broken["error_stage"] == "vad"
    errors = pd.read_parquet(out / "errors")
    assert list(errors["rel_path"]) == ["broken.wav"]
    run = json.loads((out / "_run.json").read_text())
    assert run["counts"]["ok"] + run["counts"]["errors"] == 2
    assert run["config"]["vad"]["backend"] == method


# ----------------------------------------------------------------------------------------------
# voxflow transcribe
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def transcribed(ray_local, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("transcribe_in")
    for path in sorted((SAMPLE / "audio").iterdir()):
        shutil.copy(path, root / path.name)
    (root / "empty.flac").write_bytes(b"")
    out = tmp_path_factory.mktemp("transcribe_out") / "run"
    assert main(["transcribe", str(root), "--out", str(out), "--words", "-q"]) == 0
    return out


@pytest.mark.integration
def test_transcripts_match_the_sample_references(transcribed):
    from audio_ops.evaluation import word_error_rate

    transcripts = pd.read_parquet(transcribed / "transcripts").sort_values(["rel_path", "start"])
    references, hypotheses = [], []
    for rel_path, clips in transcripts.groupby("rel_path"):
        references.append(" ".join(t for _, _, t in reference_turns(Path(rel_path).stem)))
        hypotheses.append(" ".join(clips["text"]))
    assert len(references) == 5
    # Bundled tiny.en: measured 19.5 % (the noisy file alone about 50 %).
    assert word_error_rate(references, hypotheses) < 0.25
    assert (transcripts["language"] == "en").all()
    assert transcripts["clip_id"].is_unique
    assert {"avg_logprob", "no_speech_prob", "compression_ratio", "hallucination"} <= set(
        transcripts.columns
    )


@pytest.mark.integration
def test_words_carry_file_times_inside_their_clip(transcribed):
    from audio_ops.transcription import normalize_transcript

    transcripts = pd.read_parquet(transcribed / "transcripts")
    counted = 0
    for clip in transcripts.itertuples():
        words = list(clip.words)
        starts = [w["start"] for w in words]
        assert starts == sorted(starts)
        assert all(clip.start - 0.05 <= w["start"] <= w["end"] <= clip.end + 0.05 for w in words)
        # a word may be a piece ("all", "-way"): the same text once normalised
        said = " ".join(w["word"] for w in words)
        assert normalize_transcript(said) == normalize_transcript(clip.text)
        counted += len(words)
    assert counted >= 0.9 * transcripts["text"].str.split().str.len().sum() > 0


@pytest.mark.integration
def test_files_go_to_whisper_in_clips_cut_at_pauses(transcribed):
    transcripts = pd.read_parquet(transcribed / "transcripts")
    files = pd.read_parquet(transcribed / "files").set_index("rel_path")
    assert (transcripts["end"] - transcripts["start"]).max() <= 30.0 + 1e-6
    boundaries = 0
    for rel_path, clips in transcripts.groupby("rel_path"):
        row = files.loc[rel_path]
        assert row["clips"] == len(clips) >= 2  # 35-50 s files never go whole into Whisper
        assert row["transcribed_seconds"] == pytest.approx((clips["end"] - clips["start"]).sum())
        assert clips["start"].min() >= 0 and clips["end"].max() <= row["duration"] + 1e-6
        turns = read_rttm(SAMPLE / "rttm" / f"{Path(rel_path).stem}.rttm")
        for point in [*clips["start"], *clips["end"]]:
            boundaries += 1
            assert not any(t.start + 0.05 < point < t.start + t.duration - 0.05 for t in turns)
    assert boundaries >= 20


@pytest.mark.integration
def test_a_file_that_cannot_be_read_is_an_error_row(transcribed):
    files = pd.read_parquet(transcribed / "files").set_index("rel_path")
    errors = pd.read_parquet(transcribed / "errors")
    assert files.loc["empty.flac", "status"] == "error"
    assert list(errors["rel_path"]) == ["empty.flac"]
    assert list(errors["stage"]) == ["segment"] and list(errors["error_kind"]) == ["empty"]
    assert (files.drop(index="empty.flac")["status"] == "ok").all()


# ----------------------------------------------------------------------------------------------
# voxflow separate
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_hdemucs(tmp_path_factory) -> Path:
    """A randomly initialised 4-channel hdemucs_low, saved, pinned, in a run config."""
    return write_tiny_hdemucs(tmp_path_factory.mktemp("tiny_hdemucs"))


@pytest.mark.integration
def test_separate_writes_vocals_as_long_as_the_input_inside_out(ray_local, tiny_hdemucs, tmp_path):
    rng = np.random.default_rng(1)
    corpus = tmp_path / "corpus"
    inputs = {
        "calls/day1/a.wav": (rng.standard_normal(int(5.3 * RATE)) * 0.1, RATE),
        "music/b.wav": (rng.standard_normal((int(3.7 * 44100), 2)) * 0.1, 44100),
        "..evil.wav": (rng.standard_normal(RATE) * 0.1, RATE),
    }
    for rel, (samples, rate) in inputs.items():
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(corpus / rel, samples.astype(np.float32), rate)
    (corpus / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt ")
    out = tmp_path / "out"
    args = ["separate", str(corpus), "--out", str(out), "--config", str(tiny_hdemucs)]
    assert main([*args, "--accompaniment", "-q"]) == 0
    files = pd.read_parquet(out / "files").set_index("rel_path")
    for rel, (samples, rate) in inputs.items():
        stem = rel[: -len(".wav")]
        for kind in ("vocals", "accompaniment"):
            path = out / "audio" / f"{stem}.{kind}.flac"
            written, written_rate = sf.read(path, dtype="float32", always_2d=True)
            assert written_rate == rate and len(written) == len(samples), path
            assert written.shape[1] == (2 if samples.ndim == 2 else 1)
            assert np.isfinite(written).all() and np.abs(written).max() > 0
        assert files.loc[rel, "vocals"] == str(out / "audio" / f"{stem}.vocals.flac")
        assert files.loc[rel, "duration"] == pytest.approx(len(samples) / rate)
    assert files.loc["broken.wav", "status"] == "error"
    assert files.loc["broken.wav", "error_stage"] == "separate"
    assert not list(out.rglob("broken*.flac"))  # a failed file leaves no partial output
    # A manifest that names a file through '..' still writes inside OUT/audio.
    (tmp_path / "lists").mkdir()
    pd.DataFrame({"path": ["../corpus/calls/day1/a.wav"]}).to_csv(
        tmp_path / "lists" / "m.csv", index=False
    )
    out2 = tmp_path / "out2"
    args = ["separate", str(tmp_path / "lists" / "m.csv"), "--out", str(out2)]
    assert main([*args, "--config", str(tiny_hdemucs), "-q"]) == 0
    written = sorted(str(p.relative_to(out2)) for p in out2.rglob("*.flac"))
    assert written == ["audio/corpus/calls/day1/a.vocals.flac"]


def test_separate_without_weights_stops_with_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("VOXFLOW_CACHE", str(tmp_path / "cache"))
    sf.write(tmp_path / "a.wav", np.zeros(RATE, np.float32), RATE)
    out = tmp_path / "out"
    assert main(["separate", str(tmp_path / "a.wav"), "--out", str(out), "-q"]) == 2
    message = capsys.readouterr().err
    assert "hdemucs_high_trained.pt" in message and "local path" in message
    assert not out.exists()  # stopped before listing, Ray or any output
