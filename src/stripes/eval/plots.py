"""`python -m stripes.eval.plots`: Fig. 4, per-context bar charts and the MIDI/pianoroll samples.

Reads only the results store (and ``outputs/tables/table_I.csv`` for the mutual information):

* ``figures/fig4_metrics_vs_mi.{png,pdf}``: [S] Fig. 4, a 2×2 panel (CS ↑, GS ↑, SSMD ↓, NDD ↓) of
  the in-domain (16-16) mean ± std of each Table III method against its context's MI (log x). MI is
  read from ``table_I.csv`` (written by ``make table1``); when that file is absent the paper's
  Table I values are used and the figure title says so;
* ``figures/bars_<context>.{png,pdf}``: every method of the context, 4 metrics × both settings;
* ``samples/<context>/<method>/*.{mid,png,ogg}`` and ``samples/index.csv``: see :mod:`stripes.eval.samples`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from stripes.eval import results as store_lib
from stripes.eval.cells import CONTEXTS, SETTINGS
from stripes.eval.tables import build_tables, load_reference

FIG4_METRICS = ("CS", "GS", "SSMD", "NDD")
ARROWS = {"CS": "↑", "SSMD": "↓", "GS": "↑", "NDD": "↓"}
MI_COLUMN_PREFERENCE = ("mi", "mi_nats", "mi_all", "mi_all_tracks", "MI")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_mi(table_i_csv: str | Path, reference: pd.DataFrame) -> tuple[dict[str, float], str]:
    """{context label: MI in nats} and where it came from.

    ``table_I.csv`` needs a context column (``context`` or ``context_label``, names like TIME or
    time) and an MI column (the first of :data:`MI_COLUMN_PREFERENCE`, else the first numeric column
    whose name contains "mi"). Without the file the paper's [S] Table I is used.
    """
    path = Path(table_i_csv)
    if path.exists():
        frame = pd.read_csv(path)
        context_col = next((c for c in ("context_label", "context", "Context") if c in frame.columns), None)
        mi_col = next((c for c in MI_COLUMN_PREFERENCE if c in frame.columns), None)
        if mi_col is None:
            mi_col = next((c for c in frame.columns if "mi" in c.lower()
                           and pd.api.types.is_numeric_dtype(frame[c])), None)
        if context_col is None or mi_col is None:
            raise ValueError(f"{path}: needs a context column and an MI column, has {list(frame.columns)}")
        mi = {str(c).upper(): float(v) for c, v in zip(frame[context_col], frame[mi_col])}
        return mi, f"MI from {path} (column {mi_col})"
    rows = reference[(reference["paper"] == "S") & (reference["table"] == "TI")]
    mi = {str(c): float(v) for c, v in zip(rows["context"], rows["mean"])}
    return mi, f"{path} absent (run `make table1`): MI from the paper's Table I"


def figure4(table3: pd.DataFrame, mi: dict[str, float], mi_source: str, out_stem: Path) -> list[Path]:
    """2×2 panel: in-domain mean ± std per method vs MI (log x)."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    data = table3[(table3["setting"] == "16-16")] if not table3.empty else table3
    methods = list(dict.fromkeys(data["method"])) if not data.empty else []
    # one series per Table III role: the RoPE row (variant may differ per context), F-StrIPE1, RoPEPool
    role = {m: ("best RoPE" if m.startswith("RoPE(") else m) for m in methods}
    roles = list(dict.fromkeys(role.values()))
    offsets = {r: 1.0 + 0.06 * (i - (len(roles) - 1) / 2) for i, r in enumerate(roles)}
    for ax, metric in zip(axes.ravel(), FIG4_METRICS):
        for r in roles:
            points = data[(data["metric"] == metric) & (data["method"].map(role) == r)]
            points = points[points["context"].isin(list(mi))].dropna(subset=["mean"])
            if points.empty:
                continue
            x = np.array([mi[c] for c in points["context"]]) * offsets[r]
            order = np.argsort(x)
            ax.errorbar(x[order], points["mean"].to_numpy()[order],
                        yerr=np.nan_to_num(points["std"].to_numpy()[order]), marker="o", capsize=3,
                        label=r)
        ax.set_xscale("log")
        present = [c for c in CONTEXTS if c in mi and mi[c] > 0]
        ax.set_xticks([mi[c] for c in present])
        # REP and KEY have nearly equal MI: stagger the labels vertically so they stay readable
        ax.set_xticklabels([("" if i % 2 == 0 else "\n\n") + f"{c}\n{mi[c]:.3g}"
                            for i, c in enumerate(present)], fontsize=8)
        ax.minorticks_off()
        ax.set_title(f"{metric} {ARROWS[metric]} (16/16)")
        ax.grid(alpha=0.3)
    axes[1, 0].set_xlabel("mutual information per context type (nats, log scale)")
    axes[1, 1].set_xlabel("mutual information per context type (nats, log scale)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(labels))
    fig.suptitle(f"Fig. 4: in-domain performance vs MI\n{mi_source}", fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    return _save(fig, out_stem)


def context_bars(cells: pd.DataFrame, context: str, out_stem: Path) -> list[Path]:
    """Grouped bars: methods × settings per metric, with std error bars."""
    plt = _pyplot()
    data = cells[cells["context"] == context]
    methods = list(dict.fromkeys(data["method"]))
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    width = 0.8 / max(len(SETTINGS), 1)
    for ax, metric in zip(axes, ("CS", "SSMD", "GS", "NDD")):
        for j, setting in enumerate(SETTINGS):
            sub = data[(data["metric"] == metric) & (data["setting"] == setting)].set_index("method")
            means = [sub["mean"].get(m, np.nan) for m in methods]
            stds = [sub["std"].get(m, np.nan) for m in methods]
            ax.bar(np.arange(len(methods)) + (j - 0.5) * width, means, width,
                   yerr=np.nan_to_num(stds), capsize=2, label=setting.replace("-", "/"))
        ax.set_xticks(np.arange(len(methods)))
        ax.set_xticklabels(methods, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{metric} {ARROWS[metric]}")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"{context}: test mean ± std over seeds (selected lr and binarization)")
    fig.tight_layout()
    return _save(fig, out_stem)


def _save(fig, out_stem: Path) -> list[Path]:
    plt = _pyplot()
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_stem.with_suffix(".png"), out_stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return paths


def run(cfg: DictConfig) -> list[Path]:
    from stripes.eval.samples import sample_options, write_samples

    store = store_lib.load_store(cfg.results_dir)
    reference = load_reference(cfg.paper_reference)
    outputs = build_tables(store, reference, cfg.selection.metric, cfg.selection.split, cfg.alpha,
                           cfg.levene_center, cfg.get("best_rope"))
    figures = Path(cfg.figures_dir)
    written = []
    mi, mi_source = read_mi(cfg.table_i, reference)
    print(f"[plots] {mi_source}", flush=True)
    if store.empty:
        print(f"[plots] the results store {cfg.results_dir} is empty: run `make evaluate` first",
              flush=True)
    written += figure4(outputs.tables.get("table_III", pd.DataFrame()), mi, mi_source,
                       figures / "fig4_metrics_vs_mi")
    all_cells = outputs.tables.get("table_all", pd.DataFrame())
    for context in CONTEXTS:
        if not all_cells.empty and (all_cells["context"] == context).any():
            written += context_bars(all_cells, context, figures / f"bars_{context.lower()}")
    if cfg.samples.enabled:
        start = time.perf_counter()
        index = write_samples(store, outputs.selection, cfg.samples.out_dir, **sample_options(cfg.samples))
        written += [Path(p) for column in ("midi", "png", "audio") for p in index[column]]
        renderers = ", ".join(sorted(set(index["renderer"]))) or "none"
        print(f"[plots] wrote {len(index)} samples (midi, png, audio; renderer {renderers}) under "
              f"{cfg.samples.out_dir} in {time.perf_counter() - start:.0f} s", flush=True)
    print(f"[plots] wrote {len(written)} files", flush=True)
    log_figures_to_wandb(store, written, cfg.wandb, index if cfg.samples.enabled else None)
    return written


def log_figures_to_wandb(store: pd.DataFrame, written: list[Path], wandb_cfg,
                         samples: pd.DataFrame | None = None) -> None:
    """Figures into every experiment's summary run, with the demo grid of that experiment's methods.

    ``samples`` is the sample index (:func:`stripes.eval.samples.write_samples`); each summary run
    gets a ``wandb.Table`` with one row per (context, window) and audio + pianoroll per method."""
    from stripes.eval.samples import GROUND_TRUTH
    from stripes.eval.wandb_log import log_summary, wandb_enabled

    if not wandb_enabled(wandb_cfg) or store.empty:
        return
    images = {str(p.with_suffix("")).replace(os.sep, "/"): p for p in written
              if p.suffix == ".png" and "samples" not in p.parts}
    for experiment in sorted(set(store["experiment"])):
        methods = set(store.loc[store["experiment"] == experiment, "method"]) | {GROUND_TRUTH}
        grid = None if samples is None else samples[samples["method"].isin(methods)]
        log_summary(experiment, {}, images, wandb_cfg, samples=grid)


@hydra.main(version_base="1.3", config_path="../../../conf", config_name="plots")
def main(cfg: DictConfig) -> None:
    os.chdir(hydra.utils.get_original_cwd())
    run(cfg)


if __name__ == "__main__":
    main()
