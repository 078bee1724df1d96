"""Toy study (Figs. 2-3): scores equal eq. (24)-(26); asymmetry zero for RoPE/F-StrIPE1 only."""

import math

import numpy as np
import pandas as pd
import pytest

from stripes import toy


@pytest.mark.parametrize("f", [0.0, 0.4, 1.0])
def test_scores_equal_closed_forms(f):
    psi, xi, _, q, _ = toy.make_dataset(points_per_context=3, seed=1)
    dpsi, dxi = psi[q] - psi, xi[q] - xi
    assert np.allclose(toy.toy_scores("rope", psi, xi, q, f), np.cos(dpsi + f * dxi), atol=1e-12)
    assert np.allclose(toy.toy_scores("fstripe1", psi, xi, q, f), np.cos(dpsi) * np.cos(f * dxi), atol=1e-12)
    a = psi + f * xi - math.pi / 4
    assert np.allclose(toy.toy_scores("ropepool", psi, xi, q, f), 2 * np.cos(a[q]) * np.cos(a), atol=1e-12)


def test_dataset_layout():
    psi, xi, context, q, centres = toy.make_dataset(num_contexts=5, points_per_context=4, sigma=0.05)
    assert np.allclose(centres, np.arange(1, 6) * math.pi / 6)
    assert len(psi) == 20 and context[q] == 2 and xi[q] == pytest.approx(math.pi / 2)


def test_run_small_writes_figures_and_asymmetry(tmp_path):
    paths = toy.run(tmp_path, points_per_context=3, num_f=5)
    for key in ("fig2", "fig3", "asymmetry", "scores"):
        assert paths[key].exists() and paths[key].stat().st_size > 0
    asym = pd.read_csv(paths["asymmetry"])
    overall = asym[asym.f == "max over f"].set_index("method").relative_asymmetry
    assert overall["RoPE"] < 1e-9 and overall["F-StrIPE1"] < 1e-9
    assert overall["RoPEPool"] > 0.1
    scores = pd.read_csv(paths["scores"])
    assert set(scores.method) == {"RoPE", "F-StrIPE1", "RoPEPool"} and len(scores) == 3 * 5 * 15
