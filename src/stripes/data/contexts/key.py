"""KEY context: key-matched chord tokens [S §IV-D, spec §2].

Each chord is transposed by its key's tonic to C (mode kept: C major or C minor); the token is
2 · id(normalized chord) + mode (mode 0 major, 1 minor), id = global chord id (chord_db row,
see stripes.data.chords.ChordVocabulary). Scalar. Example: E:min in D:major -> D:min in C:major,
token 2 · id(D:min) + 0. The key is per tick (key_audio.txt segments), so modulations count.
"""

import numpy as np

from stripes.data.chords import transpose_codes
from stripes.data.contexts import ChordTrack, Context, register


def key_tokens(track: ChordTrack) -> np.ndarray:
    tonic, mode = track.key_code % 12, track.key_code // 12
    normalized = transpose_codes(track.chord_code, tonic)
    return 2 * track.vocab.ids(normalized) + mode


class KeyContext(Context):
    name, pos_dim, label = "key", 1, "KEY"

    def positions(self, track: ChordTrack) -> np.ndarray:
        return key_tokens(track).astype(np.float32)[:, None]


register(KeyContext())
