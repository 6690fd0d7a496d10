"""Run configuration: unknown keys and wrong types name the key; hashes are stable."""

from __future__ import annotations

import pytest

from pipelines.engine.config import (
    ConfigError,
    ProbeRunConfig,
    StageResources,
    config_hash,
    load_config,
)


def test_yaml_is_parsed_into_operator_configs(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "probe:\n  min_duration: 0.5\nresources:\n  probe:\n    num_cpus: 0.25\n    batch_size: 8\n"
    )
    config = load_config(ProbeRunConfig, str(path))
    assert config.probe.min_duration == 0.5
    assert config.resources["probe"] == StageResources(num_cpus=0.25, batch_size=8)


@pytest.mark.parametrize(
    "text,message",
    [
        ("probe:\n  min_duraton: 0.5\n", "unknown key probe.min_duraton"),
        ("probe:\n  min_duration: fast\n", "probe.min_duration: expected float"),
        ("resources:\n  probe:\n    batch_size: 0\n", "batch_size must be >= 1"),
        ("resources:\n  probe:\n    num_cpus: 0\n", "num_cpus > 0 or num_gpus > 0"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("probe: [1, 2\n", "not valid YAML"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, message):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(ProbeRunConfig, str(path))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(ProbeRunConfig, str(tmp_path / "absent.yaml"))


def test_overrides_and_hash():
    a = load_config(ProbeRunConfig, None, {"probe.min_duration": 0.2})
    b = load_config(ProbeRunConfig, None, {"probe.min_duration": 0.2, "probe.block_frames": None})
    c = load_config(ProbeRunConfig, None, {"probe.min_duration": 0.3})
    assert a == b and config_hash(a) == config_hash(b) != config_hash(c)


def _diarize_hash_without(config, diarization_keys: tuple[str, ...]) -> str:
    """The hash an older voxflow computed for a diarize config (or its ``shard_config``): its
    canonical JSON without ``diarization_keys`` of the diarization section, nor the options
    added later that every such version left out at their defaults (``diarization.profile``,
    ``diarization.embedding.runtime``, ``linking.profile_weight``)."""
    import hashlib
    import json

    from pipelines.engine.config import to_dict

    data = to_dict(config)
    diarization = data["diarization"] if "diarization" in data else data
    for key in ("profile", *diarization_keys):
        diarization.pop(key)
    diarization["embedding"].pop("runtime")
    data.get("linking", {}).pop("profile_weight", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def test_options_added_later_keep_older_run_folders_resumable():
    """An option added after run folders existed (here diarization.profile,
    diarization.embedding.runtime, linking.profile_weight, and diarization.method with its
    segmentation section) does not change the hash while it holds the value that matches the
    older behaviour: the hash equals what a voxflow without the option computed, so an upgrade
    does not refuse those folders. Set away from it, it does change the hash; the segmentation
    method, the new default, is such a change (older folders resume with method: windows)."""
    from pipelines.jobs.diarize import DiarizeRunConfig, shard_config

    def before_the_option(config):
        return _diarize_hash_without(config, ("method", "segmentation"))

    windows = {"diarization.method": "windows"}
    config = load_config(DiarizeRunConfig, None, windows)
    assert config_hash(config) == before_the_option(config)
    assert config_hash(shard_config(config)) == before_the_option(shard_config(config))
    assert config_hash(DiarizeRunConfig()) != config_hash(config)
    on = load_config(DiarizeRunConfig, None, {**windows, "diarization.profile.model": "campplus"})
    weighted = load_config(DiarizeRunConfig, None, {**windows, "linking.profile_weight": 0.7})
    torch_only = load_config(
        DiarizeRunConfig, None, {**windows, "diarization.embedding.runtime": "torch"}
    )
    assert config_hash(shard_config(torch_only)) != config_hash(shard_config(config))
    assert config_hash(on) != config_hash(config)
    assert config_hash(shard_config(on)) != config_hash(shard_config(config))
    assert config_hash(weighted) != config_hash(config)
    assert config_hash(shard_config(weighted)) == config_hash(shard_config(config))
    # Under windows the segmentation section is never read, so it never counts.
    unread = load_config(DiarizeRunConfig, None, {**windows, "diarization.segmentation.step": 5.0})
    assert config_hash(unread) == config_hash(config)


def test_segmentation_defaults_of_2026_12_08_refuse_older_folders_which_resume_with_warm_up_0():
    """Until 2026-12-07 the hash left the segmentation section out while it held its defaults,
    so its default changes never reached the hash. The section now counts in full, except where
    it holds those older defaults: a folder of that version resumes with ``warm_up: 0``."""
    from pipelines.jobs.diarize import DiarizeRunConfig, shard_config

    def before_warm_up(config):
        return _diarize_hash_without(config, ("segmentation",))

    now = DiarizeRunConfig()
    older = load_config(DiarizeRunConfig, None, {"diarization.segmentation.warm_up": 0.0})
    for make in (lambda c: c, shard_config):
        assert config_hash(make(older)) == before_warm_up(make(older))
        assert config_hash(make(now)) != config_hash(make(older))
    # From now on the section at its defaults is hashed in full, so a later change of any of
    # its defaults changes the hash.
    from pipelines.engine.config import _hash_view

    hashed = _hash_view(now)["diarization"]["segmentation"]
    assert hashed["warm_up"] == 0.25 and hashed["step"] == 2.5 and hashed["split_threshold"] == 0.6
