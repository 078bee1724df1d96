"""Contexts on hand-worked examples (spec §2): TIME, REP renumbering, KEY normalization, BIN."""

import numpy as np
import pytest

from stripes.data.chords import ChordVocabulary, chord_code, pitch_class, transpose_codes
from stripes.data.contexts import CONTEXTS, ChordTrack, get_context, positions_for
from tests.fixtures.pop909 import fake_chord_db

DB = fake_chord_db()
VOCAB = ChordVocabulary(DB)


def chord(name):
    """'E:min' -> (root, chroma) with triad tones; 'N' -> no chord."""
    if name == "N":
        return -1, np.zeros(12)
    root_name, quality = name.split(":")
    root = pitch_class(root_name)
    chroma = np.zeros(12)
    chroma[[(root + i) % 12 for i in {"maj": (0, 4, 7), "min": (0, 3, 7)}[quality]]] = 1
    return root, chroma


def table_id(name):
    """Row of chord_db holding this chord (independent lookup, no ChordVocabulary)."""
    root, chroma = chord(name)
    for i, row in enumerate(DB):
        if int(row[0]) - 1 == root and np.array_equal(row[1:], chroma) or (root < 0 and not row.any()):
            return i
    raise KeyError(name)


def track(names, tonic=0, mode=0):
    roots, chromas = zip(*(chord(n) for n in names))
    return np.array(roots), np.stack(chromas), tonic, mode


def test_registry_and_dims():
    assert set(CONTEXTS) == {"time", "rep", "rep_causal", "key", "bin"}
    assert {n: c.pos_dim for n, c in CONTEXTS.items()} == {"time": 1, "rep": 1, "rep_causal": 1,
                                                           "key": 1, "bin": 12}
    with pytest.raises(KeyError, match="unknown context"):
        get_context("bar")


def test_time_is_tick_index():
    pos = positions_for("time", *track(["C:maj"] * 5), DB)
    assert pos.dtype == np.float32 and pos.shape == (5, 1)
    np.testing.assert_array_equal(pos[:, 0], [0, 1, 2, 3, 4])


def test_rep_renumbers_by_numerical_order():
    names = ["G:maj", "G:maj", "C:maj", "A:min", "N", "C:maj"]
    ids = [table_id(n) for n in names]
    order = sorted(set(ids))
    expected = [order.index(i) for i in ids]  # rank of the global id among those present
    pos = positions_for("rep", *track(names), DB)
    np.testing.assert_array_equal(pos[:, 0], expected)
    assert pos.max() == 3
    # same chords in another window, without A:min: ranks are recomputed within the window
    pos2 = positions_for("rep", *track(["G:maj", "C:maj"]), DB)
    assert sorted(pos2[:, 0]) == [0, 1]


def test_rep_hand_worked_ranks():
    from stripes.data.contexts.rep import renumber_by_order

    np.testing.assert_array_equal(renumber_by_order(np.array([7, 7, 3, 8, 3])), [1, 1, 0, 2, 0])


def test_rep_causal_hand_worked_sequence():
    # decision 13: order of first appearance up to t
    from stripes.data.contexts.rep_causal import renumber_by_first_appearance

    np.testing.assert_array_equal(renumber_by_first_appearance(np.array([7, 7, 3, 8, 3, 7])),
                                  [0, 0, 1, 2, 1, 0])
    names = ["G:maj", "G:maj", "C:maj", "A:min", "N", "C:maj", "G:maj"]
    pos = positions_for("rep_causal", *track(names), DB)
    assert pos.dtype == np.float32 and pos.shape == (7, 1)
    np.testing.assert_array_equal(pos[:, 0], [0, 0, 1, 2, 3, 1, 0])
    # the paper's REP on the same window ranks by global id, and its first token depends on the rest
    assert positions_for("rep", *track(names), DB)[0, 0] != positions_for("rep", *track(names[:1]), DB)[0, 0]


def _first_appearance_slow(ids):
    seen = []
    out = []
    for i in ids:
        if i not in seen:
            seen.append(i)
        out.append(seen.index(i))
    return out


def test_rep_causal_never_depends_on_the_future():
    # changing chords after t never changes positions <= t (random windows of the fake vocabulary);
    # the paper's REP does change on most of them (the leak that decision 13 removes)
    rng = np.random.default_rng(0)
    names = ["C:maj", "D:min", "E:min", "F:maj", "G:maj", "A:min", "N"]
    rep_changed = 0
    for trial in range(40):
        window = list(rng.choice(names, size=24))
        t = int(rng.integers(0, 23))
        other = window[: t + 1] + list(rng.choice(names, size=23 - t))
        for context in ("rep_causal", "rep"):
            a = positions_for(context, *track(window), DB)[:, 0]
            b = positions_for(context, *track(other), DB)[:, 0]
            if context == "rep_causal":
                np.testing.assert_array_equal(a[: t + 1], b[: t + 1])
                assert list(a) == _first_appearance_slow([table_id(n) for n in window])
            else:
                rep_changed += not np.array_equal(a[: t + 1], b[: t + 1])
    assert rep_changed > 10


def test_key_e_minor_in_d_major_is_d_minor_in_c_major():
    d_major = (pitch_class("D"), 0)
    pos = positions_for("key", *track(["E:min"], *d_major), DB)
    assert pos[0, 0] == 2 * table_id("D:min") + 0
    # the same function in C major gives the same token
    assert positions_for("key", *track(["D:min"], 0, 0), DB)[0, 0] == pos[0, 0]
    # mode is kept: D:min in C minor is another token
    assert positions_for("key", *track(["D:min"], 0, 1), DB)[0, 0] == 2 * table_id("D:min") + 1
    # a tonic chord is C:maj in every major key
    for tonic in range(12):
        tonic_chord = f"{['C','Db','D','Eb','E','F','Gb','G','Ab','A','Bb','B'][tonic]}:maj"
        assert positions_for("key", *track([tonic_chord], tonic, 0), DB)[0, 0] == 2 * table_id("C:maj")


def test_key_follows_per_tick_keys():
    roots, chromas, _, _ = track(["E:min", "E:min", "A:min", "A:min"])
    tonic = np.array([2, 2, 7, 7])  # D:maj then G:maj (a modulation)
    pos = positions_for("key", roots, chromas, tonic, np.zeros(4, int), DB)[:, 0]
    assert pos[0] == 2 * table_id("D:min") and pos[2] == 2 * table_id("D:min")


def test_transpose_codes_by_hand():
    e_min = chord_code(*chord("E:min"))
    assert transpose_codes(e_min, 2) == chord_code(*chord("D:min"))
    assert transpose_codes(0, 5) == 0  # no chord stays no chord


def test_bin_vectors():
    pos = positions_for("bin", *track(["C:maj", "A:min", "N"]), DB)
    assert pos.shape == (3, 12) and pos.dtype == np.float32
    np.testing.assert_array_equal(pos[0], [1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0])  # C E G
    np.testing.assert_array_equal(pos[1], [1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0])  # A C E
    np.testing.assert_array_equal(pos[2], np.zeros(12))


def test_unknown_chords_get_stable_ids():
    root, chroma = 0, np.zeros(12)
    chroma[[0, 1, 2]] = 1  # a cluster, not in the table nor a transposition of a table chord
    ids = VOCAB.ids(np.array([chord_code(root, chroma)] * 2))
    assert ids[0] == ids[1] >= VOCAB.n_known
    assert VOCAB.ids(np.array([0]))[0] == table_id("N")


def test_chordtrack_from_codes_matches_from_chords():
    roots, chromas, tonic, mode = track(["C:maj", "N", "G:maj"], 7, 1)
    a = ChordTrack.from_chords(roots, chromas, tonic, mode, VOCAB)
    b = ChordTrack(chord_code(roots, chromas), np.full(3, 7 + 12), VOCAB)
    for name in CONTEXTS:
        np.testing.assert_array_equal(get_context(name).positions(a), get_context(name).positions(b))
