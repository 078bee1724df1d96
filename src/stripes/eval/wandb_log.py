"""Weights & Biases logging for evaluation (offline by default, off when disabled).

* :func:`log_run_metrics` writes a run's validation and test metrics into that run's own W&B record,
  resumed by the id that training stored in ``run_info.json`` (``wandb_id``; ``wandb_run_id`` is also
  accepted). Without an id a new record is created and its id written back to ``run_info.json``.
* :func:`log_summary` writes the tables (as ``wandb.Table``) and figures (as ``wandb.Image``) into one
  summary run per experiment (id ``summary-<experiment>``, resumed on every call).

Both do nothing when ``cfg.enabled`` is false or ``WANDB_MODE=disabled`` (tests), and always call
``wandb.finish()``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pandas as pd

from stripes.runs import read_run_info, write_run_info


def wandb_enabled(cfg) -> bool:
    return bool(cfg is not None and cfg.get("enabled", False)) and os.environ.get("WANDB_MODE") != "disabled"


def _init(cfg, run_id: str, directory: Path, name: str, job_type: str, group: str | None = None):
    import wandb

    directory.mkdir(parents=True, exist_ok=True)
    return wandb.init(project=cfg.get("project", "stripes"), entity=cfg.get("entity"), id=run_id,
                      resume="allow", dir=str(directory), name=name, job_type=job_type, group=group,
                      mode=os.environ.get("WANDB_MODE", cfg.get("mode", "offline")),
                      reinit="finish_previous")


def log_run_metrics(run_dir: str | Path, rows: pd.DataFrame, cfg) -> str | None:
    """Log ``rows`` (one run's store rows) as ``eval/<split>/<binarization>/<metric>`` summaries."""
    if not wandb_enabled(cfg) or rows.empty:
        return None
    import wandb

    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    run_id = info.get("wandb_id") or info.get("wandb_run_id")
    if not run_id:
        run_id = secrets.token_hex(4)  # W&B ids: lowercase letters and digits
        info["wandb_id"] = run_id
        write_run_info(run_dir, info)
    run = None
    try:
        run = _init(cfg, run_id, run_dir, run_dir.name, "train",
                    group=str(rows["experiment"].iloc[0]))
        values = {f"eval/{r.split}/{r.binarization}/{r.metric}": r.value for r in rows.itertuples()}
        run.summary.update(values)
        run.log(values)
    finally:
        if run is not None:
            wandb.finish()
    return run_id


def log_summary(experiment: str, tables: dict[str, pd.DataFrame], images: dict[str, Path], cfg,
                directory: str | Path = "outputs") -> str | None:
    """One summary run per experiment carrying tables and figures (pianorolls included)."""
    if not wandb_enabled(cfg):
        return None
    import wandb

    run_id = f"summary-{experiment}".replace("/", "-")
    run = None
    try:
        run = _init(cfg, run_id, Path(directory), f"summary {experiment}", "summary")
        payload = {}
        for name, frame in tables.items():
            payload[f"tables/{name}"] = wandb.Table(dataframe=frame.astype(str))
        for name, path in images.items():
            if Path(path).exists():
                payload[f"figures/{name}"] = wandb.Image(str(path))
        if payload:
            run.log(payload)
    finally:
        if run is not None:
            wandb.finish()
    return run_id
