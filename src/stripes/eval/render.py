"""Render table cells as Markdown, LaTeX and CSV in the layout of [S] Tables II–III.

Rows are (context, method); columns are CS, SSMD, GS, NDD at 16-16 then at 16-64. A cell reads
"mean ± std" followed by its mark (``*`` vs next-best, ``†`` vs third-best). The best mean of a
context block is bold in Markdown and underlined in LaTeX; the best over all contexts (Table III)
is bold italic in Markdown and bold + underlined in LaTeX.
"""

from __future__ import annotations

import math

import pandas as pd

from stripes.eval.cells import SETTINGS
from stripes.eval.metrics import METRICS

ARROWS = {"CS": "↑", "SSMD": "↓", "GS": "↑", "NDD": "↓"}
LATEX_ARROWS = {"CS": r"$\uparrow$", "SSMD": r"$\downarrow$", "GS": r"$\uparrow$", "NDD": r"$\downarrow$"}


def _number(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def cell_text(cell: dict, latex: bool = False) -> str:
    if not cell or cell.get("n_seeds", 0) == 0:
        return "n/a"
    mark = cell.get("mark", "")
    if latex:
        mark = {"*": "$^{*}$", "†": r"$^{\dagger}$"}.get(mark, "")
        body = f"{_number(cell['mean'])} $\\pm$ {_number(cell['std'])}"
        if cell.get("overall_best"):
            return f"\\textbf{{\\underline{{{body}}}}}{mark}"
        if cell.get("best"):
            return f"\\underline{{{body}}}{mark}"
        return body
    body = f"{_number(cell['mean'])} ± {_number(cell['std'])}"
    mark = {"*": " \\*", "†": " †"}.get(mark, "")  # escaped so Markdown shows the star
    if cell.get("overall_best"):
        return f"***{body}***{mark}"
    if cell.get("best"):
        return f"**{body}**{mark}"
    return body


def columns() -> list[tuple[str, str]]:
    return [(setting, metric) for setting in SETTINGS for metric in METRICS]


def _rows(cells: pd.DataFrame):
    order = []
    for _, cell in cells.iterrows():
        key = (cell["context"], cell["method"])
        if key not in order:
            order.append(key)
    lookup = {(c["context"], c["method"], c["setting"], c["metric"]): c.to_dict() for _, c in cells.iterrows()}
    return order, lookup


def to_markdown(cells: pd.DataFrame, title: str = "") -> str:
    order, lookup = _rows(cells)
    header = ["Context", "Method"] + [f"{m} {ARROWS[m]} {s.replace('-', '/')}" for s, m in columns()]
    lines = [f"**{title}**", ""] if title else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * len(columns())]
    for context, method in order:
        cells_text = [cell_text(lookup.get((context, method, s, m))) for s, m in columns()]
        lines.append(f"| {context} | {method} | " + " | ".join(cells_text) + " |")
    lines += ["", "Mean ± sample std over seeds (test windows; lr and binarization chosen on validation). "
              "**Bold**: best mean in its context; `*`: best vs next-best p < 0.05, `†`: best vs "
              "third-best p < 0.05 (Levene → Student/Welch, two-sided)"
              + ("; ***bold italic***: best over all contexts." if cells["overall_best"].any() else ".")]
    return "\n".join(lines) + "\n"


def to_latex(cells: pd.DataFrame, caption: str = "", label: str = "") -> str:
    order, lookup = _rows(cells)
    n = len(columns())
    lines = [r"\begin{table*}[t]", r"\centering", r"\small", r"\begin{tabular}{ll" + "r" * n + "}",
             r"\toprule",
             r" & & \multicolumn{4}{c}{16/16} & \multicolumn{4}{c}{16/64} \\",
             "Context & Method & " + " & ".join(f"{m} {LATEX_ARROWS[m]}" for _, m in columns()) + r" \\",
             r"\midrule"]
    previous = None
    for context, method in order:
        if previous is not None and context != previous:
            lines.append(r"\midrule")
        shown = context if context != previous else ""
        body = " & ".join(cell_text(lookup.get((context, method, s, m)), latex=True) for s, m in columns())
        lines.append(f"{shown} & {method} & {body} \\\\")
        previous = context
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(f"\\caption{{{caption}}}")
    if label:
        lines.append(f"\\label{{{label}}}")
    lines.append(r"\end{table*}")
    return "\n".join(lines) + "\n"


def to_csv_frame(cells: pd.DataFrame) -> pd.DataFrame:
    out = cells.drop(columns=["values"]).copy()
    out["seed_values"] = [";".join(f"{v:.6g}" for v in values) for values in cells["values"]]
    return out
