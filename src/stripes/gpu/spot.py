"""GPU check, section 4: a paper-scale spot check beside the paper's numbers.

RoPE(C), F-StrIPE1 and RoPEPool on BIN, seed 0, lr 5e-4, the ``paper`` profile (spec §5: 16 ticks
per quarter, d_model 512, batch 8, 15 epochs, curriculum, warm-up and decay), trained side by side
on the one GPU by Hydra's joblib launcher (``hydra/launcher=joblib_gpu``, one job per PE), then
scored by ``stripes.evaluate`` on the validation, 16-bar and 64-bar test windows. The run's own
validation CS picks the binarization (spec §5, one lr here); the test values stand beside
[S] Table III (RoPE(C): Table II) with the paper's mean ± std over 5 seeds; "within 2 sd" is
|ours − paper| ≤ 2·std_paper (one seed of ours, so our own spread is not known).

When 15 epochs do not fit in the time given, Lightning's ``max_time`` stops the runs early (the
schedule of the full 15 epochs, cut short); the report then says how many epochs ran and the
measured time per epoch.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from stripes.eval import results as store_lib
from stripes.eval.tables import load_reference, paper_value
from stripes.runs import find_runs, read_run_info

PES = ("rope_c", "fstripe1", "ropepool")
CONTEXT, SEED, LR = "bin", 0, 5e-4
EXPERIMENT = "spot_check"
METRICS = ("CS", "SSMD", "GS", "NDD")
SETTINGS = ("16-16", "16-64")
REFERENCE = "conf/reference/paper_tables.csv"


def max_time(seconds: float) -> str:
    """Lightning's ``max_time`` string DD:HH:MM:SS for ``seconds`` (at least one second)."""
    seconds = max(1, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days:02d}:{hours:02d}:{minutes:02d}:{secs:02d}"


def train_command(runs_root: Path, train_seconds: float, threads: int = 4, pes=PES, profile: str = "paper",
                  extra: tuple[str, ...] = ()) -> list[str]:
    """The Hydra multirun that trains the spot check (one joblib job per PE, side by side);
    ``profile``/``extra`` let the tests run it on the CPU."""
    return [sys.executable, "-m", "stripes.train", "-m", f"profile={profile}", f"pe={','.join(pes)}",
            f"context={CONTEXT}", f"seed={SEED}", f"optim.lr={LR}", "hydra/launcher=joblib_gpu",
            f"hydra.launcher.n_jobs={len(pes)}", "logger=csv", f"runs_root={runs_root}",
            f"experiment_name={EXPERIMENT}", f"torch_threads={threads}", "trainer.enable_progress_bar=false",
            f"+trainer.max_time='{max_time(train_seconds)}'", *extra]


def evaluate_command(runs_root: Path, results_dir: Path, device: str = "cuda") -> list[str]:
    return [sys.executable, "-m", "stripes.evaluate", f"runs_root={Path(runs_root) / EXPERIMENT}",
            f"results_dir={results_dir}", "wandb.enabled=false", f"device={device}"]


def run_logged(command: list[str], log: Path, env: dict | None = None) -> tuple[int, float]:
    """Run ``command`` with stdout+stderr into ``log``; (exit code, seconds)."""
    started = time.perf_counter()
    with open(log, "w") as fh:
        code = subprocess.run(command, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    return code, time.perf_counter() - started


def run_summaries(runs_root: Path) -> pd.DataFrame:
    """One row per spot-check run: status, epochs completed, steps, wall seconds."""
    rows = []
    for run_dir in find_runs(Path(runs_root) / EXPERIMENT, status=None):
        info = read_run_info(run_dir)
        epochs = int(info.get("epochs", 0) or 0)
        wall = float(info.get("wall_seconds", 0.0) or 0.0)
        rows.append({"run": run_dir.name, "pe": info.get("pe"), "status": info.get("status"),
                     "epochs": epochs, "global_step": int(info.get("global_step", 0) or 0),
                     "wall_s": wall, "s_per_epoch": wall / epochs if epochs else float("nan"),
                     "error": info.get("error", "")})
    return pd.DataFrame(rows)


def comparison(results_dir: Path, reference_path: str | Path = REFERENCE) -> pd.DataFrame:
    """Our test values (binarization chosen on val CS) beside the paper's mean ± std."""
    store = store_lib.load_store(results_dir)
    store = store[store["experiment"] == EXPERIMENT]
    rows = store_lib.selected_test_rows(store)
    reference = load_reference(reference_path)
    out = []
    for r in rows.itertuples():
        if r.setting not in SETTINGS or r.metric not in METRICS:
            continue
        paper = (paper_value(reference, "table_III", "BIN", r.method, r.setting, r.metric)
                 or paper_value(reference, "table_II", "BIN", r.method, r.setting, r.metric))
        mean, std, source = paper if paper else (float("nan"), float("nan"), "")
        gap = abs(r.value - mean)
        out.append({"method": r.method, "setting": r.setting, "metric": r.metric,
                    "binarization": r.binarization, "ours": float(r.value), "paper_mean": mean,
                    "paper_std": std, "source": source, "gap_in_sd": gap / std if std else float("nan"),
                    "within_2sd": bool(gap <= 2 * std) if paper else None})
    return pd.DataFrame(out)
