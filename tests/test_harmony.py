"""Key and chord estimation against hand-worked cases."""

import numpy as np
import pytest

from stripes.harmony import estimate_chords, estimate_key, pitch_class_histogram, triad_vocabulary


def roll_of(pitches_per_segment, ticks=4):
    """Build a (T, 128) roll: each entry of the list is the set of pitches held for `ticks`."""
    roll = np.zeros((ticks * len(pitches_per_segment), 128), dtype=bool)
    for i, pitches in enumerate(pitches_per_segment):
        roll[i * ticks:(i + 1) * ticks, list(pitches)] = True
    return roll


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


def test_chords_per_segment_with_silence_carrying_over():
    roots, templates = triad_vocabulary()
    # segment 0: silent; 1: C E G (C major); 2: silent (keeps C); 3: A C E (A minor)
    roll = roll_of([set(), {60, 64, 67}, set(), {57, 60, 64}], ticks=4)
    idx = estimate_chords(roll, segment_ticks=4, templates=templates)
    assert idx.shape == (16,)
    assert (idx[:4] == -1).all()
    c_major = 0          # major triads come first, root 0
    a_minor = 12 + 9     # then minor triads, root 9
    assert (idx[4:12] == c_major).all() and (idx[12:] == a_minor).all()
    assert roots[a_minor] == 9 and templates[a_minor].tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0]
