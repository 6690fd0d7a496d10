"""Arrays in table cells: how the pipeline's chunk rows carry audio and per-chunk results."""

from __future__ import annotations

import numpy as np


def pack(array: np.ndarray) -> bytes:
    """An array as self-describing bytes (dtype and shape included)."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def unpack(data: bytes) -> np.ndarray:
    """The array :func:`pack` wrote."""
    import io

    return np.load(io.BytesIO(bytes(data)), allow_pickle=False)


def chunk_audio(row_audio: bytes) -> np.ndarray:
    """The float32 samples of a chunk row's ``audio`` column."""
    return np.frombuffer(row_audio, dtype=np.float32)
