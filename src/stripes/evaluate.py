"""`python -m stripes.evaluate`: predict and score finished runs into the results store.

For every finished run under ``runs_root`` (or just ``run_dir=...``): load the best checkpoint and
the run's own config (``stripes.runs.load_run``), build its data module, predict the validation,
16-bar test and 64-bar test windows, binarize (threshold, threshold + merge), score CS, SSMD, GS and
NDD on the piano track, and replace that run's rows in ``outputs/results/results.{parquet,csv}``.
Per-window values go to ``<run_dir>/eval/windows.csv`` and the first test windows (inputs, targets,
piano probabilities) to ``<run_dir>/eval/samples.npz`` for :mod:`stripes.eval.samples`.

Evaluation is deterministic (spec decision 12): before each split, every stochastic PE (SPE) is
seeded with the run's seed, so re-evaluating a checkpoint reproduces its rows exactly.

Runs already in the store are skipped unless ``force=true`` or their checkpoint is newer than their
rows. A run that cannot be evaluated (unreadable run_info.json, truncated checkpoint, NaN/inf
weights of a diverged run, a checkpoint saved with another config than config.yaml) is one failed
run: the others are evaluated, its old rows are dropped, and the job exits non-zero naming it.
Rows of runs whose directory or checkpoint is gone are dropped too (issue 14, item 4). Writes to
the store hold its lock, so several evaluations may share one results folder. ``profile=...`` is accepted like in every stage but each run is evaluated with its own saved
data config; only ``data.root`` (when given) replaces the saved root.

Examples::

    python -m stripes.evaluate
    python -m stripes.evaluate run_dir=outputs/runs/table3/ropepool-bin-lr0.001-s0-<hash8> force=true
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from stripes.eval import results as store_lib
from stripes.eval.binarize import PAPER_THRESHOLD, binarization_name
from stripes.eval.predict import predict_and_score, summarize_windows
from stripes.eval.wandb_log import log_run_metrics
from stripes.pe.base import seed_stochastic_pes
from stripes.runs import CONFIG, checkpoint_path, find_runs, load_run

EVAL_DIR = "eval"


def run_key(run_dir: str | Path) -> str:
    """The store's ``run_dir`` value: relative to the working directory when inside it."""
    path = Path(run_dir).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def binarization_options(cfg: DictConfig, ticks_per_quarter: int) -> dict[str, dict]:
    """{name: kwargs} for the configured grid: ``binarize.methods`` × ``binarize.thresholds``
    (names from ``binarization_name``: bare at the paper's 0.5, ``<method>@<thr>`` otherwise); the
    merge gap is given in sixteenth notes. Raises ValueError naming conf/evaluate.yaml for an
    unknown method or a threshold outside (0, 1)."""
    thresholds = cfg.binarize.get("thresholds") or [PAPER_THRESHOLD]
    max_gap = int(round(cfg.binarize.merge_gap_sixteenths * ticks_per_quarter / 4))
    options = {}
    for thr in thresholds:
        for method in cfg.binarize.methods:
            try:
                name = binarization_name(str(method), float(thr))
            except ValueError as err:
                raise ValueError(f"conf/evaluate.yaml binarize: {err}") from None
            options[name] = {"thr": float(thr)} | ({"max_gap": max_gap} if method == "threshold_merge" else {})
    return options


def run_keys(run_cfg: DictConfig, run_dir: str | Path) -> dict:
    """The columns that identify a run in the store, read from its saved config."""
    return {
        "experiment": str(run_cfg.get("experiment_name", "default")),
        "pe": str(run_cfg.pe.name),
        "pe_label": str(run_cfg.pe.get("label", run_cfg.pe.name)),
        "method": str(run_cfg.pe.get("label", run_cfg.pe.name)),
        "context": str(run_cfg.context.name),
        "context_label": str(run_cfg.context.get("label", str(run_cfg.context.name).upper())),
        "lr": float(run_cfg.optim.lr),
        "seed": int(run_cfg.seed),
        "run_dir": run_key(run_dir),
    }


def needs_evaluation(run_dir: Path, store: pd.DataFrame, checkpoint: str, force: bool) -> bool:
    """False when the run has rows in the store that are newer than its checkpoint."""
    if force:
        return True
    rows = store[(store["run_dir"] == run_key(run_dir)) & (store["checkpoint"] == checkpoint)]
    if rows.empty:
        return True
    evaluated = pd.to_datetime(rows["evaluated_at"], utc=True).min()
    ckpt = checkpoint_path(run_dir, checkpoint)
    if ckpt.exists():
        modified = pd.Timestamp(ckpt.stat().st_mtime, unit="s", tz="UTC")
        return modified > evaluated
    return False


def vanished_runs(store: pd.DataFrame) -> list[str]:
    """Store ``run_dir`` values whose run directory (its config.yaml) or scored checkpoint is gone."""
    gone = []
    for (run_dir, checkpoint), _ in store.groupby(["run_dir", "checkpoint"]):
        if not (Path(run_dir) / CONFIG).exists() or not checkpoint_path(run_dir, checkpoint).exists():
            gone.append(str(run_dir))
    return sorted(set(gone))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def evaluate_run(run_dir: str | Path, cfg: DictConfig, model=None, run_cfg=None, datamodule=None):
    """Evaluate one run; returns its store rows. ``model``/``run_cfg``/``datamodule`` are injectable."""
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    if model is None or run_cfg is None:
        model, run_cfg = load_run(run_dir, checkpoint=cfg.checkpoint, map_location=device)
    model.to(device)
    if cfg.data.get("root"):
        OmegaConf.update(run_cfg, "data.root", str(cfg.data.root), force_add=True)
    for key, value in (cfg.get("data_overrides") or {}).items():
        OmegaConf.update(run_cfg, f"data.{key}", value, force_add=True)
    if datamodule is None:
        from stripes.data.datamodule import build_datamodule

        datamodule = build_datamodule(run_cfg)
        datamodule.setup()
    ticks_per_quarter = int(run_cfg.data.ticks_per_quarter)
    binarizations = binarization_options(cfg, ticks_per_quarter)
    keys = run_keys(run_cfg, run_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")
    rows, windows_all, sample_arrays = [], [], {}
    for split in cfg.splits:
        if split not in store_lib.SPLIT_SETTING:
            raise ValueError(f"conf/evaluate.yaml splits: unknown split {split!r}; "
                             f"expected {sorted(store_lib.SPLIT_SETTING)}")
        start = time.perf_counter()
        n_samples = int(cfg.samples.n_windows) if split in cfg.samples.splits else 0
        seed_stochastic_pes(model, keys["seed"])  # decision 12: SPE's noise is seeded per split
        windows, samples = predict_and_score(model, datamodule.predict_dataloader(split),
                                             ticks_per_quarter, binarizations, device, n_samples)
        sample_arrays.update(samples.to_npz_dict(split))
        windows_all.append(windows.assign(split=split))
        for summary in summarize_windows(windows).itertuples():
            rows.append({**keys, "checkpoint": cfg.checkpoint, "split": split,
                         "setting": store_lib.SPLIT_SETTING[split],
                         "binarization": summary.binarization, "metric": summary.metric,
                         "value": float(summary.value), "n_windows": int(summary.n_windows),
                         "ticks_per_quarter": ticks_per_quarter, "evaluated_at": stamp})
        n_windows = windows[["song", "start"]].drop_duplicates().shape[0] if len(windows) else 0
        print(f"[evaluate] {keys['run_dir']} {split}: {n_windows} windows in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
    eval_dir = run_dir / EVAL_DIR
    eval_dir.mkdir(parents=True, exist_ok=True)
    if windows_all:
        pd.concat(windows_all, ignore_index=True).to_csv(eval_dir / "windows.csv", index=False)
    if sample_arrays:
        np.savez_compressed(eval_dir / "samples.npz", ticks_per_quarter=ticks_per_quarter,
                            **sample_arrays)
    frame = pd.DataFrame(rows, columns=store_lib.STORE_COLUMNS)
    if frame.empty:
        raise RuntimeError(f"{run_dir}: no window was scored (empty prediction loaders for "
                           f"{list(cfg.splits)})")
    return frame


def evaluate_all(cfg: DictConfig) -> pd.DataFrame:
    """Evaluate the selected runs and update the store; returns the store."""
    unreadable: list = []  # (run_dir, message) of run_info.json files that cannot be read
    if cfg.run_dir:
        run_dirs = [Path(cfg.run_dir)]
        if not run_dirs[0].exists():
            raise FileNotFoundError(f"run_dir={cfg.run_dir}: no such run directory")
    else:
        run_dirs = find_runs(cfg.runs_root, errors=unreadable)
        if not run_dirs:
            print(f"[evaluate] no finished run under {cfg.runs_root}", flush=True)
    store = store_lib.load_store(cfg.results_dir)
    failed: list = [(run_dir, ValueError(message)) for run_dir, message in unreadable]
    for run_dir, message in unreadable:
        print(f"[evaluate] FAILED {run_dir}: {message}", flush=True)
    done = 0
    for run_dir in tqdm(run_dirs, desc="evaluate runs", unit="run", mininterval=5):
        if not needs_evaluation(run_dir, store, cfg.checkpoint, bool(cfg.force)):
            print(f"[evaluate] skip {run_dir} (already in the store; force=true re-evaluates)")
            continue
        try:
            rows = evaluate_run(run_dir, cfg)
        except Exception as error:  # one broken run must not stop the others
            if cfg.fail_fast:
                raise
            failed.append((run_dir, error))
            print(f"[evaluate] FAILED {run_dir}: {type(error).__name__}: {error}", flush=True)
            continue
        store = store_lib.update_store(cfg.results_dir, rows)
        log_run_metrics(run_dir, rows, cfg.wandb)
        done += 1
    untrusted = [run_key(r) for r, _ in failed] + vanished_runs(store_lib.load_store(cfg.results_dir))
    dropped = store_lib.drop_runs(cfg.results_dir, untrusted)
    if dropped:
        print(f"[evaluate] dropped the rows of {len(dropped)} run(s) that are gone or failed: "
              + ", ".join(dropped), flush=True)
    store = store_lib.load_store(cfg.results_dir)
    print(f"[evaluate] evaluated {done} run(s), {len(failed)} failed; store: "
          f"{store_lib.store_paths(cfg.results_dir)[0]} ({len(store)} rows)", flush=True)
    if failed:
        raise SystemExit(f"evaluation failed for {len(failed)} run(s): "
                         + ", ".join(str(r) for r, _ in failed))
    return store


@hydra.main(version_base="1.3", config_path="../../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    os.chdir(hydra.utils.get_original_cwd())
    if cfg.get("torch_threads"):  # the cpu profile sets 1: two threads thrash on a busy 2-core CPU
        torch.set_num_threads(int(cfg.torch_threads))
    evaluate_all(cfg)


if __name__ == "__main__":
    main()
