"""`python -m stripes.train`: train one harmonization run (or a Hydra multirun sweep with `-m`).

    python -m stripes.train profile=cpu pe=ropepool context=bin
    python -m stripes.train -m profile=cpu experiment=table3            # the table's grid
    python -m stripes.train -m experiment=table3 seed=0,1,2,3,4          # override the seeds
    python -m stripes.train profile=paper trainer=ddp                    # multi-GPU (Lightning DDP)
    python -m stripes.train -m experiment=table2 hydra/launcher=submitit_slurm

The run directory is Hydra's output directory,
`outputs/runs/<experiment_name>/<pe.name>-<context.name>-lr<optim.lr>-s<seed>-<config hash>/`
(layout in `stripes.runs`, the hash in `stripes.identity`). Issue 14's guarantees:

* a directory whose saved config.yaml has another identity is refused (never resumed or skipped);
* re-running a "finished" run does nothing; an interrupted one resumes from `last.ckpt` (saved at
  every epoch end, written atomically), after load-testing it: a bad checkpoint is named, moved
  aside (`last.ckpt.bad-<time>`) and the run falls back to `best.ckpt`, else starts over;
* the first non-finite training loss stops the run, recorded "failed" with `failed_step`;
* every metrics.csv row survives resumes, and W&B keeps one run (one offline folder) per run;
* an exception is recorded as status "failed" (with the traceback) and, in a multirun, the sweep
  goes on; at its end `stripes.sweep.SweepSummary` lists the failed jobs and exits with status 1.
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
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

from stripes.atomic import atomic_write_text
from stripes.checkpoints import AtomicCheckpointIO, BadCheckpointError, check_finite, read_checkpoint, set_aside
from stripes.divergence import DivergenceError, StopOnNonFiniteLoss
from stripes.identity import ConfigMismatchError, config_hash, describe_diff, identity_diff
from stripes.lit import HarmonizationModule
from stripes.run_logs import ResumableCSVLogger, replay_metrics, supersede_offline_runs, truncate_metrics
from stripes.runs import CHECKPOINTS, CONFIG, checkpoint_path, load_config, read_run_info, write_run_info
from stripes.sweep import record_job

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
    turns it off. The run id is kept in run_info.json so a resumed run continues the same W&B run;
    offline, the earlier attempts' folders are superseded and the kept metrics.csv rows replayed
    (`stripes.run_logs`), so the run has one offline folder with its whole history.
    """
    loggers: list = [ResumableCSVLogger(run_dir)]
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
    if offline and _is_rank_zero():  # other DDP ranks neither log nor own the folders
        supersede_offline_runs(run_dir, info["wandb_id"])
    wandb_logger = WandbLogger(
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
    loggers.append(wandb_logger)
    if offline and _is_rank_zero():
        replay_metrics(run_dir, wandb_logger)
    return loggers


def build_trainer(cfg: DictConfig, run_dir: Path, loggers: list | bool = False,
                  callbacks: list | None = None, **overrides) -> pl.Trainer:
    """A Lightning Trainer from `cfg.trainer` (its keys are Trainer arguments) with the checkpoints.

    `best.ckpt` (lowest val/loss) and `last.ckpt` (every epoch end, improved or not) are
    written atomically in the checkpoint folder (`AtomicCheckpointIO`); a non-finite training
    loss stops training (`StopOnNonFiniteLoss`). `callbacks` are appended (tests inject faults).
    """
    folder = str(run_dir / CHECKPOINTS)
    best = ModelCheckpoint(dirpath=folder, filename="best", monitor="val/loss", mode="min",
                           save_top_k=1, enable_version_counter=False)
    last = ModelCheckpoint(dirpath=folder, filename="last", monitor=None, save_top_k=1,
                           enable_version_counter=False)
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs.update(overrides)
    monitors = [LearningRateMonitor(logging_interval="step")] if loggers else []
    return pl.Trainer(
        **kwargs, default_root_dir=str(run_dir), logger=loggers, plugins=[AtomicCheckpointIO()],
        callbacks=[best, last, StopOnNonFiniteLoss(), *monitors, *(callbacks or [])],
    )


def check_same_config(run_dir: Path, cfg: DictConfig) -> None:
    """Raise ConfigMismatchError when `run_dir/config.yaml` has another identity than `cfg`."""
    if not (run_dir / CONFIG).exists():
        return
    try:
        saved = load_config(run_dir)
    except Exception as err:
        raise ConfigMismatchError(f"{run_dir / CONFIG}: unreadable ({err}); not touching this run") from err
    diff = identity_diff(saved, cfg)
    if diff:
        raise ConfigMismatchError(
            f"{run_dir}: this config differs from the run's config.yaml in {describe_diff(diff)}; "
            f"a run is never resumed or skipped across a config change (use the default run "
            f"directory, whose name carries the config hash, or another hydra.run.dir)")


def resume_checkpoint(run_dir: Path, cfg: DictConfig, info: dict[str, Any]) -> tuple[Path | None, int | None]:
    """(checkpoint to resume from, its global step): last.ckpt, else best.ckpt, else (None, None).

    Each candidate is load-tested; a bad one (truncated, unreadable, non-finite) is named, moved
    aside to `<name>.bad-<time>` (listed in info["set_aside"]) and the next one is tried. A
    checkpoint saved with another config identity raises ConfigMismatchError.
    """
    for name in ("last", "best"):
        path = checkpoint_path(run_dir, name)
        if not path.exists():
            continue
        try:
            checkpoint = read_checkpoint(path)
            check_finite(path, checkpoint["state_dict"])
        except BadCheckpointError as err:
            moved = set_aside(path)
            print(f"[stripes.train] {err}; moved to {moved.name}", flush=True)
            info.setdefault("set_aside", []).append({"checkpoint": str(path), "moved_to": str(moved),
                                                     "reason": str(err)})
            continue
        saved = (checkpoint.get("hyper_parameters") or {}).get("cfg")
        diff = identity_diff(saved, cfg) if saved is not None else {}
        if diff:
            raise ConfigMismatchError(f"{path}: saved with another config ({describe_diff(diff)}); "
                                      f"not resuming from it")
        return path, int(checkpoint["global_step"])
    return None, None


def _final_metrics(trainer: pl.Trainer, checkpoint_cb: ModelCheckpoint) -> dict[str, Any]:
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    best = checkpoint_cb.best_model_score
    return {
        "epochs": int(trainer.current_epoch),
        "global_step": int(trainer.global_step),
        "final_metrics": metrics,
        "best_val_loss": float(best) if best is not None else None,
    }


def train(cfg: DictConfig, run_dir: str | Path, reraise: bool = True,
          extra_callbacks: list | None = None) -> dict[str, Any]:
    """Train the run described by `cfg` in `run_dir`; return its run_info dict plus "outcome"
    ("trained" | "skipped" | "failed" | "refused"; not saved).

    Refuses (ConfigMismatchError, or ValueError for an unreadable run_info.json) a directory made
    with another config identity, without touching it; does nothing when the run is already
    finished; resumes from the load-tested last.ckpt (else best.ckpt). On an exception the run
    is marked failed (a DivergenceError also records `failed_step`); exceptions propagate only
    when `reraise`. `extra_callbacks` go to the Trainer (fault injection in tests).
    """
    run_dir = Path(run_dir)
    rank_zero = _is_rank_zero()
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    try:
        info = read_run_info(run_dir)
        check_same_config(run_dir, cfg)
    except (ConfigMismatchError, ValueError) as err:  # leave the run directory as it is
        print(f"[stripes.train] REFUSED: {err}", flush=True)
        if reraise:
            raise
        return {"status": "failed", "outcome": "refused", "run_dir": str(run_dir), "error": str(err)}
    if info.get("status") == "finished":
        print(f"[stripes.train] {run_dir}: already finished, skipping")
        return {**info, "outcome": "skipped"}
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
        config_hash=config_hash(cfg),
        git_commit=git_commit(),
        packages=package_versions(),
        device=device_description(cfg),
        attempts=int(info.get("attempts", 0)) + 1,
        started=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
    )
    for stale in ("error", "traceback", "failed_step"):
        info.pop(stale, None)
    loggers: list = []
    try:
        if rank_zero:
            atomic_write_text(run_dir / CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
        resume, resume_step = resume_checkpoint(run_dir, cfg, info)
        if rank_zero:  # rows of steps the checkpoint does not cover are logged again
            truncate_metrics(run_dir, resume_step)
        loggers = build_loggers(cfg, run_dir, info)
        if rank_zero:
            write_run_info(run_dir, info)
        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
        from stripes.data.datamodule import build_datamodule

        datamodule = build_datamodule(cfg)
        module = HarmonizationModule(cfg)
        trainer = build_trainer(cfg, run_dir, loggers, callbacks=list(extra_callbacks or []))
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
        info.update(_final_metrics(trainer, trainer.checkpoint_callback))
        info["status"] = "finished"
    except BaseException as err:  # noqa: BLE001 - record KeyboardInterrupt too, then re-raise below
        info["status"] = "failed"
        info["error"] = f"{type(err).__name__}: {err}"
        info["traceback"] = traceback.format_exc()
        if isinstance(err, DivergenceError):
            info["failed_step"] = err.step
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
    return {**info, "outcome": "trained" if info["status"] == "finished" else "failed"}


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    # In a sweep a failing job is recorded and the sweep continues (unless fail_fast); the
    # outcome goes to the sweep's records for stripes.sweep.SweepSummary.
    outcome = train(cfg, hydra_cfg.runtime.output_dir, reraise=not multirun or bool(cfg.fail_fast))
    if multirun:
        record_job(hydra_cfg.sweep.dir, hydra_cfg.job.num, outcome)


if __name__ == "__main__":
    main()
