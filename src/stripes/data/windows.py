"""Windows: fixed-length (song, start tick) slices of the songs, per split.

Lengths are in bars (4/4: a bar = beats_per_bar × ticks_per_quarter ticks); the hop between two
window starts is in bars too (hop < bars = overlapping windows). Only whole windows are kept:
starts 0, hop, 2·hop, … while start + length ≤ song length.
"""

from __future__ import annotations

import numpy as np


def bar_ticks(ticks_per_quarter: int, beats_per_bar: int = 4) -> int:
    return ticks_per_quarter * beats_per_bar


def window_starts(n_ticks: int, length: int, hop: int) -> np.ndarray:
    """Start ticks of the whole windows of `length` ticks, every `hop` ticks, in a song."""
    if length <= 0 or hop <= 0:
        raise ValueError(f"window length {length} and hop {hop} must be positive")
    if n_ticks < length:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_ticks - length + 1, hop, dtype=np.int64)


def window_index(song_lengths: np.ndarray, song_rows: np.ndarray, length: int, hop: int) -> np.ndarray:
    """(n, 2) int64 rows (song row in the cache, start tick) for the songs `song_rows`."""
    rows = [np.stack([np.full(len(s), r), s], axis=1)
            for r in song_rows for s in [window_starts(int(song_lengths[r]), length, hop)]]
    rows = [r for r in rows if len(r)]
    return np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, 2), dtype=np.int64)
