"""Plug-in mutual information between pitches and context labels (Table I) [S §V-A, spec §6].

Every active cell (t, pitch) of a pianoroll is one event (pitch, label_t); with joint counts
n(l, x) over all events (N in total),

    I(L; X) = Σ_{l,x} n(l,x)/N · log( n(l,x) · N / (n(l) · n(x)) )   [nats],

the plug-in (maximum-likelihood) estimate, as sklearn's mutual_info_score. Its positive bias is
about (|L|−1)(|X|−1) / (2N) nats (Miller–Madow), reported beside it.
"""

from __future__ import annotations

import numpy as np


def mutual_information_from_counts(counts: np.ndarray) -> float:
    """Plug-in MI in nats of a (labels, values) joint count matrix."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return 0.0
    rows, cols = counts.sum(1, keepdims=True), counts.sum(0, keepdims=True)
    nz = counts > 0
    ratio = counts[nz] * total / (rows @ cols)[nz]
    return float(max((counts[nz] / total * np.log(ratio)).sum(), 0.0))


def mutual_information(labels, values) -> float:
    """Plug-in MI in nats between two equally long sequences of discrete symbols."""
    _, li = np.unique(np.asarray(labels), return_inverse=True, axis=0 if np.ndim(labels) > 1 else None)
    _, vi = np.unique(np.asarray(values), return_inverse=True)
    counts = np.zeros((li.max() + 1, vi.max() + 1))
    np.add.at(counts, (li.ravel(), vi.ravel()), 1)
    return mutual_information_from_counts(counts)


class JointCounter:
    """Sparse joint counts of (label, pitch) events, accumulated window by window.

    `add(labels, roll)`: labels (T,) non-negative integers (one per tick), roll (T, 128·k) binary;
    every active cell (t, 128·track + pitch) adds one event (labels[t], pitch)."""

    def __init__(self, n_values: int = 128, flush_every: int = 256):
        self.n_values = n_values
        self.flush_every = flush_every
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.keys = np.zeros(0, dtype=np.int64)
        self.counts = np.zeros(0, dtype=np.int64)

    def add(self, labels: np.ndarray, roll: np.ndarray) -> None:
        t, col = np.nonzero(roll)
        self.add_events(np.asarray(labels, dtype=np.int64)[t], col % self.n_values)

    def add_events(self, labels: np.ndarray, values: np.ndarray) -> None:
        keys, counts = np.unique(labels * self.n_values + values, return_counts=True)
        self._pending.append((keys, counts))
        if len(self._pending) >= self.flush_every:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self.keys] + [k for k, _ in self._pending])
        counts = np.concatenate([self.counts] + [c for _, c in self._pending])
        self.keys, inverse = np.unique(keys, return_inverse=True)
        self.counts = np.bincount(inverse, weights=counts).astype(np.int64)
        self._pending = []

    def matrix(self) -> np.ndarray:
        """Dense (distinct labels, n_values) count matrix."""
        self._flush()
        _, rows = np.unique(self.keys // self.n_values, return_inverse=True)
        out = np.zeros((rows.max() + 1 if len(rows) else 0, self.n_values), dtype=np.int64)
        out[rows, self.keys % self.n_values] = self.counts
        return out

    @property
    def n_events(self) -> int:
        self._flush()
        return int(self.counts.sum())

    def mutual_information(self) -> float:
        return mutual_information_from_counts(self.matrix())

    def bias(self) -> float:
        """Miller–Madow bias estimate (|L|−1)(|X|−1)/(2N) over the observed labels and values."""
        m = self.matrix()
        n = m.sum()
        if n == 0:
            return 0.0
        n_labels, n_values = (m.sum(1) > 0).sum(), (m.sum(0) > 0).sum()
        return float((n_labels - 1) * (n_values - 1) / (2 * n))
