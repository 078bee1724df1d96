"""Key and chord estimation for melodies that come without annotations (used by `harmonize`).

POP909 songs carry chord and key labels; a user's melody does not. The structure contexts (REP,
KEY, BIN) need a chord per tick and a key, so we estimate them from the notes:

* **Evidence.** `segment_chroma` weighs each note's pitch class in each *harmonic segment* (the
  spans between the file's harmonic positions, `stripes.data.meter`) by its duration in quarter
  notes plus an onset accent for notes that start on a strong beat (`ONSET_ACCENT`).
* **Key**: Krumhansl–Kessler key profiles: the weighted pitch-class histogram is correlated with
  the 24 rotated major/minor profiles; the best Pearson correlation wins (Krumhansl 1990).
* **Chords**: a hidden Markov model over the chord vocabulary (chord_db.npz rows), decoded with
  Viterbi (`estimate_chords`). Emission: each weighted pitch class is the chord's root with
  probability `P_ROOT`, another chord tone with `P_TONE` (shared by the other tones), a non-chord
  tone with 1 - P_ROOT - P_TONE (shared by the remaining pitch classes). Prior (`chord_prior`):
  a penalty per chord tone outside the key's scale, a preference for plain triads over larger
  chords, and for the key's primary chords. Transition: staying costs nothing, changing costs
  `CHANGE_PENALTY`. So a sparse or tied segment resolves to a diatonic chord and keeps it, and a
  chord changes where the notes ask for it (a single whole note G after C becomes G).

All scores are natural-log units; the weights of a segment are in quarter notes, so a segment's
evidence grows with how much music it holds while the prior and change cost stay fixed.
"""

from __future__ import annotations

import numpy as np

# Krumhansl & Kessler (1982) probe-tone ratings, C major / C minor.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10, 11)  # natural minor + the leading tone (harmonic minor's V)

P_ROOT, P_TONE = 0.45, 0.4  # emission: root, other chord tones; the rest for non-chord tones
CHANGE_PENALTY = 1.0  # log-cost of changing chord between segments
OUT_OF_KEY_PENALTY = 3.0  # log-cost per chord tone outside the key's scale
ONSET_ACCENT = {"bar": 1.0, "main beat": 0.5}  # extra weight (quarters) for notes starting there
# log prior by chord shape (intervals above the root); any other shape costs SHAPE_OTHER
SHAPE_PRIOR = {(0, 4, 7): 0.0, (0, 3, 7): 0.0, (0, 4, 7, 10): -0.7, (0, 3, 7, 10): -0.7,
               (0, 4, 7, 11): -0.9, (0, 2, 7): -1.2, (0, 5, 7): -1.2, (0, 3, 6): -2.0,
               (0, 4, 7, 9): -1.5, (0, 3, 7, 9): -1.5, (0, 5, 7, 10): -1.5, (0, 3, 6, 10): -1.5}
SHAPE_OTHER = -2.5
# log prior by scale degree of the root for diatonic triads (major: I IV V vi ii iii; minor: i iv V v VI VII III)
DEGREE_PRIOR = {0: {0: 0.0, 5: 0.0, 7: 0.0, 9: -0.3, 2: -0.4, 4: -0.6},
                1: {0: 0.0, 5: 0.0, 7: 0.0, 8: -0.2, 10: -0.3, 3: -0.4}}
DEGREE_OTHER = -0.8


def pitch_class_histogram(roll: np.ndarray) -> np.ndarray:
    """Duration-weighted pitch-class histogram (12,) of a binary pianoroll (T, 128)."""
    per_pitch = np.asarray(roll, dtype=np.float64).sum(axis=0)
    return np.bincount(np.arange(128) % 12, weights=per_pitch, minlength=12)


def key_from_histogram(hist: np.ndarray) -> tuple[int, str]:
    """Best Krumhansl–Kessler key of a (12,) pitch-class histogram: (tonic 0–11, "maj" | "min").

    Raises ValueError for an all-zero histogram."""
    hist = np.asarray(hist, dtype=np.float64)
    if hist.sum() == 0:
        raise ValueError("cannot estimate a key: the pianoroll has no notes")
    best, best_score = (0, "maj"), -np.inf
    for mode, profile in (("maj", MAJOR_PROFILE), ("min", MINOR_PROFILE)):
        for tonic in range(12):
            score = np.corrcoef(hist, np.roll(profile, tonic))[0, 1]
            if score > best_score + 1e-12:
                best, best_score = (tonic, mode), score
    return best


def estimate_key(roll: np.ndarray) -> tuple[int, str]:
    """Best Krumhansl–Kessler key of a pianoroll (T, 128): (tonic pitch class 0–11, "maj" | "min")."""
    return key_from_histogram(pitch_class_histogram(roll))


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


def segment_chroma(notes: np.ndarray, boundaries: np.ndarray, accents: np.ndarray,
                   ticks_per_quarter: int) -> np.ndarray:
    """(S, 12) pitch-class weights of the segments [boundaries[s], boundaries[s+1]).

    notes: (N, 3) pitch, onset, offset in grid ticks (offset > onset); boundaries: (S + 1,)
    increasing grid ticks; accents: (T,) extra weight in quarter notes for a note *starting* at
    each tick (0 beyond T). A note adds its overlap with the segment in quarter notes, plus the
    accent of its onset to the segment holding the onset."""
    notes = np.asarray(notes, dtype=np.int64).reshape(-1, 3)
    boundaries = np.asarray(boundaries, dtype=np.int64)
    out = np.zeros((len(boundaries) - 1, 12))
    for pitch, on, off in notes.tolist():
        first = max(int(np.searchsorted(boundaries, on, side="right")) - 1, 0)
        for s in range(first, len(boundaries) - 1):
            lo, hi = max(on, boundaries[s]), min(off, boundaries[s + 1])
            if hi <= lo and not (s == first and on == off):
                break
            out[s, pitch % 12] += max(hi - lo, 0) / ticks_per_quarter
        if first < len(boundaries) - 1 and 0 <= on < len(accents):
            out[first, pitch % 12] += accents[on]
    return out


def chord_shape(root: int, chroma) -> tuple[int, ...]:
    """Intervals above the root (sorted) of a chord's pitch classes."""
    return tuple(sorted({(int(pc) - root) % 12 for pc in np.nonzero(np.asarray(chroma))[0]}))


def chord_prior(roots: np.ndarray, chroma: np.ndarray, tonic: int, mode: int) -> np.ndarray:
    """(K,) log prior of each chord in a key (mode 0 major, 1 minor); see module docstring."""
    scale = np.zeros(12, bool)
    scale[[(tonic + d) % 12 for d in (MINOR_SCALE if mode else MAJOR_SCALE)]] = True
    prior = np.zeros(len(roots))
    for k, (root, vec) in enumerate(zip(np.asarray(roots).tolist(), np.asarray(chroma))):
        tones = np.nonzero(vec)[0]
        outside = int((~scale[tones]).sum())
        shape = chord_shape(root, vec)
        prior[k] = -OUT_OF_KEY_PENALTY * outside + SHAPE_PRIOR.get(shape, SHAPE_OTHER)
        if root not in tones:
            prior[k] += SHAPE_OTHER  # the table's slash-chord rows: root is the bass only
        if outside == 0 and shape in ((0, 4, 7), (0, 3, 7), (0, 3, 6)):
            prior[k] += DEGREE_PRIOR[mode].get((root - tonic) % 12, DEGREE_OTHER)
    return prior


def emission_scores(weights: np.ndarray, roots: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """(S, K) log-likelihood of each segment's pitch-class weights (S, 12) under each chord."""
    chroma = np.asarray(chroma, dtype=bool)
    roots = np.asarray(roots, dtype=np.int64)
    is_root = np.zeros_like(chroma)
    is_root[np.arange(len(roots)), roots % 12] = True
    is_root &= chroma  # a slash-chord row whose root is only the bass has no root tone
    others = np.maximum(chroma.sum(1, keepdims=True) - is_root.sum(1, keepdims=True), 1)
    outside = np.maximum(12 - chroma.sum(1, keepdims=True), 1)
    logp = np.where(is_root, np.log(P_ROOT),
                    np.where(chroma, np.log(P_TONE / others), np.log((1 - P_ROOT - P_TONE) / outside)))
    return np.asarray(weights, dtype=np.float64) @ logp.T


def viterbi(scores: np.ndarray, change_penalty: float) -> np.ndarray:
    """Best state path (S,) for per-segment scores (S, K) with a uniform change cost.

    Maximizes Σ_s scores[s, c_s] - change_penalty · #{s : c_s ≠ c_{s-1}}; ties go to the lower
    state index and to staying. O(S·K)."""
    scores = np.asarray(scores, dtype=np.float64)
    num_segments, num_states = scores.shape
    best = scores[0].copy()
    back = np.zeros((num_segments, num_states), dtype=np.int64)
    for s in range(1, num_segments):
        leader = int(np.argmax(best))
        switch = best[leader] - change_penalty
        stay = best >= switch
        back[s] = np.where(stay, np.arange(num_states), leader)
        best = np.where(stay, best, switch) + scores[s]
    path = np.empty(num_segments, dtype=np.int64)
    path[-1] = int(np.argmax(best))
    for s in range(num_segments - 1, 0, -1):
        path[s - 1] = back[s, path[s]]
    return path


def estimate_chords(weights: np.ndarray, roots: np.ndarray, chroma: np.ndarray, tonic: int,
                    mode: int, change_penalty: float = CHANGE_PENALTY) -> np.ndarray:
    """Chord index (S,) into the vocabulary (roots (K,), chroma (K, 12)) for each segment.

    weights: (S, 12) pitch-class weights from `segment_chroma`; (tonic, mode) the key (mode 0 =
    major, 1 = minor). Viterbi over emission + key prior with a change penalty (module
    docstring). Rows with an empty chroma ("no chord") are never chosen. Raises ValueError when
    the vocabulary has no chord."""
    chroma = np.asarray(chroma)
    usable = chroma.any(axis=1)
    if not usable.any():
        raise ValueError("the chord vocabulary has no chord with pitch classes")
    scores = emission_scores(weights, roots, chroma) + chord_prior(roots, chroma, tonic, mode)
    scores[:, ~usable] = -np.inf
    return viterbi(scores, change_penalty)
