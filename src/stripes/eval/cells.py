"""Table cells: per (method, context, setting, metric) the seed values, mean ± std and marks.

Built from the store's selected test rows (:func:`stripes.eval.results.selected_test_rows`), so every
cell is the test performance of the (lr, binarization) chosen on validation. ``std`` is the sample
standard deviation over seeds (ddof = 1; NaN with one seed).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stripes.eval.metrics import DIRECTION, METRICS
from stripes.eval.stats import block_marks

SETTINGS = ("16-16", "16-64")
CONTEXTS = ("TIME", "REP", "KEY", "BIN")
#: Contexts that are not in the paper: shown in ``table_all`` and the ablation tables only.
ABLATION_CONTEXTS = ("REP-causal",)
CELL_COLUMNS = ["table", "context", "method", "setting", "metric", "mean", "std", "n_seeds", "values",
                "lr", "binarization", "best", "mark", "overall_best"]


def build_cells(test_rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, context_label, setting, metric) with seed values and statistics."""
    records = []
    if test_rows.empty:
        return pd.DataFrame(columns=["context", "method", "setting", "metric", "mean", "std",
                                     "n_seeds", "values", "lr", "binarization"])
    for (method, context, setting, metric), group in test_rows.groupby(
            ["method", "context_label", "setting", "metric"]):
        group = group.sort_values("seed")
        values = group["value"].to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        records.append({
            "context": context, "method": method, "setting": setting, "metric": metric,
            "mean": float(finite.mean()) if finite.size else np.nan,
            "std": float(finite.std(ddof=1)) if finite.size > 1 else np.nan,
            "n_seeds": int(finite.size), "values": finite,
            "lr": float(group["lr"].iloc[0]), "binarization": str(group["binarization"].iloc[0]),
        })
    return pd.DataFrame(records)


def table_cells(cells: pd.DataFrame, layout: dict[str, list[str]], table: str, alpha: float = 0.05,
                levene_center: str = "median", bold_across_contexts: bool = False) -> pd.DataFrame:
    """The cells of one table with its marks.

    ``layout`` maps each context label to the methods shown in its block (in order). Per
    (context, setting, metric) block the best mean gets ``best`` and its ``*``/``†`` mark
    (:func:`stripes.eval.stats.block_marks`); with ``bold_across_contexts`` the best of the block
    winners over all contexts gets ``overall_best`` (the bold cells of [S] Table III).
    """
    rows = []
    for context, methods in layout.items():
        for setting in SETTINGS:
            for metric in METRICS:
                block = {}
                for method in methods:
                    match = cells[(cells["context"] == context) & (cells["method"] == method)
                                  & (cells["setting"] == setting) & (cells["metric"] == metric)]
                    if match.empty:
                        block[method] = None
                    else:
                        block[method] = match.iloc[0].to_dict()
                present = {m: c["values"] for m, c in block.items() if c is not None}
                marks = block_marks(present, metric, alpha, levene_center)
                for method, cell in block.items():
                    base = cell or {"context": context, "method": method, "setting": setting,
                                    "metric": metric, "mean": np.nan, "std": np.nan, "n_seeds": 0,
                                    "values": np.array([]), "lr": np.nan, "binarization": ""}
                    best = method == marks.best
                    rows.append({**base, "table": table, "best": best,
                                 "mark": marks.mark if best else "", "overall_best": False})
    out = pd.DataFrame(rows, columns=CELL_COLUMNS)
    if bold_across_contexts and not out.empty:
        for (setting, metric), group in out[out["best"]].groupby(["setting", "metric"]):
            group = group.dropna(subset=["mean"])
            if group.empty:
                continue
            index = (group["mean"] * DIRECTION[metric]).idxmax()
            out.loc[index, "overall_best"] = True
    return out
