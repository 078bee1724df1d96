"""REP context: repetition-based chord tokens [S §IV-D].

Each chord's global token id (its chord_db row) is renumbered within the window by numerical
order: p_t = rank of id_t among the distinct ids present in the window (0, 1, 2, …). Scalar.
Example: ids [7, 7, 3, 8, 3] -> [1, 1, 0, 2, 0].
"""

import numpy as np

from stripes.data.contexts import ChordTrack, Context, register


def renumber_by_order(ids: np.ndarray) -> np.ndarray:
    """Rank of each id among the distinct ids (ascending)."""
    return np.unique(ids, return_inverse=True)[1].reshape(np.shape(ids))


class RepContext(Context):
    name, pos_dim, label = "rep", 1, "REP"

    def positions(self, track: ChordTrack) -> np.ndarray:
        ids = track.vocab.ids(track.chord_code)
        return renumber_by_order(ids).astype(np.float32)[:, None]


register(RepContext())
