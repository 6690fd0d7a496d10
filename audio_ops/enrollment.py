"""Voice prints of known speakers, from reference audio, made as a diarization run makes its
speakers' centroids (so that they can be matched against the run's global speakers).

``voxflow diarize --speakers TABLE`` embeds each reference file of the table with
:class:`VoicePrinter` before the run starts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from audio_ops.diarization import DiarizationConfig
from audio_ops.segmentation import SAMPLE_RATE


class VoicePrinter:
    """Voice prints with the models of a diarization config, each loaded on first use.

    Args:
        config: the run's diarization config (its ``method`` decides how prints are made).
    """

    def __init__(self, config: DiarizationConfig):
        self.config = config
        self._loaded: dict[str, Any] = {}

    def _model(self, name: str):
        if name not in self._loaded:
            from audio_ops.embedding import make_encoder
            from audio_ops.segmentation import load_segmentation
            from audio_ops.vad import make_vad

            seg = self.config.segmentation
            make = {
                "segmentation": lambda: load_segmentation(seg.segmentation_config()),
                "local_encoder": lambda: make_encoder(seg.embedding_config()),
                "encoder": lambda: make_encoder(self.config.embedding),
                "vad": lambda: make_vad(self.config.vad),
            }[name]
            self._loaded[name] = make()
        return self._loaded[name]

    def voiceprint(self, audio: np.ndarray) -> np.ndarray | None:
        """The voice print of one speaker's reference audio: the centroid of the main speaker
        the segmentation method finds in it, or the unit mean of the windows method's window
        embeddings over its speech. None when it holds no speech.

        Args:
            audio: mono float samples at 16 kHz.
        """
        config = self.config
        if config.method == "segmentation":
            from audio_ops.neural_diarization import diarize_audio_segmentation

            result = diarize_audio_segmentation(
                audio,
                self._model("segmentation"),
                self._model("local_encoder"),
                config.segmentation,
            )
            if not len(result["centroids"]):
                return None
            return result["centroids"][int(np.argmax(result["speech_seconds"]))]
        from audio_ops.embedding import grid_windows
        from audio_ops.vad import detect_speech

        regions = detect_speech(audio, config.vad, self._model("vad"))
        starts = grid_windows(regions, 0.0, len(audio) / SAMPLE_RATE, config.embedding)
        if starts.size == 0:
            return None
        emb = self._model("encoder").embed(
            audio,
            np.round(starts * SAMPLE_RATE).astype(np.int64),
            int(config.embedding.window * SAMPLE_RATE),
        )
        mean = emb.mean(axis=0)
        return mean / max(np.linalg.norm(mean), 1e-12)
