"""`python -m stripes.train`: train one harmonization run (or a Hydra multirun sweep with `-m`).

    python -m stripes.train profile=cpu pe=ropepool context=bin
    python -m stripes.train -m profile=cpu experiment=table3            # the table's grid
    python -m stripes.train -m experiment=table3 seed=0,1,2,3,4          # override the seeds
    python -m stripes.train profile=paper trainer=ddp                    # multi-GPU (Lightning DDP)
    python -m stripes.train -m experiment=table2 hydra/launcher=submitit_slurm

The run directory is Hydra's output directory,
`outputs/runs/<experiment_name>/<pe.name>-<context.name>-lr<optim.lr>-s<seed>/` (layout in
`stripes.runs`). Re-running a directory whose run_info.json says "finished" does nothing; one that
was interrupted resumes from `checkpoints/last.ckpt`; an exception is recorded as status "failed"
(with the traceback) and, in a multirun, the sweep goes on with the next job.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
import traceback
import uuid
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from stripes.lit import HarmonizationModule
from stripes.runs import CHECKPOINTS, CONFIG, METRICS, checkpoint_path, read_run_info, write_run_info

# conf/hydra/launcher/{basic,joblib,submitit_slurm}.yaml extend the launcher plugins' own schemas.
warnings.filterwarnings("ignore", message=".*is validated against ConfigStore schema.*")

PACKAGES = ("stripes", "torch", "pytorch-lightning", "hydra-core", "omegaconf", "numpy", "wandb")


def _is_rank_zero() -> bool:
    """True in the process that owns the run directory (rank 0 of a DDP job, or a plain run)."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def git_commit() -> str:
    """HEAD commit of the source tree (suffixed '-dirty' when it has uncommitted changes)."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def device_description(cfg: DictConfig) -> dict[str, Any]:
    info: dict[str, Any] = {
        "accelerator": str(cfg.trainer.get("accelerator", "auto")),
        "devices": str(cfg.trainer.get("devices", "auto")),
        "strategy": str(cfg.trainer.get("strategy", "auto")),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def build_loggers(cfg: DictConfig, run_dir: Path, info: dict[str, Any]) -> list:
    """CSV logger (always) writing run_dir/metrics.csv, plus W&B when `logger.wandb.enabled`.

    W&B runs offline unless WANDB_MODE=online or `logger.wandb.offline=false`; WANDB_MODE=disabled
    turns it off. The run id is kept in run_info.json so a resumed run continues the same W&B run.
    """
    loggers: list = [CSVLogger(save_dir=str(run_dir), name="", version="")]
    wandb_cfg = cfg.logger.wandb
    mode = os.environ.get("WANDB_MODE", "").lower()
    if not wandb_cfg.enabled or mode == "disabled":
        return loggers
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    offline = bool(wandb_cfg.offline) and mode != "online"
    if offline:
        os.environ["WANDB_MODE"] = "offline"
    info.setdefault("wandb_id", uuid.uuid4().hex[:12])
    loggers.append(
        WandbLogger(
            project=str(wandb_cfg.project),
            entity=wandb_cfg.get("entity"),
            group=str(cfg.experiment_name),
            tags=[str(cfg.pe.name), str(cfg.context.name), f"profile:{cfg.profile_name}"],
            name=run_dir.name,
            id=info["wandb_id"],
            resume="allow",
            save_dir=str(run_dir),
            offline=offline,
            config=OmegaConf.to_container(cfg, resolve=True),
        )
    )
    return loggers


def build_trainer(cfg: DictConfig, run_dir: Path, loggers: list | bool = False, **overrides) -> pl.Trainer:
    """A Lightning Trainer from `cfg.trainer` (its keys are Trainer arguments) with the checkpoints."""
    checkpoints = ModelCheckpoint(
        dirpath=str(run_dir / CHECKPOINTS), filename="best", monitor="val/loss", mode="min",
        save_top_k=1, save_last=True, enable_version_counter=False,
    )
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs.update(overrides)
    return pl.Trainer(
        **kwargs, default_root_dir=str(run_dir), logger=loggers,
        callbacks=[checkpoints, *([LearningRateMonitor(logging_interval="step")] if loggers else [])],
    )


def _completed_epoch(last: Path) -> int:
    """The epoch whose end last.ckpt was saved at (Lightning stores the 0-based current epoch)."""
    return int(torch.load(last, map_location="cpu", weights_only=False).get("epoch", -1))


def _merge_metrics(run_dir: Path, previous: pd.DataFrame | None, completed_epoch: int) -> None:
    """Put the rows of earlier attempts (epochs up to the resumed checkpoint's) back into metrics.csv.

    Lightning's CSV logger empties metrics.csv when it starts, so a resumed run would lose them.
    """
    path = run_dir / METRICS
    if previous is None or previous.empty:
        return
    kept = previous[previous["epoch"] <= completed_epoch] if "epoch" in previous else previous
    current = pd.read_csv(path) if path.exists() else pd.DataFrame()
    pd.concat([kept, current], ignore_index=True).to_csv(path, index=False)


def _final_metrics(trainer: pl.Trainer, checkpoint_cb: ModelCheckpoint) -> dict[str, Any]:
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    best = checkpoint_cb.best_model_score
    return {
        "epochs": int(trainer.current_epoch),
        "global_step": int(trainer.global_step),
        "final_metrics": metrics,
        "best_val_loss": float(best) if best is not None else None,
    }


def train(cfg: DictConfig, run_dir: str | Path, reraise: bool = True) -> dict[str, Any]:
    """Train the run described by `cfg` in `run_dir`; return its run_info dict.

    Does nothing when the run is already finished; resumes from last.ckpt when it exists. On an
    exception the run is marked failed; the exception propagates only when `reraise`.
    """
    run_dir = Path(run_dir)
    rank_zero = _is_rank_zero()
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    info = read_run_info(run_dir)
    if info.get("status") == "finished":
        print(f"[stripes.train] {run_dir}: already finished, skipping")
        return info
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    info.update(
        status="running",
        run_dir=str(run_dir),
        experiment=str(cfg.experiment_name),
        pe=str(cfg.pe.name),
        context=str(cfg.context.name),
        lr=float(cfg.optim.lr),
        seed=int(cfg.seed),
        profile=str(cfg.profile_name),
        git_commit=git_commit(),
        packages=package_versions(),
        device=device_description(cfg),
        attempts=int(info.get("attempts", 0)) + 1,
        started=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
    )
    info.pop("error", None)
    info.pop("traceback", None)
    loggers: list = []
    try:
        if rank_zero:
            (run_dir / CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
        last = checkpoint_path(run_dir, "last")
        resume = last if last.exists() else None
        previous = None
        if resume is not None and (run_dir / METRICS).exists():
            previous = pd.read_csv(run_dir / METRICS)
        completed = _completed_epoch(resume) if resume is not None else -1
        loggers = build_loggers(cfg, run_dir, info)
        if rank_zero:
            write_run_info(run_dir, info)
        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
        from stripes.data.datamodule import build_datamodule

        datamodule = build_datamodule(cfg)
        module = HarmonizationModule(cfg)
        trainer = build_trainer(cfg, run_dir, loggers)
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
        if rank_zero:
            _merge_metrics(run_dir, previous, completed)
        info.update(_final_metrics(trainer, trainer.checkpoint_callback))
        info["status"] = "finished"
    except BaseException as err:  # noqa: BLE001 - record KeyboardInterrupt too, then re-raise below
        info["status"] = "failed"
        info["error"] = f"{type(err).__name__}: {err}"
        info["traceback"] = traceback.format_exc()
        print(f"[stripes.train] {run_dir}: FAILED: {info['error']}")
        if reraise or not isinstance(err, Exception):
            raise
    finally:
        info["wall_seconds"] = float(info.get("wall_seconds", 0.0)) + time.time() - started
        if rank_zero:
            write_run_info(run_dir, info)
        if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
            import wandb

            wandb.finish()
    return info


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    # In a sweep a failing job is recorded and the sweep continues (unless fail_fast).
    train(cfg, hydra_cfg.runtime.output_dir, reraise=not multirun or bool(cfg.fail_fast))


if __name__ == "__main__":
    main()
