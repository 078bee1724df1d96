"""Song reading on the fake POP909 root: rolls, alignment tick by tick, chords, keys, data root."""

from pathlib import Path

import numpy as np
import pytest

from stripes.data.annotations import read_startpos
from stripes.data.chords import chord_code, code_chroma, code_root, parse_key
from stripes.data.midi import midi_to_pianoroll
from stripes.data.paths import DataRootError, resolve_data_root
from stripes.data.pop909 import build_song, read_sources
from tests.fixtures.pop909 import TPQ16, song_design


def _song(root, number, tpq):
    startpos = read_startpos(root / "pop909_alignment" / "startpos.csv")
    return build_song(read_sources(root, number, startpos), tpq)


def _expected_codes(design, tpq):
    """Chord code per tick at `tpq`, straight from the design."""
    scale = tpq / TPQ16
    n = int(round(design.n_ticks * scale))
    out = np.zeros(n, dtype=np.int64)
    t = int(round(design.position * scale))
    for chord in design.chords:
        d = chord.quarters * tpq
        if chord.root is not None:
            chroma = np.zeros(12)
            chroma[list(chord.tones)] = 1
            out[max(t, 0):min(t + d, n)] = chord_code(chord.root, chroma)
        t += d
    return out


@pytest.mark.parametrize("tpq", [16, 4])
@pytest.mark.parametrize("number", [1, 2, 3, 4, 5, 6])
def test_rolls_and_chords_match_design_tick_by_tick(fake_pop909_root, number, tpq):
    design = song_design(number)
    song = _song(fake_pop909_root, number, tpq)
    np.testing.assert_array_equal(song.roll, design.roll(tpq))
    np.testing.assert_array_equal(song.chord_code, _expected_codes(design, tpq))
    assert song.offset == design.position
    assert song.alignment.best_offset == design.position
    assert song.alignment.file_score == pytest.approx(1.0)


def test_chord_boundaries_by_hand(fake_pop909_root):
    # song 2: D:maj, startpos 16 -> first chord D:maj from tick 16 (16 tpq) for 4 quarters (64
    # ticks), then B:min (2 quarters = 32 ticks), then E:min.
    song = _song(fake_pop909_root, 2, 16)
    assert (song.chord_code[:16] == 0).all()  # before the annotations: no chord
    assert code_root(song.chord_code[16]) == 2 and code_root(song.chord_code[79]) == 2
    assert code_root(song.chord_code[80]) == 11 and code_root(song.chord_code[111]) == 11
    assert code_root(song.chord_code[112]) == 4
    np.testing.assert_array_equal(np.nonzero(code_chroma(song.chord_code[112]))[0], [4, 7, 11])
    # the same boundaries at 4 ticks per quarter: 4, 20, 28
    s4 = _song(fake_pop909_root, 2, 4)
    assert (s4.chord_code[:4] == 0).all() and code_root(s4.chord_code[4]) == 2
    assert code_root(s4.chord_code[19]) == 2 and code_root(s4.chord_code[20]) == 11
    assert code_root(s4.chord_code[28]) == 4


def test_leading_no_chord_line(fake_pop909_root):
    song = _song(fake_pop909_root, 3, 16)  # startpos 8, then "N" for 4 quarters
    assert (song.chord_code[: 8 + 64] == 0).all()
    assert code_root(song.chord_code[8 + 64]) == 9  # A:min


def test_pianoroll_starts_at_first_note(fake_pop909_root):
    roll = midi_to_pianoroll(fake_pop909_root / "POP909" / "004" / "004.mid", 16)
    assert roll[0].any()  # the pickup note (pitch 36, piano) at tick 0
    assert roll[0, 256 + 36] and roll[31, 256 + 36] and not roll[32, 256 + 36]


def test_key_segments_follow_tempo_map(fake_pop909_root):
    # song 4 modulates F:maj -> G:maj at annotation bar 36, with a tempo change before it
    design = song_design(4)
    for tpq in (16, 4):
        song = _song(fake_pop909_root, 4, tpq)
        change = (design.position + 36 * 4 * TPQ16) * tpq // TPQ16
        f_maj, g_maj = parse_key("F:maj"), parse_key("G:maj")
        assert (song.key_code[:change] == f_maj[0] + 12 * f_maj[1]).all()
        assert (song.key_code[change:] == g_maj[0] + 12 * g_maj[1]).all()
    e_min = _song(fake_pop909_root, 6, 16).key_code
    assert (e_min == 4 + 12).all()


def test_misaligned_startpos_is_found(tmp_path):
    from tests.fixtures.pop909 import MISALIGNMENT_TICKS, build_fake_pop909

    root = build_fake_pop909(tmp_path, n_songs=4, n_bars=20, defects={2: "misaligned"})
    startpos = read_startpos(root / "pop909_alignment" / "startpos.csv")
    src = read_sources(root, 2, startpos)
    kept = build_song(src, 4, policy="startpos")
    assert kept.alignment.file_offset == 16 + MISALIGNMENT_TICKS
    assert kept.alignment.best_offset == 16 and kept.alignment.disagrees(0.2)
    assert kept.offset == 16 + MISALIGNMENT_TICKS
    fixed = build_song(src, 4, policy="best")
    assert fixed.offset == 16
    np.testing.assert_array_equal(fixed.chord_code, _expected_codes(song_design(2, 20), 4))


def test_data_root_resolution(tmp_path, monkeypatch, fake_pop909_root):
    assert resolve_data_root(fake_pop909_root) == Path(fake_pop909_root).resolve()
    monkeypatch.setenv("STRIPES_DATA", str(fake_pop909_root))
    assert resolve_data_root(None) == Path(fake_pop909_root).resolve()
    with pytest.raises(DataRootError) as err:
        resolve_data_root(tmp_path)  # empty folder
    text = str(err.value)
    assert "missing folder" in text and "pop909_alignment/startpos.csv" in text
    for source in ("music-x-lab/POP909-Dataset", "Dsqvival/hierarchical-structure-analysis",
                   "agarwalmanvi/structurePE"):
        assert source in text
    monkeypatch.setenv("STRIPES_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataRootError, match="does not exist"):
        resolve_data_root(None)


def test_midi_to_pianoroll_merged_tracks(fake_pop909_root):
    path = fake_pop909_root / "POP909" / "001" / "001.mid"
    full = midi_to_pianoroll(path, 4)
    merged = midi_to_pianoroll(path, 4, tracks=None)
    np.testing.assert_array_equal(merged, full.reshape(len(full), 3, 128).any(axis=1))
    melody = midi_to_pianoroll(path, 4, tracks=("MELODY",))
    assert melody.shape[1] == 128 and melody.any()
