"""The results store: one tidy table that every table, figure and report reads.

``outputs/results/results.parquet`` (and the same rows as ``results.csv``) holds one row per
run × split × setting × binarization × metric, with the run's keys beside the value:

===================  ==========================================================================
column               meaning
===================  ==========================================================================
experiment           ``experiment_name`` of the training config (sweep name)
pe, pe_label         registry key (``ropepool``) and table label (``RoPEPool``) of the PE
method               the label used in tables: ``pe_label``, plus ``[k=v]`` for PE options that
                     differ from the shipped ``conf/pe/<pe>.yaml`` (e.g. the unpooled ablation)
context, context_label  ``time|rep|key|bin`` and ``TIME|REP|KEY|BIN``
lr, seed             ``optim.lr`` and ``seed``
run_dir              the run directory (the key that re-evaluation replaces)
checkpoint           ``best`` or ``last``
split                ``val`` | ``test16`` | ``test64`` | ``test16_matched``
setting              ``16-16`` (val, test16), ``16-64`` (test64): train bars – test bars, or
                     ``16-16 matched`` (test16_matched: 16-bar windows of the test64 songs,
                     decision 14; not a paper setting, used by the length claim only)
binarization         ``threshold`` | ``threshold_merge``
metric, value        ``CS|SSMD|GS|NDD`` and the mean over the split's windows
n_windows            number of windows that had a finite value
ticks_per_quarter    resolution the metric was computed at
evaluated_at         UTC time stamp of the evaluation
===================  ==========================================================================

**Concurrency and change** (issue 14, item 4): every read–replace–write of the store holds
``results.lock`` (``filelock``) in the results folder, so evaluations running at the same time
(parallel cluster jobs) each add their runs and none is lost; parquet and CSV are written
atomically. :func:`drop_runs` removes the rows of runs that can no longer be trusted (deleted run
directories, runs whose evaluation now fails) so the tables never show them.

**Model selection** (spec §5, "select (lr, binarization) per (PE, context) on the validation
set"): for every (method, context), each (lr, binarization) cell is scored by the mean over seeds of
its validation value of ``metric`` (CS by default, direction-aware), and the best cell wins; ties go
to the smaller lr, then to ``threshold``. The reported numbers are that cell's test rows, one value
per seed. Experiments are pooled: a run with the same (method, context, lr, seed) in two
experiments is counted once (the most recently evaluated).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
from filelock import FileLock

from stripes.atomic import atomic_write
from stripes.eval.metrics import DIRECTION

STORE_COLUMNS = [
    "experiment", "pe", "pe_label", "method", "context", "context_label", "lr", "seed", "run_dir",
    "checkpoint", "split", "setting", "binarization", "metric", "value", "n_windows",
    "ticks_per_quarter", "evaluated_at",
]
MATCHED_SETTING = "16-16 matched"
SPLIT_SETTING = {"val": "16-16", "test16": "16-16", "test64": "16-64", "test16_matched": MATCHED_SETTING}
TEST_SPLITS = ("test16", "test64", "test16_matched")
STORE_NAME = "results"
LOCK_NAME = "results.lock"
LOCK_TIMEOUT_S = 600.0


def empty_store() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64" if c in ("lr", "value") else "object")
                         for c in STORE_COLUMNS})


def store_paths(results_dir: str | Path) -> tuple[Path, Path]:
    results_dir = Path(results_dir)
    return results_dir / f"{STORE_NAME}.parquet", results_dir / f"{STORE_NAME}.csv"


@contextmanager
def store_lock(results_dir: str | Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the store's lock file (``<results_dir>/results.lock``); filelock.Timeout after `timeout` s."""
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    with FileLock(str(Path(results_dir) / LOCK_NAME), timeout=timeout):
        yield


def load_store(results_dir: str | Path) -> pd.DataFrame:
    """Read the store (parquet); an absent store is an empty table with the store's columns."""
    parquet, _ = store_paths(results_dir)
    if not parquet.exists():
        return empty_store()
    try:
        store = pd.read_parquet(parquet)
    except Exception as error:  # pragma: no cover - corrupted file
        raise RuntimeError(f"cannot read the results store {parquet}: {error}") from error
    missing = set(STORE_COLUMNS) - set(store.columns)
    if missing:
        raise RuntimeError(f"results store {parquet} lacks columns {sorted(missing)}; re-run evaluate")
    return store


def _check_rows(rows: pd.DataFrame) -> pd.DataFrame:
    missing = set(STORE_COLUMNS) - set(rows.columns)
    if missing:
        raise ValueError(f"result rows lack columns {sorted(missing)}")
    bad = set(rows["split"]) - set(SPLIT_SETTING)
    if bad:
        raise ValueError(f"unknown split(s) {sorted(bad)}; expected {sorted(SPLIT_SETTING)}")
    key = ["run_dir", "checkpoint", "split", "setting", "binarization", "metric"]
    if rows.duplicated(key).any():
        raise ValueError(f"result rows repeat a key {key}")
    return rows[STORE_COLUMNS]


def replace_run_rows(store: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """Drop every row of the runs present in ``rows`` from ``store``, then append ``rows``."""
    rows = _check_rows(rows)
    kept = store[~store["run_dir"].isin(set(rows["run_dir"]))]
    if kept.empty:
        return rows.reset_index(drop=True)
    return pd.concat([kept, rows], ignore_index=True)


def write_store(store: pd.DataFrame, results_dir: str | Path) -> None:
    """Write parquet and CSV atomically (temporary file, then rename; errors name the file).

    Callers that read the store first hold :func:`store_lock` (as :func:`update_store` does)."""
    parquet, csv = store_paths(results_dir)
    store = store.sort_values(
        ["experiment", "method", "context", "lr", "seed", "split", "binarization", "metric"],
        kind="stable").reset_index(drop=True)
    atomic_write(parquet, lambda p: store.to_parquet(p, index=False))
    atomic_write(csv, lambda p: store.to_csv(p, index=False))


def update_store(results_dir: str | Path, rows: pd.DataFrame) -> pd.DataFrame:
    """Under the store lock: load, replace the rows of the runs in ``rows``, write; returns the store."""
    with store_lock(results_dir):
        store = replace_run_rows(load_store(results_dir), rows)
        write_store(store, results_dir)
    return store


def drop_runs(results_dir: str | Path, run_dirs: Iterable[str]) -> list[str]:
    """Under the store lock: remove every row of ``run_dirs`` (store ``run_dir`` values); return
    the run dirs that had rows."""
    wanted = {str(r) for r in run_dirs}
    with store_lock(results_dir):
        store = load_store(results_dir)
        present = sorted(wanted & set(store["run_dir"].astype(str)))
        if present:
            write_store(store[~store["run_dir"].astype(str).isin(present)], results_dir)
    return present


def evaluated_runs(results_dir: str | Path) -> set[str]:
    """Run directories that already have rows in the store."""
    return set(load_store(results_dir)["run_dir"].astype(str))


def deduplicate_runs(store: pd.DataFrame) -> pd.DataFrame:
    """Keep one run per (method, context, lr, seed): the most recently evaluated one."""
    if store.empty:
        return store
    runs = store[["method", "context_label", "lr", "seed", "run_dir", "evaluated_at"]].drop_duplicates(
        "run_dir")
    latest = runs.sort_values("evaluated_at", kind="stable").drop_duplicates(
        ["method", "context_label", "lr", "seed"], keep="last")
    return store[store["run_dir"].isin(set(latest["run_dir"]))]


def selection_scores(store: pd.DataFrame, metric: str = "CS", split: str = "val") -> pd.DataFrame:
    """Validation score of every (method, context, lr, binarization) cell: mean over seeds."""
    if metric not in DIRECTION:
        raise ValueError(f"unknown selection metric {metric!r}; expected one of {sorted(DIRECTION)}")
    val = deduplicate_runs(store)
    val = val[(val["split"] == split) & (val["metric"] == metric)]
    keys = ["method", "context_label", "lr", "binarization"]
    return (val.groupby(keys, dropna=False)["value"]
            .agg(score="mean", n_seeds="count").reset_index())


def select_models(store: pd.DataFrame, metric: str = "CS", split: str = "val") -> pd.DataFrame:
    """One row per (method, context_label): the chosen lr and binarization and their val score."""
    scores = selection_scores(store, metric, split)
    if scores.empty:
        return scores.assign(selection_metric=pd.Series(dtype="object"))
    direction = DIRECTION[metric]
    scores = scores.assign(_order=-direction * scores["score"],
                           _bin=(scores["binarization"] != "threshold").astype(int))
    scores = scores.sort_values(["method", "context_label", "_order", "lr", "_bin"], kind="stable")
    chosen = scores.dropna(subset=["score"]).drop_duplicates(["method", "context_label"])
    return chosen.drop(columns=["_order", "_bin"]).assign(selection_metric=metric).reset_index(drop=True)


def selected_test_rows(store: pd.DataFrame, metric: str = "CS", split: str = "val") -> pd.DataFrame:
    """Test rows (test16, test64, test16_matched) of the selected (lr, binarization) of each (method, context)."""
    chosen = select_models(store, metric, split)
    if chosen.empty:
        return store.iloc[0:0]
    test = deduplicate_runs(store)
    test = test[test["split"].isin(TEST_SPLITS)]
    merged = test.merge(chosen[["method", "context_label", "lr", "binarization"]],
                        on=["method", "context_label", "lr", "binarization"], how="inner")
    return merged.reset_index(drop=True)


def seed_values(rows: pd.DataFrame) -> dict:
    """{(method, context_label, setting, metric): per-seed values sorted by seed}."""
    out = {}
    for key, group in rows.groupby(["method", "context_label", "setting", "metric"]):
        out[key] = group.sort_values("seed")["value"].to_numpy(dtype=np.float64)
    return out
