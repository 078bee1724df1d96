"""Significance marks against scipy.stats called directly, on seed distributions with known answers."""

import numpy as np
import pytest
from scipy import stats as sps

from stripes.eval.stats import block_marks, compare, rank_methods


def test_equal_variances_use_student():
    a = np.array([10.0, 11.0, 12.0, 13.0, 14.0])
    b = a - 3.0  # same spread -> Levene p = 1
    result = compare(a, b)
    assert result.equal_var and result.test == "student"
    assert result.levene_p == pytest.approx(sps.levene(a, b).pvalue)
    assert result.p_value == pytest.approx(sps.ttest_ind(a, b, equal_var=True).pvalue)


def test_unequal_variances_use_welch():
    a = np.array([10.0, 10.01, 9.99, 10.0, 10.02, 9.98, 10.0, 10.01])
    b = np.array([0.0, 20.0, -15.0, 30.0, 5.0, -20.0, 25.0, 14.0])
    result = compare(a, b)
    assert sps.levene(a, b).pvalue < 0.05
    assert not result.equal_var and result.test == "welch"
    assert result.p_value == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue)
    assert result.p_value != pytest.approx(sps.ttest_ind(a, b, equal_var=True).pvalue)


def test_star_when_best_beats_next_best():
    values = {
        "RoPE(A)": np.array([1.0, 1.1, 0.9, 1.0, 1.05]),
        "RoPE(B)": np.array([5.0, 5.1, 4.9, 5.0, 5.05]),
        "RoPE(C)": np.array([2.0, 2.1, 1.9, 2.0, 2.05]),
    }
    marks = block_marks(values, "CS")
    assert marks.best == "RoPE(B)" and marks.mark == "*"
    assert marks.ranking == ["RoPE(B)", "RoPE(C)", "RoPE(A)"]
    expected = sps.ttest_ind(values["RoPE(B)"], values["RoPE(C)"]).pvalue
    assert marks.tests["next"].p_value == pytest.approx(expected)


def test_dagger_when_only_third_best_is_beaten():
    rng = np.random.default_rng(0)
    best = 10 + rng.normal(0, 1, 5)
    close = best - 0.1  # indistinguishable from the best
    far = best - 8.0
    # lower is better for NDD: negate so "best" has the smallest values
    values = {"a": -best, "b": -close, "c": -far}
    marks = block_marks(values, "NDD")
    assert marks.best == "a" and marks.mark == "†"
    assert marks.tests["next"].p_value >= 0.05
    assert marks.tests["third"].p_value == pytest.approx(sps.ttest_ind(-best, -far).pvalue)


def test_no_mark_when_nothing_is_significant_and_nan_handling():
    rng = np.random.default_rng(1)
    values = {m: rng.normal(0, 1, 5) for m in "xyz"}
    values["x"] = values["x"] + 0.01
    marks = block_marks(values, "GS")
    assert marks.mark in ("", "*", "†")
    p_next = sps.ttest_ind(values[marks.ranking[0]], values[marks.ranking[1]],
                           equal_var=sps.levene(values[marks.ranking[0]],
                                                values[marks.ranking[1]]).pvalue >= 0.05).pvalue
    assert marks.tests["next"].p_value == pytest.approx(p_next)
    # a single seed per method: no test is possible, no mark, but the best is still found
    single = block_marks({"a": [1.0], "b": [2.0], "c": [3.0]}, "SSMD")
    assert single.best == "a" and single.mark == ""
    # a method with no values ranks last
    assert rank_methods({"a": np.array([]), "b": np.array([1.0])}, "CS") == ["b", "a"]
    assert block_marks({}, "CS").best is None
