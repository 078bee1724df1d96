"""Three real POP909 songs (skipped when the data folder is absent)."""

import numpy as np
import pytest

from stripes.data.annotations import read_startpos
from stripes.data.midi import read_midi
from stripes.data.paths import DataRootError, resolve_data_root
from stripes.data.pop909 import build_song, read_sources, song_files

try:
    ROOT = resolve_data_root(None)
except DataRootError:
    ROOT = None

pytestmark = pytest.mark.skipif(ROOT is None, reason="POP909 data not found ($STRIPES_DATA, "
                                "data/raw/, ../shared/data/)")
SONGS = (1, 25, 100)


@pytest.fixture(scope="module")
def startpos():
    return read_startpos(ROOT / "pop909_alignment" / "startpos.csv")


@pytest.mark.parametrize("number", SONGS)
def test_real_song(number, startpos):
    midi = read_midi(song_files(ROOT, number)["midi"])
    assert {"MELODY", "BRIDGE", "PIANO"} <= set(midi.notes)
    for tpq in (16, 4):
        song = build_song(read_sources(ROOT, number, startpos, midi), tpq)
        assert song.roll.shape[1] == 384 and song.roll.dtype == bool
        assert song.roll[0].any()  # starts at the first note
        assert len(song.chord_code) == len(song.key_code) == len(song.roll)
        assert (song.chord_code != 0).mean() > 0.5  # mostly annotated
        assert song.n_ticks > 16 * 4 * tpq  # longer than a 16-bar window
    # after alignment the annotated melody matches the MIDI melody on most ticks
    assert song.alignment.file_score > 0.7


def test_real_song_025_modulates(startpos):
    song = build_song(read_sources(ROOT, 25, startpos), 16)
    keys = np.unique(song.key_code)
    assert set(keys.tolist()) == {9, 0}  # A:maj then C:maj
    assert song.key_code[0] == 9 and song.key_code[-1] == 0


def test_real_song_050_alignment_disagreement(startpos):
    song = build_song(read_sources(ROOT, 50, startpos), 16)
    assert song.alignment.file_offset == 8 and song.alignment.best_offset == 36
