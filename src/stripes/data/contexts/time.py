"""TIME context: p_t = t, the tick index within the window [S §IV-D]. Scalar."""

import numpy as np

from stripes.data.contexts import ChordTrack, Context, register


class TimeContext(Context):
    name, pos_dim, label = "time", 1, "TIME"

    def positions(self, track: ChordTrack) -> np.ndarray:
        return np.arange(len(track.chord_code), dtype=np.float32)[:, None]


register(TimeContext())
