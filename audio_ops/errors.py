"""Typed audio errors.

Every failure an operator can meet on one input maps to one of these classes, so a pipeline turns
it into an error row (file, stage, kind, message) instead of crashing the job. ``kind`` is the
stable, machine-readable name that goes into the ``error_kind`` column.
"""

from __future__ import annotations


class AudioError(Exception):
    """Base class of every per-input audio failure."""

    kind = "audio_error"


class AudioNotFoundError(AudioError):
    """The input URL does not exist or is not a readable file."""

    kind = "not_found"


class EmptyAudioError(AudioError):
    """The input has zero bytes or decodes to zero samples."""

    kind = "empty"


class AudioDecodeError(AudioError):
    """No decoder could read the input (corrupt, truncated or not audio)."""

    kind = "decode_error"


class TooShortError(AudioError):
    """The input decodes, but is shorter than the stage's minimum duration."""

    kind = "too_short"


class NonFiniteAudioError(AudioError):
    """The decoded samples contain NaN or infinity."""

    kind = "non_finite"


class InvalidWindowError(AudioError):
    """A requested ``[start, end)`` window is empty or outside the file."""

    kind = "invalid_window"


def error_kind(exc: BaseException) -> str:
    """The stable error-kind name of an exception (``AudioError.kind`` or the class name).

    Args:
        exc: any exception raised while processing one input.
    """
    if isinstance(exc, AudioError):
        return exc.kind
    if isinstance(exc, MemoryError):
        return "out_of_memory"
    return type(exc).__name__
