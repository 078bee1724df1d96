"""Significance marks of [S] §V (Tables II–III): Levene → Student/Welch two-sided t-test.

For one (context, setting, metric) block of a table, the methods' per-seed values are compared:

* the best mean (direction-aware: ↑ for CS and GS, ↓ for SSMD and NDD) is underlined;
* Levene's test between the best and the next-best decides equal variances (p >= ``alpha``) →
  Student's t-test, otherwise Welch's; ``*`` when that two-sided p < ``alpha``;
* otherwise ``†`` when the same procedure between the best and the third-best gives p < ``alpha``.

Levene uses SciPy's default centring (``center="median"``, the Brown–Forsythe variant) unless told
otherwise; the paper does not say which. When Levene is undefined (e.g. both samples constant) the
variances are treated as equal. A t-test p that is NaN (fewer than 2 seeds, or two identical
constant samples) never gives a mark.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as sps

from stripes.eval.metrics import DIRECTION


@dataclass(frozen=True)
class TTestResult:
    """Outcome of :func:`compare`: which test ran and its two-sided p-value."""

    levene_p: float
    equal_var: bool
    test: str  # "student" | "welch"
    statistic: float
    p_value: float


def compare(a, b, alpha: float = 0.05, levene_center: str = "median") -> TTestResult:
    """Levene's test picks Student (equal variances) or Welch; returns the two-sided t-test."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if len(a) >= 2 and len(b) >= 2:
            levene_p = float(sps.levene(a, b, center=levene_center).pvalue)
        else:
            levene_p = float("nan")
        equal_var = not (levene_p < alpha)  # NaN (undefined) → equal
        result = sps.ttest_ind(a, b, equal_var=equal_var)
    return TTestResult(
        levene_p=levene_p,
        equal_var=equal_var,
        test="student" if equal_var else "welch",
        statistic=float(result.statistic),
        p_value=float(result.pvalue),
    )


@dataclass
class BlockMarks:
    """Marks for one (context, setting, metric) block."""

    best: str | None
    mark: str  # "*", "†" or ""
    ranking: list[str] = field(default_factory=list)  # methods from best to worst mean
    tests: dict = field(default_factory=dict)  # {"next": TTestResult, "third": TTestResult}


def rank_methods(values: dict[str, np.ndarray], metric: str) -> list[str]:
    """Methods sorted from best to worst mean (NaN means last; ties keep the input order)."""
    direction = DIRECTION[metric]
    means = {m: float(np.nanmean(v)) if np.size(v) and not np.all(np.isnan(v)) else np.nan
             for m, v in values.items()}
    finite = [m for m in values if np.isfinite(means[m])]
    finite.sort(key=lambda m: -direction * means[m])  # stable sort keeps input order on ties
    return finite + [m for m in values if not np.isfinite(means[m])]


def block_marks(values: dict[str, np.ndarray], metric: str, alpha: float = 0.05,
                levene_center: str = "median") -> BlockMarks:
    """Best method and its mark for one block; ``values`` maps method → per-seed values."""
    clean = {m: np.asarray(v, dtype=np.float64)[~np.isnan(np.asarray(v, dtype=np.float64))]
             for m, v in values.items()}
    ranking = rank_methods(clean, metric)
    if not ranking or not np.size(clean[ranking[0]]):
        return BlockMarks(best=None, mark="", ranking=ranking)
    best = ranking[0]
    marks = BlockMarks(best=best, mark="", ranking=ranking)
    for label, index, symbol in (("next", 1, "*"), ("third", 2, "†")):
        if len(ranking) <= index or not np.size(clean[ranking[index]]):
            break
        test = compare(clean[best], clean[ranking[index]], alpha, levene_center)
        marks.tests[label] = test
        if test.p_value < alpha:
            marks.mark = symbol
            break
    return marks
