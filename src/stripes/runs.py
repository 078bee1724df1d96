"""Run directories: their layout, their `run_info.json`, and loading a trained model back.

A run directory (`outputs/runs/<experiment_name>/<pe>-<context>-lr<lr>-s<seed>/`) holds

    config.yaml            the resolved composed config of the run
    run_info.json          status ("running" | "finished" | "failed"), git commit, package
                           versions, seed, device, W&B run id, wall time, best/final metrics
    checkpoints/last.ckpt  the end of the latest epoch (resume point)
    checkpoints/best.ckpt  the lowest validation loss
    metrics.csv            the CSV log (Lightning CSVLogger)
    wandb/                 the W&B run (offline unless WANDB_MODE=online), when W&B is on
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from stripes.nn.transformer import HarmonizationTransformer

RUN_INFO = "run_info.json"
CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
METRICS = "metrics.csv"
STATUSES = ("running", "finished", "failed")


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    """The run's `run_info.json` as a dict ({} when the run has none yet)."""
    path = Path(run_dir) / RUN_INFO
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def write_run_info(run_dir: str | Path, info: dict[str, Any]) -> None:
    """Write `run_info.json` atomically (a temporary file then a rename)."""
    path = Path(run_dir) / RUN_INFO
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def checkpoint_path(run_dir: str | Path, checkpoint: str = "best") -> Path:
    """`checkpoints/<checkpoint>.ckpt` of a run ("best" or "last")."""
    return Path(run_dir) / CHECKPOINTS / f"{checkpoint}.ckpt"


def find_runs(root: str | Path = "outputs/runs", status: str | None = "finished") -> list[Path]:
    """Run directories under `root` (any depth) whose run_info status is `status` (None = any), sorted."""
    root = Path(root)
    if not root.exists():
        return []
    runs = []
    for info_path in sorted(root.rglob(RUN_INFO)):
        info = read_run_info(info_path.parent)
        if status is None or info.get("status") == status:
            runs.append(info_path.parent)
    return runs


def load_config(run_dir: str | Path) -> DictConfig:
    """The resolved config saved in the run directory."""
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise FileNotFoundError(f"{path}: no config.yaml in this run directory (is it a stripes run?)")
    return OmegaConf.load(path)


def load_run(
    run_dir: str | Path, checkpoint: str = "best", map_location: str | torch.device = "cpu"
) -> tuple[HarmonizationTransformer, DictConfig]:
    """(model in eval mode with the checkpoint's weights, the run's config).

    `checkpoint` is "best" (lowest validation loss) or "last".
    """
    cfg = load_config(run_dir)
    path = checkpoint_path(run_dir, checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint '{checkpoint}' not found in {run_dir}")
    model = HarmonizationTransformer.from_config(cfg)
    state = torch.load(path, map_location=map_location, weights_only=False)["state_dict"]
    prefix = "model."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: checkpoint does not match the config's model "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.to(map_location)
    model.eval()
    return model, cfg
