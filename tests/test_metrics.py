"""Metrics (spec §6) against hand-computed values and binarization against a slow loop reference."""

import numpy as np
import pytest

from stripes.eval import binarize, metrics
from stripes.eval.metrics import (
    chroma_similarity,
    grooving_similarity,
    note_density_distance,
    ssm_distance,
)

K = 4  # ticks per quarter in the small hand cases: half-measure 8 ticks, quarter 4, sixteenth 1


def roll(n_ticks, notes):
    """notes: list of (pitch, start, end_exclusive)."""
    r = np.zeros((n_ticks, 128), dtype=bool)
    for pitch, start, end in notes:
        r[start:end, pitch] = True
    return r


def chords_each_half_measure(n_half, pitches, skip=()):
    notes = []
    for h in range(n_half):
        if h in skip:
            continue
        notes += [(p, 8 * h, 8 * h + 6) for p in pitches]  # re-struck: 6 ticks on, 2 off
    return roll(8 * n_half, notes)


def all4(t, p, k=K, mask=None):
    return (
        chroma_similarity(t, p, k, mask=mask),
        ssm_distance(t, p, k, mask=mask),
        grooving_similarity(t, p, k, mask=mask),
        note_density_distance(t, p, k, mask=mask),
    )


def test_identical_rolls_are_perfect():
    rng = np.random.default_rng(0)
    t = rng.random((3, 128, 128)) < 0.05
    t[1, 40:80] = False  # silent half-measures must also agree
    cs, ssmd, gs, ndd = all4(t, t.copy())
    np.testing.assert_allclose(cs, 100.0)
    np.testing.assert_allclose(ssmd, 0.0)
    np.testing.assert_allclose(gs, 100.0)
    np.testing.assert_allclose(ndd, 0.0)


def test_silent_prediction_scores_cs_0_ndd_100():
    t = chords_each_half_measure(4, [60, 64, 67])  # onsets in every half-measure
    p = np.zeros_like(t)
    cs, ssmd, gs, ndd = all4(t, p)
    assert cs == pytest.approx(0.0)
    assert ndd == pytest.approx(100.0)
    # target SSM is all ones (same chord), prediction SSM all ones (silence agrees with silence)
    assert ssmd == pytest.approx(0.0)
    # onsets in quarters 0, 2, 4, 6 of 8 -> the silent pattern agrees on the other 4
    assert gs == pytest.approx(50.0)


def test_one_note_semitone_shift_in_chord():
    # C-E-G vs C-E-G#: chroma vectors e0+e4+e7 vs e0+e4+e8 -> cos = 2 / (sqrt3 * sqrt3) = 2/3
    t = chords_each_half_measure(2, [60, 64, 67])
    p = chords_each_half_measure(2, [60, 64, 68])
    cs, ssmd, gs, ndd = all4(t, p)
    assert cs == pytest.approx(200.0 / 3.0)
    assert ssmd == pytest.approx(0.0)  # both SSMs are all ones
    assert gs == pytest.approx(100.0)  # same onset times
    assert ndd == pytest.approx(0.0)  # 3 pitches in every sixteenth on both sides


def test_whole_chord_semitone_shift():
    t = chords_each_half_measure(2, [60, 64, 67])
    p = chords_each_half_measure(2, [61, 65, 68])  # pitch classes {1,5,8}: orthogonal to {0,4,7}
    cs, ssmd, gs, ndd = all4(t, p)
    assert cs == pytest.approx(0.0)
    assert ssmd == pytest.approx(0.0)
    assert gs == pytest.approx(100.0)
    assert ndd == pytest.approx(0.0)


def test_missing_half_measure():
    t = chords_each_half_measure(4, [60, 64, 67])
    p = chords_each_half_measure(4, [60, 64, 67], skip=(2,))
    cs, ssmd, gs, ndd = all4(t, p)
    # cosines per half-measure: 1, 1, 0, 1
    assert cs == pytest.approx(75.0)
    # target SSM: 16 ones; prediction SSM differs (0 vs 1) at (2,j), (j,2), j != 2: 6 of 16 entries
    assert ssmd == pytest.approx(25.0 * 6 / 16)  # decision 10: x25
    # quarters 0..7: target onsets at 0,2,4,6; prediction at 0,2,6 -> 7 of 8 agree
    assert gs == pytest.approx(87.5)
    # 4 x 6 active sixteenths x 3 pitches = 72; 6 x 3 = 18 missing -> 25 %
    assert ndd == pytest.approx(25.0)


def test_known_onset_pattern():
    # target: C4 at ticks 0-1 and at tick 4 (two onsets, quarters 0 and 1)
    # prediction: C4 at ticks 0-1 and at tick 9 (onsets in quarters 0 and 2)
    t = roll(16, [(60, 0, 2), (60, 4, 5)])
    p = roll(16, [(60, 0, 2), (60, 9, 10)])
    cs, ssmd, gs, ndd = all4(t, p)
    # half-measure 0: target 2*e0, prediction e0 -> cos 1; half-measure 1: 0 vs e0 -> cos 0
    assert cs == pytest.approx(50.0)
    # SSM_t = [[1,0],[0,1]], SSM_p = all ones -> mean |diff| = 2/4 -> x25 (decision 10)
    assert ssmd == pytest.approx(12.5)
    # patterns [1,1,0,0] vs [1,0,1,0] -> 2 of 4 agree
    assert gs == pytest.approx(50.0)
    # target active sixteenths {0,1,4}: 3 pitch-sixteenths, prediction misses tick 4 -> 1/3
    assert ndd == pytest.approx(100.0 / 3.0)


def test_onset_definition_and_chroma_folding_at_16_ticks():
    # pitch 127 (G9) folds to pitch class 7, pitch 0 to 0; a note held across a half-measure
    # boundary has one onset only
    k = 16
    t = roll(64, [(127, 0, 40), (0, 40, 64)])
    vec = metrics.chroma_onset_vectors(t[None], k)[0]
    expected = np.zeros((2, 12), dtype=int)
    expected[0, 7] = 1
    expected[1, 0] = 1
    np.testing.assert_array_equal(vec, expected)
    np.testing.assert_array_equal(metrics.grooving_pattern(t[None], k)[0], [1, 0, 1, 0])


def test_ndd_counts_distinct_pitches_per_sixteenth():
    k = 16  # sixteenth = 4 ticks
    t = roll(8, [(60, 0, 1), (62, 2, 3)])  # 2 distinct pitches in sixteenth 0, none in sixteenth 1
    p = roll(8, [(60, 1, 4)])  # 1 pitch in sixteenth 0
    assert note_density_distance(t, p, k) == pytest.approx(50.0)
    assert note_density_distance(np.zeros_like(t), p, k) == 0.0  # silent target


def test_trailing_partial_unit_is_dropped():
    t = chords_each_half_measure(2, [60])
    p = t.copy()
    t_long = np.concatenate([t, roll(5, [(61, 0, 5)])])  # 5 extra ticks: no whole half-measure
    p_long = np.concatenate([p, np.zeros((5, 128), bool)])
    assert chroma_similarity(t_long, p_long, K) == pytest.approx(100.0)
    assert ssm_distance(t_long, p_long, K) == pytest.approx(0.0)
    # quarters: 16 + 5 ticks -> 5 whole quarters; the 5th (ticks 16-19) has onset in target only
    assert grooving_similarity(t_long, p_long, K) == pytest.approx(80.0)


def test_batch_matches_single_and_mask_matches_crop():
    rng = np.random.default_rng(1)
    t = rng.random((4, 96, 128)) < 0.03
    p = rng.random((4, 96, 128)) < 0.03
    lengths = np.array([96, 64, 40, 8])
    mask = np.arange(96)[None, :] < lengths[:, None]
    batched = all4(t, p, mask=mask)
    for b in range(4):
        single = all4(t[b, : lengths[b]], p[b, : lengths[b]])
        for name, value_b, value_s in zip("CS SSMD GS NDD".split(), batched, single):
            assert value_b[b] == pytest.approx(value_s, nan_ok=True), (name, b)
    unmasked = all4(t, p)
    for values in unmasked:
        assert values.shape == (4,)


def test_too_short_window_gives_nan_and_bad_inputs_raise():
    t = roll(4, [(60, 0, 2)])
    assert np.isnan(chroma_similarity(t, t, K))
    with pytest.raises(ValueError, match="shape"):
        chroma_similarity(t, t[:2], K)
    with pytest.raises(ValueError, match="128"):
        chroma_similarity(t[:, :64], t[:, :64], K)
    with pytest.raises(ValueError, match="multiple of 4"):
        note_density_distance(t, t, 6)
    with pytest.raises(ValueError, match="prefix"):
        chroma_similarity(t[None], t[None], K, mask=np.array([[False, True, True, True]]))


def test_metrics_are_fast_on_a_64_bar_test_set():
    import time

    rng = np.random.default_rng(2)
    t = rng.random((24, 64 * 64, 128)) < 0.02  # 24 windows of 64 bars at k = 16
    p = rng.random((24, 64 * 64, 128)) < 0.02
    start = time.perf_counter()
    out = metrics.all_metrics(t, p, 16)
    assert time.perf_counter() - start < 20.0
    assert set(out) == set(metrics.METRICS)


# ---------------------------------------------------------------- binarization


def slow_merge(active, max_gap):
    out = active.copy()
    n_time, n_pitch = active.shape
    for pitch in range(n_pitch):
        last = None
        for t in range(n_time):
            if active[t, pitch]:
                if last is not None and 0 < t - last - 1 <= max_gap:
                    out[last + 1 : t, pitch] = True
                last = t
    return out


@pytest.mark.parametrize("max_gap", [0, 1, 2, 4])
def test_merge_matches_slow_loop(max_gap):
    rng = np.random.default_rng(max_gap)
    probs = rng.random((3, 50, 128))
    fast = binarize.threshold_merge(probs, max_gap, thr=0.7)
    for b in range(3):
        np.testing.assert_array_equal(fast[b], slow_merge(probs[b] >= 0.7, max_gap))


def test_threshold_and_merge_hand_case():
    probs = np.zeros((10, 128))
    probs[[0, 2, 5, 9], 3] = 0.9  # gaps of 1 (tick 1), 2 (ticks 3-4), 3 (ticks 6-8)
    probs[4, 3] = 0.5  # exactly at threshold: active
    np.testing.assert_array_equal(np.flatnonzero(binarize.threshold(probs)[:, 3]), [0, 2, 4, 5, 9])
    merged = binarize.threshold_merge(probs, 1)[:, 3]
    np.testing.assert_array_equal(np.flatnonzero(merged), [0, 1, 2, 3, 4, 5, 9])
    assert binarize.binarize(probs, "threshold_merge", max_gap=3)[:, 3].all()
    with pytest.raises(ValueError, match="unknown binarization"):
        binarize.binarize(probs, "argmax")


def _ssmd_slow(target, prediction, k):
    """Spec §6 + decision 10 with plain loops: 25 · mean over all (u, v) of |SSM_t − SSM_p|."""
    half = 2 * k

    def vectors(r):
        out = []
        for u in range(r.shape[0] // half):
            v = [0] * 12
            for t in range(u * half, (u + 1) * half):
                for pitch in range(128):
                    if r[t, pitch] and (t == 0 or not r[t - 1, pitch]):
                        v[pitch % 12] += 1
            out.append(v)
        return out

    def cos(a, b):
        na, nb = sum(x * x for x in a) ** 0.5, sum(x * x for x in b) ** 0.5
        if na == 0 and nb == 0:
            return 1.0
        if na == 0 or nb == 0:
            return 0.0
        return sum(x * y for x, y in zip(a, b)) / (na * nb)

    vt, vp = vectors(target), vectors(prediction)
    n = len(vt)
    total = sum(abs(cos(vt[i], vt[j]) - cos(vp[i], vp[j])) for i in range(n) for j in range(n))
    return 25.0 * total / (n * n)


def test_ssmd_is_on_the_papers_scale_x25():
    # decision 10: hand case, target = one chord per half-measure except a silent third one,
    # prediction = the same chord everywhere. SSM_t has 0 at (2, j != 2) and (j != 2, 2), 1 at (2, 2)
    # (agreeing silence) -> 6 of 16 entries differ by 1 -> 25 * 6/16 = 9.375 (x50 would be 18.75).
    p = chords_each_half_measure(4, [60, 64, 67])
    t = chords_each_half_measure(4, [60, 64, 67], skip=(2,))
    assert ssm_distance(t, p, K) == pytest.approx(9.375)
    assert metrics.SSMD_SCALE == 25.0
    # a silent prediction against a target whose half-measures all differ: SSM_p = all ones,
    # SSM_t = identity -> 25 * (n^2 - n)/n^2
    t = roll(32, [(60 + h, 8 * h, 8 * h + 4) for h in range(4)])
    assert ssm_distance(t, np.zeros_like(t), K) == pytest.approx(25.0 * 12 / 16)
    # random rolls against the slow loop reference
    rng = np.random.default_rng(7)
    for _ in range(3):
        t = rng.random((48, 128)) < 0.02
        p = rng.random((48, 128)) < 0.02
        assert ssm_distance(t, p, K) == pytest.approx(_ssmd_slow(t, p, K))


def test_binarization_names_carry_their_threshold():
    """A store name alone reproduces its roll: bare names at the paper's 0.5, `<method>@<thr>` else."""
    probs = np.array([[0.6], [0.25], [0.35], [0.1], [0.45]])  # one pitch, five ticks
    assert binarize.binarization_name("threshold", 0.5) == "threshold"
    assert binarize.binarization_name("threshold_merge", 0.2) == "threshold_merge@0.2"
    assert binarize.parse_binarization("threshold_merge@0.3") == ("threshold_merge", 0.3)
    assert binarize.parse_binarization("threshold") == ("threshold", None)
    np.testing.assert_array_equal(binarize.binarize(probs, "threshold")[:, 0], [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(binarize.binarize(probs, "threshold@0.3")[:, 0], [1, 0, 1, 0, 1])
    # 0.2: ticks 0, 1, 2, 4 on; the one-tick gap at 3 is filled by the merge
    np.testing.assert_array_equal(binarize.binarize(probs, "threshold_merge@0.2", max_gap=1)[:, 0],
                                  [1, 1, 1, 1, 1])
    for bad in ("thresh@0.3", "threshold@x"):
        with pytest.raises(ValueError, match="binarization"):
            binarize.parse_binarization(bad)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        binarize.binarization_name("threshold", 1.5)
