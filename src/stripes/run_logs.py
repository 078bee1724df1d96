"""Training logs that survive kills and resumes (issue 14, item 5).

* ``metrics.csv``: Lightning's CSV logger deletes the file when it starts, so a resumed attempt
  used to lose every earlier row. :class:`ResumableCSVLogger` appends to the existing file
  instead; before a resume, :func:`truncate_metrics` drops the rows of steps the resumed
  checkpoint does not cover (they are logged again, identically, by the resumed attempt). After
  any number of kills the file holds every step once.
* W&B offline: each ``wandb.init`` writes a new ``wandb/offline-run-<time>-<id>`` folder, and an
  offline resume does not know the steps already logged, so ``wandb sync`` would see several
  partial records of one run. :func:`supersede_offline_runs` moves the earlier attempts' folders
  to ``wandb/superseded/`` and :func:`replay_metrics` logs the kept ``metrics.csv`` rows into
  the new attempt first: the one remaining folder per run id is the whole history. Online, the
  server keeps the history and the run resumes by id (``resume="allow"``); nothing is replayed.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pandas as pd
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from stripes.atomic import atomic_write

METRICS = "metrics.csv"
SUPERSEDED = "superseded"


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, minus the deletion of an existing metrics.csv."""

    def _check_log_dir_exists(self) -> None:  # the parent deletes metrics.csv here
        path = Path(self.metrics_file_path)
        if path.is_file():
            with open(path, newline="") as handle:
                self.metrics_keys = sorted(next(csv.reader(handle), []))


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` writing ``<save_dir>/metrics.csv`` that appends across attempts."""

    def __init__(self, save_dir: str | Path):
        super().__init__(save_dir=str(save_dir), name="", version="")

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def truncate_metrics(run_dir: str | Path, before_step: int | None) -> int:
    """Keep the metrics.csv rows with ``step < before_step`` (None: drop all); return the count."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return 0
    try:
        rows = pd.read_csv(path)
    except pd.errors.EmptyDataError:  # killed before the first row was flushed
        path.unlink()
        return 0
    kept = rows.iloc[0:0] if before_step is None else rows[rows["step"] < before_step]
    if len(kept) != len(rows):
        atomic_write(path, lambda tmp: kept.to_csv(tmp, index=False))
    return len(kept)


def supersede_offline_runs(run_dir: str | Path, run_id: str) -> list[Path]:
    """Move ``wandb/offline-run-*-<run_id>`` folders of earlier attempts to ``wandb/superseded/``.

    W&B names offline folders by the second they started, so two attempts within one second share
    a name: an earlier superseded folder is never overwritten, the later one gets a ``.N`` suffix.
    """
    wandb_dir = Path(run_dir) / "wandb"
    moved = []
    for folder in sorted(wandb_dir.glob(f"offline-run-*-{run_id}")):
        target = wandb_dir / SUPERSEDED / folder.name
        target.parent.mkdir(parents=True, exist_ok=True)
        n = 0
        while target.exists():
            n += 1
            target = wandb_dir / SUPERSEDED / f"{folder.name}.{n}"
        folder.rename(target)
        moved.append(target)
    return moved


def replay_metrics(run_dir: str | Path, logger) -> int:
    """Log every metrics.csv row into ``logger`` (a Lightning logger) at its step; return the count."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return 0
    rows = pd.read_csv(path)
    for row in rows.to_dict("records"):
        step = int(row.pop("step"))
        values = {k: float(v) for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
        if values:
            logger.log_metrics(values, step=step)
    return len(rows)
