"""``voxflow diarize`` through a real local Ray: every input once, quality on real recordings (and on
the synthetic sample), overlapped speech, global ids across files, long files in chunks,
enrollment, RTTM export and evaluation."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from helpers import SAMPLE, make_hostile_corpus

from audio_ops.diarization import ChunkConfig, DiarizationConfig, diarize_audio
from audio_ops.embedding import GE2EEncoder, make_encoder
from audio_ops.io import load_audio
from audio_ops.neural_diarization import SegmentationDiarizationConfig, diarize_audio_segmentation
from audio_ops.segmentation import SegmentationConfig, load_segmentation
from audio_ops.vad import SileroVAD
from pipelines.cli import main
from pipelines.engine.sources import list_corpus
from pipelines.reports.evaluate import read_rttm
from pipelines.reports.report import evaluate_run

pytestmark = pytest.mark.integration

REAL = SAMPLE.parent / "real"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("diar")
    for path in sorted((SAMPLE / "audio").iterdir()):
        shutil.copy(path, root / path.name)
    hostile = make_hostile_corpus(root / "hostile")
    for name in list(hostile):  # keep the run short: no 10-minute silence here
        if name == "digital_silence.flac":
            (root / "hostile" / name).unlink()
            hostile.pop(name)
    return root, hostile


@pytest.fixture(scope="module")
def run(ray_local, corpus, tmp_path_factory):
    root, _ = corpus
    out = tmp_path_factory.mktemp("diar_out") / "run"
    assert main(["diarize", str(root), "--out", str(out), "--quiet"]) == 0
    return out


def test_every_input_once_and_errors_named(run, corpus):
    root, hostile = corpus
    files = pd.read_parquet(run / "files")
    errors = pd.read_parquet(run / "errors")
    listing = list_corpus([str(root)])
    assert sorted(files["file_id"]) == sorted(r["file_id"] for r in listing)
    assert (files["status"] == "ok").sum() + len(errors) == len(listing)
    by_rel = files.set_index("rel_path")
    for rel, outcome in hostile.items():
        row = by_rel.loc[f"hostile/{rel}"]
        if outcome in ("ok",):
            assert row["status"] == "ok", row["error"]
        elif outcome == "too_short":  # one sample decodes fine; it simply holds no speech
            assert row["status"] == "ok" and row["num_speakers"] == 0
        else:
            assert row["error_kind"] == outcome and row["error_stage"] == "decode"
    run_json = json.loads((run / "_run.json").read_text())
    assert run_json["counts"]["inputs"] == len(listing)
    assert run_json["counts"]["ok"] + run_json["counts"]["errors"] == len(listing)
    assert not (run / "_staging").exists()


def test_sample_quality_and_global_ids(run):
    """The synthetic sample (espeak-ng, flite and festival voices; MP3, 44.1 kHz stereo Ogg) under
    the default segmentation method: a check that every format and voice goes through. Measured:
    DER 9.2 %, 4 of 5 counts exact, every file-speaker on its voice's id, no merge. The
    segmentation model was trained on real speech; quality is measured on real recordings
    (below, and benchmarks/diarize_real.py)."""
    report = evaluate_run(str(SAMPLE / "rttm"), str(run))
    assert report.der <= 0.12, report.text()
    assert report.count_exact >= 0.8, report.text()
    assert report.identity_coverage >= 0.85 and report.merged_voices == 0, report.text()


def test_windows_method_on_the_sample(ray_local, tmp_path):
    """examples/windows.yaml, the method voxflow had before segmentation, keeps what it gave on
    the sample: DER 1.7 %, 5 of 5 counts exact, 92.9 % of file-speakers on their voice's id, no
    merge (7 ids for 6 voices), GE2E centroids and pitch."""
    out = tmp_path / "win"
    config = SAMPLE.parent / "windows.yaml"
    args = ["diarize", str(SAMPLE / "audio"), "--out", str(out), "--config", str(config), "-q"]
    assert main(args) == 0
    report = evaluate_run(str(SAMPLE / "rttm"), str(out))
    assert report.der <= 0.06, report.text()
    assert report.count_exact >= 0.8, report.text()
    assert report.identity_coverage >= 0.85 and report.merged_voices == 0, report.text()
    speakers = pd.read_parquet(out / "speakers")
    assert len(speakers["centroid"].iloc[0]) == 256
    assert speakers["pitch_hz"].between(60, 400).all()


def test_real_recordings_with_overlapped_speech(ray_local, tmp_path):
    """Real speech (examples/real: pyannote's sample conversation, two AMI meeting excerpts),
    the default method. Measured: DER 6.9 % (0.25 s collar, overlap scored), pyannote_sample
    0.3 %, trn03 0.0 %, trn00 32 % (two of its three people merged)."""
    out = tmp_path / "real"
    assert main(["diarize", str(REAL / "audio"), "--out", str(out), "-q"]) == 0
    report = evaluate_run(str(REAL / "rttm"), str(out))
    assert report.der <= 0.1, report.text()
    by_file = {f.file: f for f in report.files}
    assert by_file["pyannote_sample"].der <= 0.05 and by_file["pyannote_sample"].hyp_speakers == 2
    segments = pd.read_parquet(out / "segments")
    segments["file"] = segments["path"].map(lambda p: p.rsplit("/", 1)[-1].split(".")[0])
    # Overlap rows where the reference has overlapped speech (pyannote_sample, 18.15-18.59 s and
    # 27.85-28.50 s): two speakers' segments cover it, both flagged.
    sample = segments[segments["file"] == "pyannote_sample"]
    for lo, hi in [(18.2, 18.5), (27.9, 28.4)]:
        here = sample[(sample["start"] < hi) & (sample["end"] > lo)]
        assert here["speaker"].nunique() == 2 and here["overlap"].all(), here
    # The flag means what it says: a flagged row overlaps another speaker's row of its file,
    # an unflagged one none.
    for _, rows in segments.groupby("file_id"):
        for _, row in rows.iterrows():
            others = rows[rows["speaker"] != row["speaker"]]
            crosses = ((others["start"] < row["end"]) & (others["end"] > row["start"])).any()
            assert crosses == row["overlap"], row


def test_the_same_real_voices_get_one_id_across_files(ray_local, tmp_path):
    """Three conversations of the same three real LibriSpeech speakers over real noise (made by
    benchmarks/real_conversations.py from examples/real/voices): every person is one global id
    in every file (measured: pair precision and recall 100 %, 3 global speakers; DER 10.3 %)."""
    from benchmarks.real_conversations import make_conversations

    corpus = tmp_path / "conversations"
    make_conversations(str(corpus), "dev", 3, 1, str(REAL / "voices"))
    out = tmp_path / "out"
    assert main(["diarize", str(corpus / "audio"), "--out", str(out), "-q"]) == 0
    report = evaluate_run(str(corpus / "rttm"), str(out))
    assert report.der <= 0.15, report.text()
    assert report.true_pairs == 9
    assert report.pair_f1 >= 0.9 and report.global_speakers == 3, report.text()


def test_campplus_config_diarizes_the_sample(ray_local, tmp_path):
    """examples/campplus.yaml: the bundled CAM++ model (pitch cue on, no band-limited windows)
    through the whole job. Measured on the sample: DER 1.9 %, 5 of 5 counts exact, every
    file-speaker on its voice's id, no merge."""
    out = tmp_path / "cam"
    config = SAMPLE.parents[0] / "campplus.yaml"
    args = ["diarize", str(SAMPLE / "audio"), "--out", str(out), "--config", str(config)]
    assert main([*args, "--quiet"]) == 0
    assert (
        json.loads((out / "_run.json").read_text())["config"]["diarization"]["embedding"]["model"]
        == "campplus"
    )
    speakers = pd.read_parquet(out / "speakers")
    assert len(speakers["centroid"].iloc[0]) == 192
    assert speakers["pitch_hz"].between(60, 400).all()  # the pitch cue is measured
    report = evaluate_run(str(SAMPLE / "rttm"), str(out))
    assert report.der <= 0.06, report.text()
    assert report.count_exact >= 0.8, report.text()
    assert report.identity_coverage >= 0.85 and report.merged_voices == 0, report.text()


def test_profiles_config_diarizes_the_sample_and_relinks_without_them(ray_local, tmp_path):
    """examples/profiles.yaml: GE2E windows plus a CAM++ profile per file-speaker. Measured on
    the sample: every file-speaker on its voice's id (92.9 % without profiles), no merge. A
    linking-only change afterwards (profiles weighted 0) reuses every committed file."""
    out = tmp_path / "prof"
    config = SAMPLE.parents[0] / "profiles.yaml"
    args = ["diarize", str(SAMPLE / "audio"), "--out", str(out), "-q"]
    assert main([*args, "--config", str(config)]) == 0
    centroids = pd.read_parquet(out / "_shards" / "centroids")
    assert len(centroids) == 14
    assert all(len(p) == 192 and np.isfinite(p).all() for p in centroids["profile"])
    assert all(len(c) == 256 for c in centroids["centroid"])
    assert len(pd.read_parquet(out / "speakers")["centroid"].iloc[0]) == 256
    report = evaluate_run(str(SAMPLE / "rttm"), str(out))
    assert report.der <= 0.06, report.text()
    assert report.count_exact >= 0.8, report.text()
    assert report.identity_coverage >= 0.95 and report.merged_voices == 0, report.text()
    shards = sorted((p, p.stat().st_mtime_ns) for p in (out / "_shards").rglob("*"))
    weightless = tmp_path / "weightless.yaml"
    weightless.write_text(config.read_text() + "linking: {profile_weight: 0.0}\n")
    assert main([*args, "--config", str(weightless)]) == 0
    assert sorted((p, p.stat().st_mtime_ns) for p in (out / "_shards").rglob("*")) == shards
    assert json.loads((out / "_run.json").read_text())["config"]["linking"]["profile_weight"] == 0
    # The profiles did the work: without them the same files link as the default does (measured
    # 92.9 % identity).
    assert evaluate_run(str(SAMPLE / "rttm"), str(out)).identity_coverage < report.identity_coverage


def test_a_profile_model_that_cannot_load_fails_before_any_file(ray_local, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text('diarization:\n  profile: {model: "campplus:/nonexistent/w.pt"}\n')
    out = tmp_path / "out"
    args = ["diarize", str(SAMPLE / "audio"), "--out", str(out), "--config", str(config), "-q"]
    assert main(args) == 2
    assert "model path does not exist: /nonexistent/w.pt" in capsys.readouterr().err
    assert not out.exists()


def test_a_failed_profile_pass_is_named_as_its_stage(tmp_path):
    """The profile actor's failures carry their stage, which the driver writes to errors/ (an
    upstream clustering error passes through it unchanged)."""
    from audio_ops.profiles import ProfileConfig
    from pipelines.jobs.diarize import ProfileStage

    stage = ProfileStage(ProfileConfig(model="campplus", device="cpu"))
    result = {"centroids": [np.zeros(4)], "turns": [(0.0, 2.0, 0, 1.0, False)], "profiles": None}
    with pytest.raises(Exception) as caught:
        stage.add_profiles(dict(result), str(tmp_path / "gone.flac"))
    assert caught.value.voxflow_stage == "profile"
    audio = str(SAMPLE / "audio" / "conv01_clean_3spk.flac")
    assert stage.add_profiles(dict(result), audio)["profiles"].shape == (1, 192)


def test_tables_agree(run):
    segments = pd.read_parquet(run / "segments")
    speakers = pd.read_parquet(run / "speakers")
    files = pd.read_parquet(run / "files")
    ok = files[files["status"] == "ok"]
    assert set(segments["file_id"]) <= set(ok["file_id"])
    assert (segments["end"] > segments["start"]).all()
    assert np.allclose(segments["duration"], segments["end"] - segments["start"])
    assert segments["confidence"].between(0, 1).all()
    assert set(segments["speaker_global"]) == set(speakers["speaker_global"])
    # A global speaker's speech and file count are what its segments say.
    per_global = segments.groupby("speaker_global").agg(
        seconds=("duration", "sum"), files=("file_id", "nunique")
    )
    merged = speakers.set_index("speaker_global").join(per_global)
    assert np.allclose(merged["speech_seconds"], merged["seconds"], atol=1e-6)
    assert (merged["file_count"] == merged["files"]).all()
    # CAM++ voice prints; the segmentation method measures no pitch (a cue of the windows one).
    assert len(speakers["centroid"].iloc[0]) == 192
    assert speakers["pitch_hz"].isna().all()
    # Within a file, one local label maps to one global id and two labels never share one.
    pairs = segments.drop_duplicates(["file_id", "speaker"])
    assert not pairs.duplicated(["file_id", "speaker_global"]).any()
    for _, row in ok.iterrows():
        assert row["num_speakers"] == pairs[pairs["file_id"] == row["file_id"]].shape[0]


def test_export_rttm_and_eval_cli(run, tmp_path, capsys):
    assert main(["export", "rttm", str(run), "--to", str(tmp_path / "rttm")]) == 0
    stems = sorted(p.stem for p in (tmp_path / "rttm").glob("*.rttm"))
    assert {p.stem for p in (SAMPLE / "audio").iterdir()} <= set(stems)
    turns = read_rttm(tmp_path / "rttm" / "conv01_clean_3spk.rttm")
    assert {t.speaker for t in turns} == {"S0", "S1", "S2"}
    assert main(["export", "rttm", str(run), "--to", str(tmp_path / "g"), "--global"]) == 0
    assert all(
        t.speaker.startswith("G") for t in read_rttm(tmp_path / "g" / "conv01_clean_3spk.rttm")
    )
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                "diarization",
                "--ref",
                str(SAMPLE / "rttm"),
                "--hyp",
                str(run),
                "--json",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "OVERALL" in printed and "global identity" in printed
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["der"] <= 0.12
    # RTTM folders work as hypotheses too (file ids with spaces included: RTTM splits on them).
    spaced = tmp_path / "rttm" / "name with spaces.rttm"
    if spaced.exists():
        assert {t.file for t in read_rttm(spaced)} <= {"name_with_spaces"}
    assert (
        main(
            ["eval", "diarization", "--ref", str(SAMPLE / "rttm"), "--hyp", str(tmp_path / "rttm")]
        )
        == 0
    )


def test_long_file_in_chunks_matches_the_single_process_result(ray_local, tmp_path):
    """A 90 s file of three real recordings, decoded in 20 s blocks: the pipeline's turns are
    those of one pass over the whole signal in this process."""
    long = np.concatenate(
        [load_audio(str(p), 16000)[0] for p in sorted((REAL / "audio").iterdir())]
    )
    sf.write(str(tmp_path / "long.flac"), long, 16000)
    (tmp_path / "run.yaml").write_text("diarization:\n  chunk: {seconds: 20.0}\n")
    out = tmp_path / "out"
    args = ["diarize", str(tmp_path / "long.flac"), "--out", str(out)]
    assert main([*args, "--config", str(tmp_path / "run.yaml"), "-q"]) == 0
    segments = pd.read_parquet(out / "segments").sort_values(["start", "speaker"])
    config = SegmentationDiarizationConfig(device="cpu")
    expected = diarize_audio_segmentation(
        load_audio(str(tmp_path / "long.flac"), 16000)[0],
        load_segmentation(SegmentationConfig(device="cpu")),
        make_encoder(config.embedding_config()),
        config,
    )
    turns = sorted(expected["turns"], key=lambda t: (t.start, f"S{t.speaker}"))
    assert len(segments) == len(turns)
    np.testing.assert_allclose(segments["start"], [t.start for t in turns], atol=1e-6)
    np.testing.assert_allclose(segments["end"], [t.end for t in turns], atol=1e-6)
    assert list(segments["speaker"]) == [f"S{t.speaker}" for t in turns]
    assert list(segments["overlap"]) == [t.overlap for t in turns]
    assert segments["speaker"].nunique() == len(expected["centroids"]) >= 4
    files = pd.read_parquet(out / "files")
    assert files["duration"].iloc[0] == pytest.approx(len(long) / 16000, abs=0.01)


def test_long_file_in_chunks_matches_the_single_process_result_windows(ray_local, tmp_path):
    a, _ = load_audio(str(SAMPLE / "audio" / "conv01_clean_3spk.flac"), 16000)
    b, _ = load_audio(str(SAMPLE / "audio" / "conv02_noisy_2spk.flac"), 16000)
    long = np.concatenate([a, b, a])
    sf.write(str(tmp_path / "long.flac"), long, 16000)
    (tmp_path / "run.yaml").write_text(
        "diarization:\n  method: windows\n  chunk:\n    seconds: 20.0\n    overlap: 2.0\n"
    )
    out = tmp_path / "out"
    assert (
        main(
            [
                "diarize",
                str(tmp_path / "long.flac"),
                "--out",
                str(out),
                "--config",
                str(tmp_path / "run.yaml"),
                "-q",
            ]
        )
        == 0
    )
    segments = pd.read_parquet(out / "segments").sort_values("start")
    config = DiarizationConfig(method="windows", chunk=ChunkConfig(seconds=20.0, overlap=2.0))
    expected = diarize_audio(long, config, SileroVAD(), GE2EEncoder(device="cpu"))
    assert len(segments) == len(expected.turns)
    np.testing.assert_allclose(segments["start"], [t.start for t in expected.turns], atol=0.02)
    np.testing.assert_allclose(segments["end"], [t.end for t in expected.turns], atol=0.02)
    assert list(segments["speaker"]) == [f"S{t.speaker}" for t in expected.turns]
    assert segments["speaker"].nunique() == len(expected.centroids) >= 4
    files = pd.read_parquet(out / "files")
    assert files["duration"].iloc[0] == pytest.approx(len(long) / 16000, abs=0.01)


def test_num_speakers_and_enrollment(ray_local, tmp_path):
    audio, _ = load_audio(str(SAMPLE / "audio" / "conv01_clean_3spk.flac"), 16000)
    slt = [
        t for t in read_rttm(SAMPLE / "rttm" / "conv01_clean_3spk.rttm") if t.speaker == "flite_slt"
    ]
    clip = np.concatenate(
        [audio[int(t.start * 16000) : int((t.start + t.duration) * 16000)] for t in slt]
    )
    sf.write(str(tmp_path / "alice.wav"), clip, 16000)
    pd.DataFrame({"name": ["Alice"], "path": ["alice.wav"]}).to_csv(
        tmp_path / "known.csv", index=False
    )
    inputs = [
        str(SAMPLE / "audio" / n)
        for n in ("conv03_overlap_4spk.flac", "conv05_stereo44k_3spk.ogg", "conv02_noisy_2spk.flac")
    ]
    out = tmp_path / "out"
    assert main(["diarize", *inputs, "--out", str(out), "-q"]) == 0
    assert pd.read_parquet(out / "speakers")["name"].isna().all()
    shards = sorted((p, p.stat().st_mtime_ns) for p in (out / "_shards").rglob("*"))
    # Known speakers added to a finished run: named without diarizing the files again.
    assert (
        main(
            ["diarize", *inputs, "--out", str(out), "--speakers", str(tmp_path / "known.csv"), "-q"]
        )
        == 0
    )
    assert sorted((p, p.stat().st_mtime_ns) for p in (out / "_shards").rglob("*")) == shards
    speakers = pd.read_parquet(out / "speakers")
    named = speakers[speakers["name"] == "Alice"]
    assert len(named) == 1 and named["file_count"].iloc[0] == 2  # slt speaks in conv03 and conv05
    fixed = tmp_path / "fixed"
    assert main(["diarize", *inputs, "--out", str(fixed), "--num-speakers", "2", "-q"]) == 0
    assert (pd.read_parquet(fixed / "files")["num_speakers"] == 2).all()
