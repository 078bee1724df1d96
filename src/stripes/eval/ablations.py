"""Markdown for the two fidelity checks that are not paper tables (appended to ``comparison.md``).

* REP without the leak (spec decision 13): per method of the rep_causal ablation, the 16-16 test
  mean ± std of TIME, REP (the paper's, window-wide ranks) and REP-causal (first appearance up to t).
* Length generalization on matched songs (decision 14): per Table III (context, method), 16-16 on
  all test songs (the paper's setting), 16-16 on the test64 songs only (``16-16 matched``) and
  16-64; the 16→64 claim is judged on the last two.

Reads only the selected cells (:func:`stripes.eval.cells.build_cells`); computes no new number.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stripes.eval.claims import REP_CAUSAL_METHODS
from stripes.eval.metrics import METRICS
from stripes.eval.results import MATCHED_SETTING


def _text(cells: pd.DataFrame, method: str, context: str, setting: str, metric: str) -> str:
    match = cells[(cells["method"] == method) & (cells["context"] == context)
                  & (cells["setting"] == setting) & (cells["metric"] == metric)]
    if match.empty or not np.isfinite(match.iloc[0]["mean"]):
        return "–"
    mean, std = float(match.iloc[0]["mean"]), float(match.iloc[0]["std"])
    return f"{mean:.2f} ± {std:.2f}" if np.isfinite(std) else f"{mean:.2f}"


def rep_causal_markdown(cells: pd.DataFrame) -> str:
    """Table: method × (TIME, REP, REP-causal) at 16-16, every metric; '' when no REP-causal cell."""
    if cells.empty or "REP-causal" not in set(cells["context"]):
        return ""
    lines = ["### REP without future leakage (decision 13)", "",
             "16-16 test, mean ± std over seeds. REP ranks the chord ids of the whole window (the "
             "paper), so positions at t depend on later chords; REP-causal numbers chords by first "
             "appearance up to t.", "",
             "| Method | Context | " + " | ".join(METRICS) + " |", "|---|---|" + "---:|" * len(METRICS)]
    for method in REP_CAUSAL_METHODS:
        for context in ("TIME", "REP", "REP-causal"):
            lines.append(f"| {method} | {context} | "
                         + " | ".join(_text(cells, method, context, "16-16", m) for m in METRICS) + " |")
    return "\n".join(lines) + "\n"


def length_matched_markdown(cells: pd.DataFrame, table3_layout: dict[str, list[str]]) -> str:
    """Table: Table III (context, method) × (16-16, 16-16 matched, 16-64) for CS and SSMD."""
    if cells.empty or MATCHED_SETTING not in set(cells["setting"]):
        return ""
    settings = ("16-16", MATCHED_SETTING, "16-64")
    header = [f"{metric} {setting}" for metric in ("CS", "SSMD") for setting in settings]
    lines = ["### Length generalization on matched songs (decision 14)", "",
             "16-16 has every test song, 16-64 only those of at least 64 bars; 16-16 matched is the "
             "16-bar windows of exactly the 16-64 songs. All four metrics are in the claims check.", "",
             "| Context | Method | " + " | ".join(header) + " |", "|---|---|" + "---:|" * len(header)]
    for context, methods in table3_layout.items():
        for method in methods:
            texts = [_text(cells, method, context, s, m) for m in ("CS", "SSMD") for s in settings]
            if any(t != "–" for t in texts):
                lines.append(f"| {context} | {method} | " + " | ".join(texts) + " |")
    return "\n".join(lines) + "\n"
