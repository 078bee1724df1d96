"""The results store: replacement on re-evaluation, model selection on validation scores."""

import itertools

import numpy as np
import pandas as pd
import pytest

from stripes.eval import results


def make_rows(run_dir, method="RoPE(C)", context="BIN", lr=1e-3, seed=0, base=10.0,
              experiment="table3", evaluated_at="2026-01-01T00:00:00"):
    rows = []
    for split, binarization, metric in itertools.product(
            results.SPLIT_SETTING, ("threshold", "threshold_merge"), ("CS", "SSMD", "GS", "NDD")):
        bonus = 1.0 if binarization == "threshold_merge" else 0.0
        rows.append(dict(
            experiment=experiment, pe=method.lower(), pe_label=method, method=method,
            context=context.lower(), context_label=context, lr=lr, seed=seed, run_dir=run_dir,
            checkpoint="best", split=split, setting=results.SPLIT_SETTING[split],
            binarization=binarization, metric=metric, value=base + bonus, n_windows=3,
            ticks_per_quarter=16, evaluated_at=evaluated_at))
    return pd.DataFrame(rows)


def test_evaluating_a_run_twice_leaves_one_set_of_rows(tmp_path):
    first = make_rows("outputs/runs/x/a", base=1.0)
    results.update_store(tmp_path, first)
    results.update_store(tmp_path, make_rows("outputs/runs/x/b", seed=1))
    store = results.update_store(tmp_path, make_rows("outputs/runs/x/a", base=5.0))
    assert len(store) == 2 * len(first)
    again = results.load_store(tmp_path)
    assert len(again) == 2 * len(first)
    a_rows = again[again["run_dir"] == "outputs/runs/x/a"]
    assert set(a_rows["value"]) == {5.0, 6.0}
    csv = pd.read_csv(tmp_path / "results.csv")
    assert len(csv) == len(again)
    assert results.evaluated_runs(tmp_path) == {"outputs/runs/x/a", "outputs/runs/x/b"}


def test_bad_rows_raise(tmp_path):
    rows = make_rows("r")
    with pytest.raises(ValueError, match="repeat a key"):
        results.replace_run_rows(results.empty_store(), pd.concat([rows, rows.iloc[:1]]))
    with pytest.raises(ValueError, match="unknown split"):
        results.replace_run_rows(results.empty_store(), rows.assign(split="train"))
    assert results.load_store(tmp_path / "nothing").empty


def test_model_selection_uses_mean_validation_score_over_seeds():
    frames = []
    # lr 1e-4: seeds give val CS 10 and 30 (mean 20); lr 1e-3: 18 and 19 (mean 18.5)
    for lr, seed, base in [(1e-4, 0, 10.0), (1e-4, 1, 30.0), (1e-3, 0, 18.0), (1e-3, 1, 19.0)]:
        frames.append(make_rows(f"r-{lr}-{seed}", lr=lr, seed=seed, base=base))
    store = pd.concat(frames, ignore_index=True)
    chosen = results.select_models(store, "CS")
    assert len(chosen) == 1
    row = chosen.iloc[0]
    assert row["lr"] == 1e-4 and row["binarization"] == "threshold_merge"
    assert row["score"] == pytest.approx(21.0) and row["n_seeds"] == 2
    # lower is better for NDD: lr 1e-3 (mean 18.5 + 0) with threshold wins
    chosen_ndd = results.select_models(store, "NDD").iloc[0]
    assert chosen_ndd["lr"] == 1e-3 and chosen_ndd["binarization"] == "threshold"
    test = results.selected_test_rows(store, "CS")
    assert set(test["split"]) == {"test16", "test64", "test16_matched"}
    assert set(test["lr"]) == {1e-4} and set(test["binarization"]) == {"threshold_merge"}
    assert len(test) == 2 * 3 * 4  # seeds x splits x metrics
    values = results.seed_values(test)
    np.testing.assert_allclose(values[("RoPE(C)", "BIN", "16-16", "CS")], [11.0, 31.0])


def test_duplicate_runs_across_experiments_count_once():
    old = make_rows("table2/r", experiment="table2", base=1.0, evaluated_at="2026-01-01T00:00:00")
    new = make_rows("table3/r", experiment="table3", base=2.0, evaluated_at="2026-01-02T00:00:00")
    store = pd.concat([old, new], ignore_index=True)
    test = results.selected_test_rows(store)
    assert set(test["run_dir"]) == {"table3/r"}


def _evaluator(results_dir, names, barrier):
    """One evaluation job: adds its runs' rows one by one (as evaluate_all does)."""
    barrier.wait()
    for name in names:
        results.update_store(results_dir, make_rows(name))


def _two_concurrent_evaluators(results_dir, monkeypatch) -> tuple[set, list]:
    import multiprocessing
    import time

    original = results.replace_run_rows

    def slow_replace(store, rows):  # widen the read-write window: the race is then certain
        time.sleep(0.05)
        return original(store, rows)

    monkeypatch.setattr(results, "replace_run_rows", slow_replace)
    context = multiprocessing.get_context("fork")  # the children inherit the patches
    barrier = context.Barrier(2)
    jobs = [context.Process(target=_evaluator, args=(results_dir, [f"runs/{who}{i}" for i in range(6)], barrier))
            for who in "ab"]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(60)
    return set(results.load_store(results_dir)["run_dir"]), [job.exitcode for job in jobs]


def test_two_concurrent_evaluations_keep_every_run(tmp_path, monkeypatch):
    runs, exitcodes = _two_concurrent_evaluators(tmp_path / "locked", monkeypatch)
    assert exitcodes == [0, 0]
    assert runs == {f"runs/{who}{i}" for who in "ab" for i in range(6)}
    # the injected fault: without the lock the same two jobs lose runs (the 8 of 12), or
    # one of them dies reading a store the other replaced mid-read (seen under load)
    import contextlib

    monkeypatch.setattr(results, "store_lock", lambda *a, **k: contextlib.nullcontext())
    runs, exitcodes = _two_concurrent_evaluators(tmp_path / "unlocked", monkeypatch)
    assert len(runs) < 12 or exitcodes != [0, 0]


def test_drop_runs_removes_only_their_rows(tmp_path):
    for name in ("a", "b", "c"):
        results.update_store(tmp_path, make_rows(f"runs/{name}"))
    assert results.drop_runs(tmp_path, ["runs/b", "runs/zzz"]) == ["runs/b"]
    assert set(results.load_store(tmp_path)["run_dir"]) == {"runs/a", "runs/c"}
    assert set(pd.read_csv(tmp_path / "results.csv")["run_dir"]) == {"runs/a", "runs/c"}
