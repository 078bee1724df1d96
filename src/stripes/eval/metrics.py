"""The four harmonization metrics of [S] §IV-F (spec §6): CS, SSMD, GS, NDD.

Every function takes binary pianorolls ``target`` and ``prediction`` of shape (T, 128) or
(B, T, 128) at ``ticks_per_quarter`` (k) ticks per quarter note, in 4/4, and returns a float (2-D
input) or a (B,) float array (3-D input). An optional boolean ``mask`` (T,) or (B, T) marks the real
ticks of padded windows; it must be a prefix (True then False). Only whole units that lie inside the
real ticks are scored; a trailing partial unit is dropped (spec §6).

Definitions (spec §6, decisions 9.6–9.7):

* onset at (t, pitch): active at t and not at t-1 (active at t = 0 is an onset);
* half-measure = 2k ticks, quarter = k ticks, sixteenth = k/4 ticks;
* chroma-onset vector of a half-measure: number of onsets per pitch class (12-d);
* cosine of two count vectors: 1 when both are zero (agreeing silence), 0 when exactly one is;
* **CS** (↑) = 100 · mean over half-measures of cos(target vector, prediction vector);
* **SSMD** (↓) = 25 · mean |SSM_target − SSM_prediction|, SSM = pairwise cosines of the
  half-measure vectors of one roll (spec decision 10: [S]'s values are half of [F]'s, and a silent
  prediction scores 13.6 on our 16-bar test windows against [S]'s weakest models' 14.65, so [S]'s
  effective scale is 25, not the 50 its text suggests);
* **GS** (↑) = 100 · fraction of quarters whose "contains an onset" flags agree;
* **NDD** (↓) = 100 · Σ_s max(n_t(s) − n_p(s), 0) / Σ_s n_t(s), n(s) = number of distinct pitches
  active at any tick of sixteenth s; 0 when the target is silent.

A window with no whole unit inside its real ticks gets NaN (CS, SSMD, GS).
"""

from __future__ import annotations

import numpy as np

NUM_PITCHES = 128
NUM_CHROMA = 12
METRICS = ("CS", "SSMD", "GS", "NDD")
#: +1 when higher is better, -1 when lower is better.
DIRECTION = {"CS": 1, "SSMD": -1, "GS": 1, "NDD": -1}


def _prepare(target, prediction, mask):
    """Return (target, prediction) as bool (B, T, 128), lengths (B,), and whether input was 2-D."""
    target = np.asarray(target)
    prediction = np.asarray(prediction)
    if target.shape != prediction.shape:
        raise ValueError(f"target shape {target.shape} != prediction shape {prediction.shape}")
    if target.ndim not in (2, 3) or target.shape[-1] != NUM_PITCHES:
        raise ValueError(f"expected (T, 128) or (B, T, 128) rolls, got shape {target.shape}")
    single = target.ndim == 2
    if single:
        target, prediction = target[None], prediction[None]
        mask = None if mask is None else np.asarray(mask)[None]
    target = target.astype(bool, copy=False)
    prediction = prediction.astype(bool, copy=False)
    n_batch, n_time, _ = target.shape
    if mask is None:
        lengths = np.full(n_batch, n_time, dtype=np.int64)
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (n_batch, n_time):
            raise ValueError(f"mask shape {mask.shape} does not match rolls {(n_batch, n_time)}")
        lengths = mask.sum(axis=1)
        if not np.array_equal(mask, np.arange(n_time)[None, :] < lengths[:, None]):
            raise ValueError("mask must be a prefix of True ticks followed by False (padding)")
        keep = mask[:, :, None]
        target = target & keep
        prediction = prediction & keep
    return target, prediction, lengths, single


def _unit_ticks(ticks_per_quarter: int, quarters: float) -> int:
    ticks = ticks_per_quarter * quarters
    if ticks < 1 or ticks != int(ticks):
        raise ValueError(
            f"ticks_per_quarter={ticks_per_quarter} gives a non-integer unit of {ticks} ticks "
            f"({quarters} quarter); use a multiple of 4"
        )
    return int(ticks)


def _split_units(x: np.ndarray, unit: int) -> np.ndarray:
    """(B, T, ...) -> (B, U, unit, ...) with U = T // unit (the trailing partial unit is dropped)."""
    n_units = x.shape[1] // unit
    return x[:, : n_units * unit].reshape((x.shape[0], n_units, unit) + x.shape[2:])


def _valid_units(lengths: np.ndarray, n_units: int, unit: int) -> np.ndarray:
    """(B, U) bool: unit u is scored when it lies entirely inside the real ticks."""
    return (np.arange(1, n_units + 1)[None, :] * unit) <= lengths[:, None]


def onsets(roll: np.ndarray) -> np.ndarray:
    """Boolean onsets of a (..., T, P) roll: active at t and inactive at t-1 (t = 0: active)."""
    roll = np.asarray(roll, dtype=bool)
    previous = np.zeros_like(roll)
    previous[..., 1:, :] = roll[..., :-1, :]
    return roll & ~previous


def chroma_onset_vectors(roll: np.ndarray, ticks_per_quarter: int) -> np.ndarray:
    """(B, T, 128) roll -> (B, U, 12) onset counts per pitch class per half-measure (2k ticks)."""
    unit = _unit_ticks(ticks_per_quarter, 2)
    counts = _split_units(onsets(roll), unit).sum(axis=2, dtype=np.int64)  # (B, U, 128)
    padded = np.zeros(counts.shape[:2] + (132,), dtype=np.int64)
    padded[..., :NUM_PITCHES] = counts
    return padded.reshape(counts.shape[:2] + (11, NUM_CHROMA)).sum(axis=2)


def _cosine_from_parts(dot, norm_a, norm_b):
    zero_a, zero_b = norm_a == 0, norm_b == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = dot / (norm_a * norm_b)
    return np.where(zero_a & zero_b, 1.0, np.where(zero_a | zero_b, 0.0, cos))


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity along the last axis with the silence convention (both 0 → 1, one 0 → 0)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return _cosine_from_parts((a * b).sum(-1), np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1))


def self_similarity(vectors: np.ndarray) -> np.ndarray:
    """(B, U, D) -> (B, U, U) pairwise cosine similarities (silence convention as above)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=-1)
    dots = vectors @ np.swapaxes(vectors, -1, -2)
    return _cosine_from_parts(dots, norms[..., :, None], norms[..., None, :])


def _masked_mean(values: np.ndarray, valid: np.ndarray, axes) -> np.ndarray:
    count = valid.sum(axis=axes)
    total = np.where(valid, values, 0.0).sum(axis=axes)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _finish(values: np.ndarray, single: bool):
    return float(values[0]) if single else values.astype(np.float64)


def chroma_similarity(target, prediction, ticks_per_quarter: int, mask=None):
    """CS ↑ ([S] §IV-F): 100 · mean over half-measures of the chroma-onset cosine similarity."""
    target, prediction, lengths, single = _prepare(target, prediction, mask)
    chroma_t = chroma_onset_vectors(target, ticks_per_quarter)
    chroma_p = chroma_onset_vectors(prediction, ticks_per_quarter)
    valid = _valid_units(lengths, chroma_t.shape[1], _unit_ticks(ticks_per_quarter, 2))
    return _finish(100.0 * _masked_mean(cosine_rows(chroma_t, chroma_p), valid, 1), single)


#: SSMD = SSMD_SCALE · mean |ΔSSM| (spec decision 10: [S]'s scale; [F]'s values are twice these).
SSMD_SCALE = 25.0


def ssm_distance(target, prediction, ticks_per_quarter: int, mask=None):
    """SSMD ↓ ([S] §IV-F, Wu & Yang): 25 · mean |SSM_target − SSM_prediction| over half-measures.

    The mean runs over every (u, v) pair of whole half-measures inside the real ticks, diagonal
    included; the scale 25 puts values on [S]'s scale (spec decision 10). Range [0, 50].
    """
    target, prediction, lengths, single = _prepare(target, prediction, mask)
    ssm_t = self_similarity(chroma_onset_vectors(target, ticks_per_quarter))
    ssm_p = self_similarity(chroma_onset_vectors(prediction, ticks_per_quarter))
    valid = _valid_units(lengths, ssm_t.shape[1], _unit_ticks(ticks_per_quarter, 2))
    pair_valid = valid[:, :, None] & valid[:, None, :]
    return _finish(SSMD_SCALE * _masked_mean(np.abs(ssm_t - ssm_p), pair_valid, (1, 2)), single)


def grooving_pattern(roll: np.ndarray, ticks_per_quarter: int) -> np.ndarray:
    """(B, T, 128) -> (B, Q) bool: quarter q contains at least one onset (any pitch)."""
    unit = _unit_ticks(ticks_per_quarter, 1)
    return _split_units(onsets(roll), unit).any(axis=(2, 3))


def grooving_similarity(target, prediction, ticks_per_quarter: int, mask=None):
    """GS ↑ ([S] §IV-F, [F] §IV-E, decision 9.7): 100 · fraction of quarters whose onset flags agree."""
    target, prediction, lengths, single = _prepare(target, prediction, mask)
    pattern_t = grooving_pattern(target, ticks_per_quarter)
    pattern_p = grooving_pattern(prediction, ticks_per_quarter)
    valid = _valid_units(lengths, pattern_t.shape[1], _unit_ticks(ticks_per_quarter, 1))
    agree = (pattern_t == pattern_p).astype(np.float64)
    return _finish(100.0 * _masked_mean(agree, valid, 1), single)


def note_density(roll: np.ndarray, ticks_per_quarter: int) -> np.ndarray:
    """(B, T, 128) -> (B, S) number of distinct pitches active at any tick of each sixteenth note."""
    unit = _unit_ticks(ticks_per_quarter, 0.25)
    return _split_units(roll, unit).any(axis=2).sum(axis=-1, dtype=np.int64)


def note_density_distance(target, prediction, ticks_per_quarter: int, mask=None):
    """NDD ↓ ([S] §IV-F): 100 · Σ max(n_t − n_p, 0) / Σ n_t over sixteenths (0 if target silent)."""
    target, prediction, lengths, single = _prepare(target, prediction, mask)
    density_t = note_density(target, ticks_per_quarter)
    density_p = note_density(prediction, ticks_per_quarter)
    valid = _valid_units(lengths, density_t.shape[1], _unit_ticks(ticks_per_quarter, 0.25))
    missing = np.where(valid, np.maximum(density_t - density_p, 0), 0).sum(axis=1)
    total = np.where(valid, density_t, 0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ndd = np.where(total > 0, 100.0 * missing / np.maximum(total, 1), 0.0)
    return _finish(ndd, single)


METRIC_FUNCTIONS = {
    "CS": chroma_similarity,
    "SSMD": ssm_distance,
    "GS": grooving_similarity,
    "NDD": note_density_distance,
}


def all_metrics(target, prediction, ticks_per_quarter: int, mask=None) -> dict:
    """All four metrics as {name: float or (B,) array}."""
    return {name: fn(target, prediction, ticks_per_quarter, mask=mask) for name, fn in METRIC_FUNCTIONS.items()}
