"""BIN context: the chord's 12-d binary chroma vector (all zeros for no chord) [S §IV-D].
Vector-valued position, P = 12."""

import numpy as np

from stripes.data.chords import code_chroma
from stripes.data.contexts import ChordTrack, Context, register


class BinContext(Context):
    name, pos_dim, label = "bin", 12, "BIN"

    def positions(self, track: ChordTrack) -> np.ndarray:
        return code_chroma(track.chord_code).astype(np.float32)


register(BinContext())
