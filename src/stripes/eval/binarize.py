"""Binarization of predicted pianoroll probabilities ([S] §IV-C grid, spec §6).

Two post-processings are compared in the paper's grid:

* ``threshold``: a cell is active when its sigmoid probability is >= ``thr`` (0.5 by default);
* ``threshold_merge``: the same, then every gap of at most ``max_gap`` inactive cells lying between two
  active cells of the same pitch is filled, so that a note broken by a short dropout becomes one note.

The paper thresholds at 0.5. A profile may add other thresholds to the grid (the cpu profile does,
issue 15: its small models are under-confident, so notes they are sure of stay below 0.5); the
threshold is then chosen on validation like the rest of the grid. Such a binarization is named
``<method>@<thr>`` (e.g. ``threshold_merge@0.2``, :func:`binarization_name`); the plain names mean
the paper's ``thr``.

Both are vectorised over every axis (no Python loop over pitches or time): the merge finds, for each
cell, the index of the previous and of the next active cell of its pitch with cumulative max/min.
Time is the second-to-last axis, pitch the last one: arrays are (T, P) or (..., T, P).
"""

from __future__ import annotations

import numpy as np

BINARIZATIONS = ("threshold", "threshold_merge")
PAPER_THRESHOLD = 0.5


def binarization_name(method: str, thr: float = PAPER_THRESHOLD) -> str:
    """Store name of ``method`` at threshold ``thr``: the bare method at the paper's 0.5, else
    ``<method>@<thr>`` (``%g``). Raises ValueError for an unknown method or thr outside (0, 1)."""
    if method not in BINARIZATIONS:
        raise ValueError(f"unknown binarization {method!r}; expected one of {BINARIZATIONS}")
    if not 0.0 < float(thr) < 1.0:
        raise ValueError(f"binarization threshold must lie in (0, 1), got {thr!r}")
    return method if float(thr) == PAPER_THRESHOLD else f"{method}@{float(thr):g}"


def parse_binarization(name: str) -> tuple[str, float | None]:
    """Inverse of :func:`binarization_name`: (method, threshold), threshold None for a bare name."""
    method, _, thr = str(name).partition("@")
    if method not in BINARIZATIONS:
        raise ValueError(f"unknown binarization {name!r}; expected one of {BINARIZATIONS}, "
                         f"optionally with '@<threshold>'")
    try:
        return method, (float(thr) if thr else None)
    except ValueError:
        raise ValueError(f"binarization {name!r}: threshold {thr!r} is not a number") from None


def threshold(probs: np.ndarray, thr: float = 0.5) -> np.ndarray:
    """Return the boolean roll ``probs >= thr`` (same shape as ``probs``)."""
    return np.asarray(probs) >= thr


def merge_gaps(active: np.ndarray, max_gap: int) -> np.ndarray:
    """Fill runs of at most ``max_gap`` inactive ticks enclosed by active ticks of the same pitch.

    ``active``: boolean (..., T, P). A run of inactive cells between time indices ``a`` and ``b``
    (both active, ``a < b``) is filled when ``b - a - 1 <= max_gap``. Leading and trailing silences
    are never filled. ``max_gap <= 0`` returns a copy.
    """
    active = np.asarray(active, dtype=bool)
    if active.ndim < 2:
        raise ValueError(f"merge_gaps expects (..., T, P) arrays, got shape {active.shape}")
    if max_gap <= 0:
        return active.copy()
    n_time = active.shape[-2]
    time_index = np.arange(n_time).reshape((n_time, 1))
    # index of the last active tick at or before t (-1 if none)
    prev_active = np.maximum.accumulate(np.where(active, time_index, -1), axis=-2)
    # index of the first active tick at or after t (n_time if none)
    next_flipped = np.where(active, time_index, n_time)[..., ::-1, :]
    next_active = np.minimum.accumulate(next_flipped, axis=-2)[..., ::-1, :]
    enclosed = (prev_active >= 0) & (next_active < n_time)
    gap_length = next_active - prev_active - 1
    return active | (enclosed & (gap_length <= max_gap))


def threshold_merge(probs: np.ndarray, max_gap: int, thr: float = 0.5) -> np.ndarray:
    """Threshold at ``thr`` then fill gaps of at most ``max_gap`` ticks (see :func:`merge_gaps`)."""
    return merge_gaps(threshold(probs, thr), max_gap)


def binarize(probs: np.ndarray, method: str, thr: float = 0.5, max_gap: int = 0) -> np.ndarray:
    """Dispatch on ``method``: a name in :data:`BINARIZATIONS`, or ``<method>@<thr>``, whose own
    threshold replaces ``thr`` (so a store's binarization name alone reproduces its roll)."""
    method, named_thr = parse_binarization(method)
    thr = thr if named_thr is None else named_thr
    if method == "threshold":
        return threshold(probs, thr)
    if method == "threshold_merge":
        return threshold_merge(probs, max_gap, thr)
    raise ValueError(f"unknown binarization {method!r}; expected one of {BINARIZATIONS}")
