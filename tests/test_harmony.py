"""Key and chord estimation against hand-worked cases and a brute-force Viterbi reference."""

import itertools

import numpy as np
import pytest

from stripes.data.chords import chord_name, parse_chord_name
from stripes.harmony import (MAJOR_SCALE, estimate_chords, estimate_key, pitch_class_histogram,
                             segment_chroma, triad_vocabulary, viterbi)


def roll_of(pitches_per_segment, ticks=4):
    """Build a (T, 128) roll: each entry of the list is the set of pitches held for `ticks`."""
    roll = np.zeros((ticks * len(pitches_per_segment), 128), dtype=bool)
    for i, pitches in enumerate(pitches_per_segment):
        roll[i * ticks:(i + 1) * ticks, list(pitches)] = True
    return roll


def table_vocabulary():
    """Triads plus sevenths and a few others, like chord_db (roots (K,), chroma (K, 12))."""
    roots, chroma = [], []
    for quality in ("maj", "min", "7", "min7", "maj7", "dim", "aug", "sus4", "sus2"):
        for root in range(12):
            r, c = parse_chord_name(f"{['C','Db','D','Eb','E','F','Gb','G','Ab','A','Bb','B'][root]}:{quality}")
            roots.append(r), chroma.append(c)
    return np.array(roots), np.array(chroma)


def chords_for(notes, boundaries, key=(0, 0), tpq=4):
    roots, chroma = table_vocabulary()
    accents = np.zeros(boundaries[-1] + 1)
    accents[boundaries[:-1]] = 1.0
    weights = segment_chroma(np.array(notes), np.array(boundaries), accents, tpq)
    index = estimate_chords(weights, roots, chroma, *key)
    return [chord_name(roots[i], chroma[i]) for i in index]


def test_histogram_counts_duration_per_pitch_class():
    roll = roll_of([{60, 72}, {64}], ticks=3)  # C4 + C5 for 3 ticks, E4 for 3 ticks
    hist = pitch_class_histogram(roll)
    assert hist[0] == 6 and hist[4] == 3 and hist.sum() == 9


@pytest.mark.parametrize(
    "scale, tonic, mode",
    [
        ([60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60], 0, "maj"),   # C major scale, tonic stressed
        ([69, 71, 72, 74, 76, 77, 80, 81, 76, 72, 69], 9, "min"),   # A harmonic minor
        ([67, 69, 71, 72, 74, 76, 78, 79, 74, 71, 67], 7, "maj"),   # G major
    ],
)
def test_key_of_scales(scale, tonic, mode):
    assert estimate_key(roll_of([{p} for p in scale])) == (tonic, mode)


def test_key_of_silence_is_an_error():
    with pytest.raises(ValueError, match="no notes"):
        estimate_key(np.zeros((8, 128), dtype=bool))


def test_segment_chroma_by_hand():
    # 4 ticks per quarter, segments [0, 8) and [8, 16); accent 1 quarter at tick 0, 0.5 at 8
    notes = [(60, 0, 12),   # C: 2 quarters in seg 0 (+1 accent), 1 quarter in seg 1
             (67, 8, 10),   # G: half a quarter in seg 1 (+0.5 accent)
             (64, 5, 5)]    # E: zero length, no accent: adds nothing
    accents = np.zeros(16)
    accents[0], accents[8] = 1.0, 0.5
    w = segment_chroma(np.array(notes), np.array([0, 8, 16]), accents, 4)
    assert w[0, 0] == pytest.approx(3.0) and w[1, 0] == pytest.approx(1.0)
    assert w[1, 7] == pytest.approx(1.0) and w.sum() == pytest.approx(5.0)


def test_whole_notes_c_g_a_c_get_diatonic_stable_chords():
    # 4/4 at 4 ticks per quarter: bars of 16 ticks, harmonic positions on beats 1 and 3
    notes = [(72, 0, 16), (67, 16, 32), (69, 32, 48), (72, 48, 64)]
    names = chords_for(notes, list(range(0, 65, 8)))
    bars = names[::2]
    assert names[1::2] == bars  # a held note keeps its chord through beat 3
    assert bars[0] == "C:maj" and bars[1] in ("G:maj", "C:maj", "E:min")
    assert bars[2] in ("A:min", "F:maj") and bars[3] == "C:maj"


def test_plain_c_major_tune_gets_only_diatonic_chords():
    tune = [60, 64, 67, 64, 65, 69, 72, 69, 67, 71, 74, 71, 72, 67, 64, 60,
            62, 65, 69, 65, 64, 67, 72, 67, 65, 62, 71, 67, 72, 72, 72, 72]
    notes = [(p, 4 * i, 4 * i + 4) for i, p in enumerate(tune)]  # quarter notes
    names = chords_for(notes, list(range(0, 129, 8)))
    scale = set(MAJOR_SCALE)
    for name in names:
        root, chroma = parse_chord_name(name)
        assert set(np.nonzero(chroma)[0]) <= scale, name
    assert names[0] == "C:maj" and names[-1] == "C:maj"


def test_silent_segments_keep_the_chord_and_a_minor_key_prefers_its_chords():
    notes = [(69, 0, 8), (64, 8, 12)]  # A then E, then silence
    names = chords_for(notes, [0, 8, 16, 24], key=(9, 1))
    assert names[0] == "A:min" and names[1] in ("A:min", "E:maj", "E:min")  # i, or V / v of A minor
    assert names[2] == names[1]  # silence keeps the chord


def test_viterbi_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.normal(size=(4, 3)).round(1)
        penalty = float(rng.uniform(0, 2))
        best = max(itertools.product(range(3), repeat=4),
                   key=lambda path: sum(scores[s, c] for s, c in enumerate(path))
                   - penalty * sum(a != b for a, b in zip(path, path[1:])))
        value = lambda p: sum(scores[s, c] for s, c in enumerate(p)) - penalty * sum(  # noqa: E731
            a != b for a, b in zip(p, p[1:]))
        assert value(viterbi(scores, penalty)) == pytest.approx(value(best))


def test_no_chord_rows_are_never_chosen():
    roots, chroma = triad_vocabulary()
    chroma = np.vstack([np.zeros(12), chroma])
    roots = np.concatenate([[-1], roots])
    index = estimate_chords(np.zeros((3, 12)), roots, chroma, 0, 0)
    assert (index > 0).all()
    with pytest.raises(ValueError, match="no chord"):
        estimate_chords(np.zeros((1, 12)), np.array([-1]), np.zeros((1, 12)), 0, 0)


@pytest.mark.parametrize("name", ["C:maj", "A:min7", "Bb:sus4(b7)", "F#:hdim7", "D:(1,3,5,6,b7,9)"])
def test_chord_names_round_trip(name):
    root, chroma = parse_chord_name(name)
    again = chord_name(root, chroma)
    assert np.array_equal(parse_chord_name(again)[1], chroma) and parse_chord_name(again)[0] == root
    if "(" not in name:
        assert again == name.replace("F#", "Gb")


def test_chord_name_by_hand():
    assert chord_name(9, [1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0]) == "A:min"
    assert chord_name(-1, np.zeros(12)) == "N"
    assert parse_chord_name("G:7/b7")[1].tolist() == [0, 0, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1]
