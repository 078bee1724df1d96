"""Plug-in MI against closed forms."""

import numpy as np
import pytest

from stripes.data.mi import JointCounter, mutual_information, mutual_information_from_counts


def entropy(p):
    p = np.asarray(p, float)
    p = p[p > 0] / p.sum()
    return float(-(p * np.log(p)).sum())


def test_independent_variables_give_zero():
    # an exact product distribution: counts = outer(a, b)
    counts = np.outer([1, 2, 3], [4, 1, 5, 2])
    assert mutual_information_from_counts(counts) == pytest.approx(0.0, abs=1e-12)


def test_deterministic_function_gives_label_entropy():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 128, size=5000)
    labels = values % 12  # the label is a function of the value
    assert mutual_information(labels, values) == pytest.approx(
        entropy(np.bincount(labels)), rel=1e-12)
    # a bijection: MI = entropy of either
    assert mutual_information(values * 3 + 1, values) == pytest.approx(
        entropy(np.bincount(values)), rel=1e-12)


def test_two_by_two_closed_form():
    # P = [[a, b], [b, a]] with a + b = 1/2: I = log 2 - H2(2a)
    a = 0.4
    counts = np.array([[a, 0.5 - a], [0.5 - a, a]]) * 1000
    h2 = -(2 * a * np.log(2 * a) + (1 - 2 * a) * np.log(1 - 2 * a))
    assert mutual_information_from_counts(counts) == pytest.approx(np.log(2) - h2, rel=1e-12)


def test_counter_matches_direct_estimate_and_counts_every_active_cell():
    rng = np.random.default_rng(1)
    counter = JointCounter(flush_every=3)
    all_labels, all_values = [], []
    for _ in range(10):
        roll = rng.random((50, 384)) < 0.05
        labels = rng.integers(0, 7, size=50)
        counter.add(labels, roll)
        t, col = np.nonzero(roll)
        all_labels.append(labels[t])
        all_values.append(col % 128)
    labels, values = np.concatenate(all_labels), np.concatenate(all_values)
    assert counter.n_events == len(labels)
    assert counter.mutual_information() == pytest.approx(mutual_information(labels, values), rel=1e-10)
    # a label per pitch class of a single active pitch per tick: MI = entropy of the labels
    c = JointCounter()
    roll = np.zeros((120, 128), bool)
    pitches = np.arange(120) % 24 + 40
    roll[np.arange(120), pitches] = True
    c.add(pitches % 12, roll)
    assert c.mutual_information() == pytest.approx(np.log(12), rel=1e-12)
