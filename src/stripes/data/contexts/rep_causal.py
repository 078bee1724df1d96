"""REP-causal context: repetition-based chord tokens that depend on the past only (decision 13).

[S]'s REP (``rep.py``) ranks a chord's global id among the ids present in the *whole window*, so the
position at tick t depends on chords after t: future structure leaks into a causal model. Here a
chord's token is its order of first appearance within the window up to t: the first chord seen is
0, the next new one 1, and so on; a repeated chord gets its earlier token back. p_t depends only on
the chords at ticks ≤ t. Scalar (P = 1).
Example: ids [7, 7, 3, 8, 3, 7] -> [0, 0, 1, 2, 1, 0] (REP would give [1, 1, 0, 2, 0, 1]).
"""

import numpy as np

from stripes.data.contexts import ChordTrack, Context, register


def renumber_by_first_appearance(ids: np.ndarray) -> np.ndarray:
    """(T,) ids -> (T,) int64 tokens: the order in which each id first appears (0, 1, 2, …)."""
    ids = np.asarray(ids).reshape(-1)
    if ids.size == 0:
        return ids.astype(np.int64)
    distinct, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.empty(len(distinct), dtype=np.int64)
    order[np.argsort(first, kind="stable")] = np.arange(len(distinct))  # rank of each first tick
    return order[inverse.reshape(-1)]


class RepCausalContext(Context):
    name, pos_dim, label = "rep_causal", 1, "REP-causal"

    def positions(self, track: ChordTrack) -> np.ndarray:
        ids = track.vocab.ids(track.chord_code)
        return renumber_by_first_appearance(ids).astype(np.float32)[:, None]


register(RepCausalContext())
