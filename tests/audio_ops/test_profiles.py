"""Speaker profiles for linking (audio_ops.profiles)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import SAMPLE, synthetic_voices, voice_samples

from audio_ops.linking import LinkingConfig, link_speakers
from pipelines.reports.evaluate import read_rttm


def test_profiles_keep_apart_voices_the_centroids_confuse():
    """Pairs of voices whose window centroids coincide (as espeak variants do for GE2E) stay
    apart when each file-speaker also has a profile; exact and blocked linking agree, and the
    speakers of one file never share an id."""
    from sklearn.metrics import adjusted_rand_score

    voices, rng = synthetic_voices(40)
    profile_voices = synthetic_voices(40, seed=2)[0]
    files = np.repeat(np.arange(300), 3)
    who = np.concatenate([rng.choice(40, 3, replace=False) for _ in range(300)])
    x = voice_samples(voices, rng, who // 2 * 2, spread=0.1)  # voices 2j and 2j+1 look alike
    profiles = voice_samples(profile_voices, rng, who, spread=0.1)
    plain = link_speakers(x, np.ones(len(x)), files, LinkingConfig(block_size=5000))
    assert adjusted_rand_score(who, plain) < 0.7
    for block in (5000, 200):
        config = LinkingConfig(block_size=block)
        labels = link_speakers(x, np.ones(len(x)), files, config, profiles=profiles)
        assert adjusted_rand_score(who, labels) > 0.95
        for f in range(300):
            assert len(set(labels[files == f])) == 3
    off = LinkingConfig(block_size=5000, profile_weight=0.0)
    np.testing.assert_array_equal(
        link_speakers(x, np.ones(len(x)), files, off, profiles=profiles), plain
    )


def test_a_file_speaker_without_profile_is_not_linked_on_a_loose_centroid():
    voices, rng = synthetic_voices(3)
    who = np.array([0, 1, 2, 0, 1, 2, 0])
    files = np.array([0, 0, 0, 1, 1, 1, 2])
    x = voice_samples(voices, rng, who, spread=0.05)
    profiles = voice_samples(synthetic_voices(3, seed=3)[0], rng, who, spread=0.05)
    profiles[-1] = np.nan  # the last file's speaker had no speech to read back
    labels = link_speakers(x, np.ones(7), files, LinkingConfig(), profiles=profiles)
    assert labels[:6].tolist() == [0, 1, 2, 0, 1, 2]
    assert labels[6] == 3
    with pytest.raises(ValueError, match="one row per centroid"):
        link_speakers(x, np.ones(7), files, LinkingConfig(), profiles=profiles[:3])


def test_profile_spans_take_the_longest_clean_turns_up_to_the_cap():
    from audio_ops.profiles import ProfileConfig, profile_spans
    from audio_ops.turns import Turn

    turns = [
        Turn(0.0, 4.0, 0, 0.9, False),
        Turn(4.0, 14.0, 1, 0.9, False),
        Turn(14.0, 30.0, 0, 0.9, True),  # overlapped: not used while clean turns exist
        Turn(30.0, 42.0, 0, 0.9, False),
        Turn(42.0, 42.3, 0, 0.9, False),  # shorter than min_turn
        Turn(50.0, 60.0, 0, 0.9, False),
        Turn(60.0, 70.0, 2, 0.9, True),
        Turn(70.0, 70.2, 3, 0.9, False),
    ]
    spans = profile_spans(turns, 5, ProfileConfig(seconds=20.0))
    assert spans[0] == [(30.0, 42.0), (50.0, 58.0)]  # 12 s then 8 of the 10 s turn
    assert spans[1] == [(4.0, 14.0)]
    assert spans[2] == [(60.0, 70.0)]  # only overlapped speech: that is used
    assert spans[3] == [(70.0, 70.2)]  # only a short turn: that is used
    assert spans[4] == []
    # A cap that leaves a sliver of a turn: the sliver is not read (it would decode no samples).
    spans = profile_spans(turns, 1, ProfileConfig(seconds=12.0 + 1e-7))
    assert spans[0] == [(30.0, 42.0)]


def test_campplus_profiles_recognise_voices_across_files():
    """Profiles made from the reference turns of the sample: the same voice in two files is
    closer than any two different voices (oracle turns, so this tests the profile operator, not
    the clustering)."""
    from audio_ops.profiles import ProfileConfig, profile_encoder, speaker_profiles
    from audio_ops.turns import Turn

    config = ProfileConfig(model="campplus", device="cpu")
    encoder = profile_encoder(config)
    assert profile_encoder(config) is encoder  # loaded once per process
    vectors, names = [], []
    for stem in ("conv01_clean_3spk", "conv03_overlap_4spk", "conv05_stereo44k_3spk"):
        ref = read_rttm(SAMPLE / "rttm" / f"{stem}.rttm")
        voices = sorted({t.speaker for t in ref})
        turns = sorted(
            (Turn(t.start, t.start + t.duration, voices.index(t.speaker), 1.0, False) for t in ref),
            key=lambda t: t.start,
        )
        path = next((SAMPLE / "audio").glob(stem + ".*"))
        profiles = speaker_profiles(str(path), turns, len(voices), config, encoder)
        assert profiles.shape == (len(voices), 192) and np.isfinite(profiles).all()
        vectors.extend(profiles)
        names.extend(voices)
    # Turns that run past the end of the file (or lie wholly beyond it) are read as far as
    # the audio goes.
    past = [Turn(30.0, 60.0, 0, 1.0, False), Turn(70.0, 80.0, 1, 1.0, False)]
    late = speaker_profiles(
        str(SAMPLE / "audio" / "conv05_stereo44k_3spk.ogg"), past, 2, config, encoder
    )
    assert np.isfinite(late[0]).all() and np.isnan(late[1]).all()
    x = np.stack(vectors)
    sim = x @ x.T
    same = [sim[i, j] for i in range(len(x)) for j in range(i) if names[i] == names[j]]
    diff = [sim[i, j] for i in range(len(x)) for j in range(i) if names[i] != names[j]]
    assert len(same) >= 5
    assert min(same) > max(diff)
