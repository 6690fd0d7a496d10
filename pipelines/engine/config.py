"""Run configuration: YAML -> validated dataclasses, before the cluster is touched.

A run's YAML has one section per operator (``probe:``...) plus ``resources:`` (per stage
scheduling overrides). An unknown key or a value of the wrong type is a :class:`ConfigError`
naming the key's full path, e.g. ``probe.min_duration: expected float, got str``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from audio_ops import ADDED_LATER
from audio_ops.probe import ProbeConfig


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type, or out of range."""


@dataclass(frozen=True)
class StageResources:
    """How Ray schedules one stage.

    Fractional CPUs are the default on purpose: on a 2-core machine two actors that each hold a
    whole CPU starve the read and decode tasks forever (Ray Data backpressure waits on a CPU that
    never frees). With 0.5 CPU per stage every stage can always make progress.

    Args:
        num_cpus: CPUs reserved per task or actor (fractions allowed).
        num_gpus: GPUs per actor (fractions allowed); 0 runs on the CPU.
        memory: bytes of memory reserved per task or actor (0: no reservation).
        batch_size: rows per batch handed to the operator.
        min_actors: smallest actor-pool size (actor stages only).
        max_actors: largest actor-pool size (actor stages only).
    """

    num_cpus: float = 0.5
    num_gpus: float = 0.0
    memory: int = 0
    batch_size: int = 4
    min_actors: int = 1
    max_actors: int = 2

    def __post_init__(self) -> None:
        if self.num_cpus < 0 or self.num_gpus < 0 or self.memory < 0:
            raise ConfigError("num_cpus, num_gpus and memory must be >= 0")
        if self.num_cpus == 0 and self.num_gpus == 0:
            raise ConfigError("a stage needs num_cpus > 0 or num_gpus > 0")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        if not 1 <= self.min_actors <= self.max_actors:
            raise ConfigError("need 1 <= min_actors <= max_actors")


@dataclass(frozen=True)
class ProbeRunConfig:
    """Everything ``voxflow probe`` runs with.

    Args:
        probe: thresholds of the inventory operator.
        resources: scheduling overrides by stage name (``probe``).
        extensions: audio file extensions a directory listing picks up; empty means the default set.
    """

    probe: ProbeConfig = field(default_factory=ProbeConfig)
    resources: dict[str, StageResources] = field(default_factory=dict)
    extensions: tuple[str, ...] = ()


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        key_tp, val_tp = args or (str, Any)
        return {
            _convert(k, key_tp, where): _convert(v, val_tp, f"{where}.{k}")
            for k, v in value.items()
        }
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        item_tp = args[0] if args else Any
        items = [_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected float, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected int, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected bool, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected str, got {type(value).__name__} {value!r}")
        return value
    return value


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types.

    Args:
        cls: a dataclass type whose fields are annotated.
        data: the mapping (for example a YAML section); ``None`` gives the defaults.
        where: dotted path of ``data`` in the whole config, for error messages.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(names))})")
    kwargs = {
        key: _convert(value, hints[key], f"{where}.{key}" if where else key)
        for key, value in data.items()
    }
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain JSON-able data."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def load_config(cls: type, path: str | None = None, overrides: dict[str, Any] | None = None) -> Any:
    """Read a YAML file (optional) into ``cls``, then apply ``overrides`` (dotted keys).

    Args:
        cls: the run's config dataclass (e.g. :class:`ProbeRunConfig`).
        path: a YAML file, local or fsspec URL; ``None`` for the defaults.
        overrides: ``{"probe.min_duration": 0.5}``-style values set after the file, as from
            command-line flags; ``None`` values are ignored.
    """
    data: dict[str, Any] = {}
    if path:
        import fsspec
        import yaml

        try:
            with fsspec.open(path, "r") as f:
                loaded = yaml.safe_load(f)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: the top level must be a mapping")
        data = loaded or {}
    return from_dict(cls, apply_overrides(data, overrides))


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Set ``{"probe.min_duration": 0.5}``-style values in a config mapping (in place; returned);
    ``None`` values are ignored."""
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return data


def build_config(cls: type, config: Any = None, overrides: dict[str, Any] | None = None) -> Any:
    """A run config from whatever a Python caller has: None (the defaults), a YAML file's path,
    a mapping as the YAML would hold, or an instance of ``cls``; then ``overrides`` (dotted
    keys), checked as a YAML file is.

    Raises:
        ConfigError: an unknown key, a wrong type, or a config of another class.
    """
    if config is None or isinstance(config, (str, os.PathLike)):
        return load_config(cls, None if config is None else os.fspath(config), overrides)
    if isinstance(config, cls):
        if not overrides:
            return config
        data = to_dict(config)
    elif isinstance(config, dict):
        data = copy.deepcopy(config)
    else:
        raise ConfigError(
            f"config: expected a YAML path, a mapping or a {cls.__name__}, not {type(config).__name__}"
        )
    return from_dict(cls, apply_overrides(data, overrides))


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def options_view(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """A run config's options dict for ``cls`` (``enhancement: {...}``) as hashed: as given,
    except for options of ``cls`` marked ``{**ADDED_LATER, "before": value}``: left out when they
    hold the older behaviour, present (their default when not given) when they do not. Folders
    written before such an option are then refused by its new default and resume when it is
    set to the old value, as for options of dataclass fields (:func:`_hash_view`)."""
    out = dict(options)
    for f in dataclasses.fields(cls):
        if f.metadata.get("hash") != ADDED_LATER["hash"] or "before" not in f.metadata:
            continue
        value = options.get(f.name, _default_of(f))
        if value == f.metadata["before"]:
            out.pop(f.name, None)
        else:
            out[f.name] = value
    return out


def hashed_options(config: Any, name: str, cls: type) -> Any:
    """``config`` with its options dict ``name`` (for ``cls``) as :func:`options_view` hashes
    it: what a job's ``identity`` returns."""
    return dataclasses.replace(config, **{name: options_view(cls, getattr(config, name))})


def _hash_view(obj: Any) -> Any:
    """:func:`to_dict`, less the options marked :data:`audio_ops.ADDED_LATER` that hold their
    defaults (or their ``before`` values), and less what a config's ``hash_omitted()`` names
    (options its other settings never read)."""
    if dataclasses.is_dataclass(obj):
        out = {}
        omitted = obj.hash_omitted() if hasattr(obj, "hash_omitted") else ()
        for f in dataclasses.fields(obj):
            if f.name in omitted:
                continue
            value = getattr(obj, f.name)
            if f.metadata.get("hash") == ADDED_LATER["hash"] and value == f.metadata.get(
                "before", _default_of(f)
            ):
                continue
            out[f.name] = _hash_view(value)
        return out
    if isinstance(obj, dict):
        return {str(k): _hash_view(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_hash_view(v) for v in obj]
    return obj


def config_hash(config: Any) -> str:
    """SHA-256 of a config's canonical JSON: equal configs, equal hashes. Options added later
    (:data:`audio_ops.ADDED_LATER`) count only when set away from their defaults."""
    text = json.dumps(_hash_view(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
