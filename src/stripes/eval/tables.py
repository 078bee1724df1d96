"""`python -m stripes.eval.tables`: Tables II, III, the F-StrIPE rows, the comparison and the claims.

Reads only the results store. Model selection (documented in :mod:`stripes.eval.results`): per
(method, context) the (lr, binarization) with the best mean-over-seeds validation ``selection.metric``
(CS by default); the cells are that configuration's test values, mean ± sample std over seeds.

Writes under ``out_dir`` (``outputs/tables``):

* ``table_II.{md,tex,csv}``: RoPE(A), RoPE(B), RoPE(C) per context;
* ``table_III.{md,tex,csv}``: best RoPE per context (by validation score, or ``best_rope`` fixed),
  F-StrIPE1, RoPEPool; bold = best over contexts;
* ``table_fstripe.{md,tex,csv}``: NoPE, SPE, F-StrIPE per context ([F] Table I rows);
* ``table_rep_causal.{md,tex,csv}``: RoPE(C), F-StrIPE1, RoPEPool on TIME, REP, REP-causal
  (decision 13);
* ``table_all.{md,csv}``: every method present (ablations and the REP-causal context included);
* ``table_selection.{md,csv}``: the selected lr and binarization with their validation score;
* ``comparison.{md,csv}``: each of our cells beside the paper's (``conf/reference/paper_tables.csv``),
  then REP vs REP-causal and the matched-songs length comparison (:mod:`stripes.eval.ablations`);
* ``claims.{md,json}``: which of the paper's claims hold (:mod:`stripes.eval.claims`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from stripes.eval import render
from stripes.eval import results as store_lib
from stripes.eval.ablations import length_matched_markdown, rep_causal_markdown
from stripes.eval.cells import ABLATION_CONTEXTS, CONTEXTS, build_cells, table_cells
from stripes.eval.claims import REP_CAUSAL_METHODS, Claim, check_claims, write_claims
from stripes.eval.metrics import DIRECTION, METRICS

ROPES = ["RoPE(A)", "RoPE(B)", "RoPE(C)"]
FSTRIPE_ROWS = ["NoPE", "SPE", "F-StrIPE"]
EXPERIMENT_TABLES = {"table2": "table_II", "table3": "table_III", "fstripe_table1": "table_fstripe"}
#: [F] Table I rows compared with our per-context rows ([F] used its own structure labels).
F_PAPER_CONTEXT = {"NoPE": "-", "SPE": "-", "F-StrIPE": "melody+chord+phrase"}


@dataclass
class TableOutputs:
    """Everything ``make tables`` computed, for reuse by the report and the plots."""

    cells: pd.DataFrame  # every selected (method, context, setting, metric) cell
    tables: dict  # name -> marked cells of that table
    selection: pd.DataFrame
    comparison: pd.DataFrame
    claims: list[Claim]
    table3_layout: dict = None  # context -> the Table III methods (best RoPE, F-StrIPE1, RoPEPool)


def best_rope_per_context(selection: pd.DataFrame, metric: str, fixed=None) -> dict[str, str]:
    """The RoPE variant of Table III per context: ``fixed[context]`` or the best validation score."""
    out = {}
    for context in CONTEXTS:
        if fixed and context in fixed:
            out[context] = str(fixed[context])
            continue
        candidates = selection[(selection["context_label"] == context) & selection["method"].isin(ROPES)]
        candidates = candidates.dropna(subset=["score"])
        if candidates.empty:
            out[context] = "RoPE(C)"
            continue
        best = candidates.loc[(candidates["score"] * DIRECTION[metric]).idxmax()]
        out[context] = str(best["method"])
    return out


def layouts(cells: pd.DataFrame, best_rope: dict[str, str]) -> dict[str, dict[str, list[str]]]:
    """Rows of every table, restricted to the contexts that have at least one of its methods."""
    present = set(zip(cells["context"], cells["method"])) if not cells.empty else set()
    all_methods = sorted(set(cells["method"])) if not cells.empty else []
    wanted = {
        "table_II": {c: ROPES for c in CONTEXTS},
        "table_III": {c: [best_rope[c], "F-StrIPE1", "RoPEPool"] for c in CONTEXTS},
        "table_fstripe": {c: FSTRIPE_ROWS for c in CONTEXTS},
        "table_rep_causal": {c: list(REP_CAUSAL_METHODS) for c in ("TIME", "REP", "REP-causal")},
        "table_all": {c: all_methods for c in CONTEXTS + ABLATION_CONTEXTS},
    }
    out = {}
    for name, layout in wanted.items():
        out[name] = {c: methods for c, methods in layout.items()
                     if any((c, m) in present for m in methods)}
    return out


PROJECT_ROOT = Path(__file__).resolve().parents[3]


def load_reference(path: str | Path) -> pd.DataFrame:
    """The papers' numbers; a relative path missing from the working directory is read from the project."""
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = PROJECT_ROOT / path
    if not path.exists():
        raise FileNotFoundError(f"{path}: the paper's reference numbers are missing (expected the "
                                "shipped conf/reference/paper_tables.csv)")
    return pd.read_csv(path)


def paper_value(reference: pd.DataFrame, table: str, context: str, method: str, setting: str,
                metric: str):
    """(mean, std, source) of the paper's cell, [F]'s SSMD halved to [S]'s scale; None if absent."""
    if table == "table_fstripe":
        rows = reference[(reference["paper"] == "F") & (reference["method"] == method)
                         & (reference["context"] == F_PAPER_CONTEXT.get(method, "-"))]
        source = "[F] Table I"
    else:
        paper_table = {"table_II": "TII", "table_III": "TIII"}.get(table)
        rows = reference[(reference["paper"] == "S") & (reference["table"] == paper_table)
                         & (reference["context"] == context) & (reference["method"] == method)]
        source = f"[S] Table {paper_table[1:]}" if paper_table else ""
    rows = rows[(rows["setting"] == setting) & (rows["metric"] == metric)]
    if rows.empty:
        return None
    mean, std = float(rows.iloc[0]["mean"]), float(rows.iloc[0]["std"])
    if source.startswith("[F]") and metric == "SSMD":
        mean, std, source = mean / 2, std / 2, source + " (SSMD ÷ 2)"
    return mean, std, source


def comparison_frame(tables: dict[str, pd.DataFrame], reference: pd.DataFrame) -> pd.DataFrame:
    records = []
    for name in ("table_II", "table_III", "table_fstripe"):
        for _, cell in tables.get(name, pd.DataFrame()).iterrows():
            paper = paper_value(reference, name, cell["context"], cell["method"], cell["setting"],
                                cell["metric"])
            records.append({
                "table": name, "context": cell["context"], "method": cell["method"],
                "setting": cell["setting"], "metric": cell["metric"], "ours_mean": cell["mean"],
                "ours_std": cell["std"], "ours_best": bool(cell["best"]), "n_seeds": cell["n_seeds"],
                "paper_mean": paper[0] if paper else np.nan, "paper_std": paper[1] if paper else np.nan,
                "paper_source": paper[2] if paper else "",
            })
    frame = pd.DataFrame(records)
    if frame.empty:
        return frame
    frame["difference"] = frame["ours_mean"] - frame["paper_mean"]
    frame["paper_best"] = False
    for _, group in frame.groupby(["table", "context", "setting", "metric"]):
        group = group.dropna(subset=["paper_mean"])
        if len(group) > 1:
            index = (group["paper_mean"] * DIRECTION[group["metric"].iloc[0]]).idxmax()
            frame.loc[index, "paper_best"] = True
    return frame


def comparison_markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_No cells to compare yet (the results store has no selected test rows)._\n"

    def fmt(mean, std):
        if not np.isfinite(mean):
            return "–"
        return f"{mean:.2f} ± {std:.2f}" if np.isfinite(std) else f"{mean:.2f}"

    lines = ["Each cell: ours (paper). Paper numbers from conf/reference/paper_tables.csv; SSMD on "
             "[S]'s scale (25 × mean |ΔSSM|, decision 10), [F]'s SSMD halved to it. Orderings are comparable at CPU scale, values only at paper "
             "scale (spec §7).", ""]
    lines += ["| Table | Context | Method | Setting | " + " | ".join(METRICS) + " |",
              "|---|---|---|---|" + "---:|" * len(METRICS)]
    for (table, context, method, setting), group in frame.groupby(
            ["table", "context", "method", "setting"], sort=False):
        by_metric = {r["metric"]: r for _, r in group.iterrows()}
        texts = []
        for metric in METRICS:
            r = by_metric.get(metric)
            texts.append("–" if r is None else
                         f"{fmt(r['ours_mean'], r['ours_std'])} ({fmt(r['paper_mean'], r['paper_std'])})")
        lines.append(f"| {table} | {context} | {method} | {setting} | " + " | ".join(texts) + " |")
    blocks = frame[frame["paper_mean"].notna()].groupby(["table", "context", "setting", "metric"])
    agree = [bool(((g["ours_best"]) & (g["paper_best"])).any()) for _, g in blocks if g["paper_best"].any()]
    if agree:
        lines += ["", f"Same best method as the paper in {sum(agree)} of {len(agree)} "
                  "(table, context, setting, metric) blocks."]
    return "\n".join(lines) + "\n"


def selection_markdown(selection: pd.DataFrame) -> str:
    if selection.empty:
        return "_No validation rows in the results store._\n"
    lines = ["| Method | Context | lr | Binarization | validation score | seeds |", "|---|---|---:|---|---:|---:|"]
    for _, r in selection.sort_values(["context_label", "method"]).iterrows():
        lines.append(f"| {r['method']} | {r['context_label']} | {r['lr']:g} | {r['binarization']} | "
                     f"{r['score']:.2f} ({r['selection_metric']}) | {r['n_seeds']} |")
    return "\n".join(lines) + "\n"


TITLES = {
    "table_II": "Table II: RoPE variants per context",
    "table_III": "Table III: best RoPE vs F-StrIPE1 vs RoPEPool",
    "table_fstripe": "[F] Table I rows: NoPE, SPE, F-StrIPE per context",
    "table_rep_causal": "REP vs REP-causal (decision 13): RoPE(C), F-StrIPE1, RoPEPool",
    "table_all": "All methods per context",
}


def build_tables(store: pd.DataFrame, reference: pd.DataFrame, selection_metric: str = "CS",
                 selection_split: str = "val", alpha: float = 0.05, levene_center: str = "median",
                 best_rope=None) -> TableOutputs:
    """Compute every table from the store (no file is written)."""
    selection = store_lib.select_models(store, selection_metric, selection_split)
    test_rows = store_lib.selected_test_rows(store, selection_metric, selection_split)
    cells = build_cells(test_rows)
    rope = best_rope_per_context(selection, selection_metric, best_rope)
    tables = {}
    for name, layout in layouts(cells, rope).items():
        tables[name] = table_cells(cells, layout, name, alpha, levene_center,
                                   bold_across_contexts=(name == "table_III"))
    comparison = comparison_frame(tables, reference)
    table3_layout = {c: [rope[c], "F-StrIPE1", "RoPEPool"] for c in CONTEXTS}
    claims = check_claims(cells, table3_layout, alpha, levene_center)
    return TableOutputs(cells, tables, selection, comparison, claims, table3_layout)


def write_tables(outputs: TableOutputs, out_dir: str | Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, cells in outputs.tables.items():
        md = out_dir / f"{name}.md"
        if cells.empty:
            md.write_text(f"**{TITLES[name]}**\n\n_No evaluated runs for this table yet._\n")
            written.append(md)
            continue
        md.write_text(render.to_markdown(cells, TITLES[name]))
        render.to_csv_frame(cells).to_csv(out_dir / f"{name}.csv", index=False)
        written += [md, out_dir / f"{name}.csv"]
        if name != "table_all":
            tex = out_dir / f"{name}.tex"
            tex.write_text(render.to_latex(cells, TITLES[name], f"tab:{name}"))
            written.append(tex)
    outputs.selection.to_csv(out_dir / "table_selection.csv", index=False)
    (out_dir / "table_selection.md").write_text(selection_markdown(outputs.selection))
    outputs.comparison.to_csv(out_dir / "comparison.csv", index=False)
    extra = [rep_causal_markdown(outputs.cells),
             length_matched_markdown(outputs.cells, outputs.table3_layout or {})]
    (out_dir / "comparison.md").write_text(
        "\n".join([comparison_markdown(outputs.comparison), *[e for e in extra if e]]))
    write_claims(outputs.claims, out_dir)
    written += [out_dir / n for n in ("table_selection.md", "comparison.md", "claims.md")]
    return written


def log_tables_to_wandb(outputs: TableOutputs, store: pd.DataFrame, wandb_cfg) -> None:
    from stripes.eval.wandb_log import log_summary, wandb_enabled

    if not wandb_enabled(wandb_cfg) or store.empty:
        return
    for experiment in sorted(set(store["experiment"])):
        methods = set(store.loc[store["experiment"] == experiment, "method"])
        frames = {"claims": pd.DataFrame([{"claim": c.claim, "status": c.status} for c in outputs.claims])}
        name = EXPERIMENT_TABLES.get(experiment, "table_all")
        cells = outputs.tables.get(name, pd.DataFrame())
        if name == "table_all":
            cells = cells[cells["method"].isin(methods)] if not cells.empty else cells
        if not cells.empty:
            frames[name] = render.to_csv_frame(cells)
        frames["comparison"] = outputs.comparison
        log_summary(experiment, frames, {}, wandb_cfg)


def run(cfg: DictConfig) -> TableOutputs:
    store = store_lib.load_store(cfg.results_dir)
    reference = load_reference(cfg.paper_reference)
    outputs = build_tables(store, reference, cfg.selection.metric, cfg.selection.split, cfg.alpha,
                           cfg.levene_center, cfg.get("best_rope"))
    written = write_tables(outputs, cfg.out_dir)
    if store.empty:
        print(f"[tables] the results store {cfg.results_dir} is empty: run `make evaluate` first; "
              "wrote placeholder tables", flush=True)
    print(f"[tables] wrote {len(written)} files under {cfg.out_dir}", flush=True)
    for claim in outputs.claims:
        print(f"[tables] claim: {claim.claim}: {claim.status}", flush=True)
    log_tables_to_wandb(outputs, store, cfg.wandb)
    return outputs


@hydra.main(version_base="1.3", config_path="../../../conf", config_name="tables")
def main(cfg: DictConfig) -> None:
    os.chdir(hydra.utils.get_original_cwd())
    run(cfg)


if __name__ == "__main__":
    main()
