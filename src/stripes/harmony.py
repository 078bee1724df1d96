"""Key and chord estimation for melodies that come without annotations (used by `harmonize`).

POP909 songs carry human/algorithmic chord and key labels; a user's melody does not. The
structure contexts (REP, KEY, BIN) need a chord per tick and a key per song, so we estimate them
from the notes themselves, with two classic, transparent methods:

* **Key**: Krumhansl–Kessler key profiles. The duration-weighted pitch-class histogram of the
  melody (and bridge) is correlated with the 24 rotated major/minor profiles; the best Pearson
  correlation wins (Krumhansl 1990, "Cognitive Foundations of Musical Pitch").
* **Chords**: template matching per segment (default: one half-measure, the harmonic rhythm of
  most POP909 songs). The segment's duration-weighted pitch-class vector is compared by cosine
  similarity with every chord template (the chord vocabulary's chroma rows); ties go to the
  earlier template, a silent segment repeats the previous chord ("no chord" at the start).
"""

from __future__ import annotations

import numpy as np

# Krumhansl & Kessler (1982) probe-tone ratings, C major / C minor.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def pitch_class_histogram(roll: np.ndarray) -> np.ndarray:
    """Duration-weighted pitch-class histogram (12,) of a binary pianoroll (T, 128)."""
    per_pitch = np.asarray(roll, dtype=np.float64).sum(axis=0)
    return np.bincount(np.arange(128) % 12, weights=per_pitch, minlength=12)


def estimate_key(roll: np.ndarray) -> tuple[int, str]:
    """Best Krumhansl–Kessler key of a pianoroll: (tonic pitch class 0–11, "maj" | "min")."""
    hist = pitch_class_histogram(roll)
    if hist.sum() == 0:
        raise ValueError("cannot estimate a key: the pianoroll has no notes")
    best, best_score = (0, "maj"), -np.inf
    for mode, profile in (("maj", MAJOR_PROFILE), ("min", MINOR_PROFILE)):
        for tonic in range(12):
            score = np.corrcoef(hist, np.roll(profile, tonic))[0, 1]
            if score > best_score + 1e-12:
                best, best_score = (tonic, mode), score
    return best


def triad_vocabulary() -> tuple[np.ndarray, np.ndarray]:
    """A fallback chord vocabulary: 12 major and 12 minor triads as (roots (24,), chroma (24, 12))."""
    roots, chroma = [], []
    for intervals in ((0, 4, 7), (0, 3, 7)):
        for root in range(12):
            vec = np.zeros(12)
            vec[[(root + i) % 12 for i in intervals]] = 1
            roots.append(root)
            chroma.append(vec)
    return np.array(roots), np.array(chroma)


def estimate_chords(
    roll: np.ndarray, segment_ticks: int, templates: np.ndarray
) -> np.ndarray:
    """Per-tick chord index into `templates` (N, 12) for a pianoroll (T, 128); -1 = no chord.

    The roll is cut into segments of `segment_ticks`; each segment takes the template with the
    highest cosine similarity to its duration-weighted pitch-class vector. A silent segment
    keeps the previous chord (-1 before the first note).
    """
    roll = np.asarray(roll, dtype=np.float64)
    num_ticks = roll.shape[0]
    templates = np.asarray(templates, dtype=np.float64)
    norms = np.linalg.norm(templates, axis=1)
    usable = norms > 0
    out = np.full(num_ticks, -1, dtype=np.int64)
    previous = -1
    for start in range(0, num_ticks, segment_ticks):
        hist = pitch_class_histogram(roll[start:start + segment_ticks])
        if hist.sum() > 0:
            scores = np.where(usable, templates @ hist / np.where(usable, norms, 1.0), -np.inf)
            previous = int(np.argmax(scores))
        out[start:start + segment_ticks] = previous
    return out
