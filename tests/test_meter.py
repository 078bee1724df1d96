"""Bars and harmonic positions from time signatures, against hand-counted cases."""

import numpy as np
import pytest

from stripes.data.meter import bars_of


def test_four_four_bars_from_tick_zero_and_two_chords_per_bar():
    bars = bars_of(np.array([[0, 4, 4]]), 480, 3 * 1920 + 1)  # a note ending just past bar 3
    assert bars.start.tolist() == [0, 1920, 3840, 5760]
    ticks, bar = bars.harmonic_positions()
    assert ticks.tolist() == [0, 960, 1920, 2880, 3840, 4800, 5760, 6720]
    assert bar.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [int(b) for b in bars.locate([0, 2880, 5760])[0]] == [1, 2, 4]
    assert bars.locate([2880])[1][0] == pytest.approx(3.0)


@pytest.mark.parametrize("num, den, bar_ticks, per_bar", [
    (3, 4, 1440, 1), (6, 8, 1440, 2), (2, 4, 960, 1), (12, 8, 2880, 2), (2, 2, 1920, 2), (5, 4, 2400, 1),
])
def test_meters(num, den, bar_ticks, per_bar):
    bars = bars_of(np.array([[0, num, den]]), 480, 4 * bar_ticks)
    assert (bars.length == bar_ticks).all() and len(bars.start) == 4
    ticks, _ = bars.harmonic_positions()
    assert len(ticks) == 4 * per_bar
    if per_bar == 2:
        assert ticks[1] == bar_ticks // 2


def test_meter_change_and_missing_signature_at_zero():
    # 4/4 default until tick 1920, then 3/4; a 3/4 event in the middle of a bar cuts it short
    bars = bars_of(np.array([[1920, 3, 4], [1920 + 1440 + 480, 4, 4]]), 480, 1920 + 1440 + 480 + 1920)
    assert bars.start.tolist() == [0, 1920, 3360, 3840]
    assert bars.length.tolist() == [1920, 1440, 480, 1920]
    assert bars.meters() == [(1, 1, 4, 4), (2, 3, 3, 4), (4, 4, 4, 4)]
    assert bars.locate([3840 + 480])[1][0] == pytest.approx(2.0)


def test_six_eight_beats_count_in_eighths():
    bars = bars_of(np.array([[0, 6, 8]]), 96, 2 * 288)  # a 6/8 bar = 3 quarters = 288 ticks
    bar, beat = bars.locate([0, 144, 288 + 48])  # an eighth = 48 ticks
    assert bar.tolist() == [1, 1, 2] and beat.tolist() == [1.0, 4.0, 2.0]
    assert bars.main_beats().tolist() == [2, 2]


def test_zero_denominator_is_an_error():
    with pytest.raises(ValueError, match="zero"):
        bars_of(np.array([[0, 4, 0]]), 480, 100)
