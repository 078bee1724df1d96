"""`python -m stripes.eval.curves RUN_DIR... --out STEM`: learning curves of training runs.

Reads each run's ``metrics.csv`` (written by `stripes.train`, Lightning's CSV logger) and draws, per
validation epoch, the validation loss (masked BCE, nats per cell), the validation chroma similarity
CS (sigmoid ≥ 0.5 on the piano track, percent) and the predicted note density (fraction of real
tick × pitch cells of the piano track that are on) against the target's, into
``STEM.png`` and ``STEM.pdf``. Used to diagnose near-silent models (issue 15: BCE on a sparse
pianoroll first drives every prediction below 0.5; CS and density rise together once the model
leaves that regime).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from stripes.eval.plots import _pyplot, _save

#: metrics.csv columns drawn, with their axis labels.
CURVES = {
    "val/loss": "val loss (BCE per cell)",
    "val/cs": "val CS (%)",
    "val/density": "predicted piano density",
}


def read_curves(run_dir: str | Path) -> pd.DataFrame:
    """Per-epoch validation metrics of one run.

    Returns a frame with one row per validation epoch: ``epoch``, ``step`` and whichever of
    :data:`CURVES` and ``val/target_density`` the log has (CS is in percent, densities are fractions).

    Raises:
        FileNotFoundError: ``<run_dir>/metrics.csv`` is missing.
        ValueError: the file has no ``epoch`` or ``val/loss`` column, or no validation row.
    """
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no metrics.csv (is {run_dir} a training run directory?)")
    frame = pd.read_csv(path)
    missing = [c for c in ("epoch", "val/loss") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: columns {missing} missing (has {list(frame.columns)})")
    keep = ["epoch", "step", *[c for c in (*CURVES, "val/target_density") if c in frame.columns]]
    rows = frame.loc[frame["val/loss"].notna(), [c for c in keep if c in frame.columns]]
    if rows.empty:
        raise ValueError(f"{path}: no validation row (val/loss is empty)")
    return rows.groupby("epoch", as_index=False).last().sort_values("epoch").reset_index(drop=True)


def plot_learning_curves(run_dirs: list[str | Path], out_stem: str | Path,
                         labels: list[str] | None = None) -> list[Path]:
    """One panel per metric of :data:`CURVES`, one line per run, x = epoch (0-based).

    The density panel also draws each run's target density (dotted). ``labels`` default to the
    run directories' names. Returns the written files (``out_stem`` + .png, .pdf).
    """
    labels = list(labels) if labels is not None else [Path(d).name for d in run_dirs]
    if len(labels) != len(run_dirs):
        raise ValueError(f"plot_learning_curves: {len(labels)} labels for {len(run_dirs)} runs")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(CURVES), figsize=(5 * len(CURVES), 3.8))
    for run_dir, label in zip(run_dirs, labels):
        frame = read_curves(run_dir)
        for ax, (column, title) in zip(axes, CURVES.items()):
            if column not in frame.columns:
                continue
            (line,) = ax.plot(frame["epoch"], frame[column], marker="o", ms=3, label=label)
            if column == "val/density" and "val/target_density" in frame.columns:
                ax.plot(frame["epoch"], frame["val/target_density"], ls=":", color=line.get_color())
    for ax, title in zip(axes, CURVES.values()):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, Path(out_stem))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories (each with metrics.csv)")
    parser.add_argument("--out", required=True, help="output stem (writes STEM.png and STEM.pdf)")
    parser.add_argument("--labels", nargs="*", default=None, help="one label per run")
    args = parser.parse_args(argv)
    for path in plot_learning_curves(args.runs, args.out, args.labels):
        print(path)


if __name__ == "__main__":
    main()
