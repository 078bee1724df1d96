"""Run directories: their layout, their `run_info.json`, and loading a trained model back.

A run directory (`outputs/runs/<experiment_name>/<pe>-<context>-lr<lr>-s<seed>-<hash8>/`, the
hash of the result-relevant config, `stripes.identity`) holds

    config.yaml            the resolved composed config of the run
    run_info.json          status ("running" | "finished" | "failed"), git commit, package
                           versions, seed, device, W&B run id, wall time, best/final metrics
    checkpoints/last.ckpt  the end of the latest epoch (resume point), written atomically
    checkpoints/best.ckpt  the lowest validation loss
                           (a bad checkpoint found before a resume is kept as <name>.bad-<time>)
    metrics.csv            the CSV log, every step once across resumes (`stripes.run_logs`)
    wandb/                 the W&B run (offline unless WANDB_MODE=online), when W&B is on
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from stripes.atomic import atomic_write_text
from stripes.checkpoints import check_finite, read_checkpoint
from stripes.identity import ConfigMismatchError, describe_diff, identity_diff
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
    atomic_write_text(Path(run_dir) / RUN_INFO, json.dumps(info, indent=2, sort_keys=True, default=str))


def checkpoint_path(run_dir: str | Path, checkpoint: str = "best") -> Path:
    """`checkpoints/<checkpoint>.ckpt` of a run ("best" or "last")."""
    return Path(run_dir) / CHECKPOINTS / f"{checkpoint}.ckpt"


def find_runs(root: str | Path = "outputs/runs", status: str | None = "finished",
              errors: list | None = None) -> list[Path]:
    """Run directories under `root` (any depth) whose run_info status is `status` (None = any), sorted.

    A run_info.json that cannot be read is one bad run, not a stop: it is appended to `errors` as
    (run_dir, message) when a list is given, else reported with a warning; either way skipped."""
    root = Path(root)
    if not root.exists():
        return []
    runs = []
    for info_path in sorted(root.rglob(RUN_INFO)):
        try:
            info = read_run_info(info_path.parent)
        except ValueError as err:
            if errors is None:
                warnings.warn(f"skipping run: {err}", stacklevel=2)
            else:
                errors.append((info_path.parent, str(err)))
            continue
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

    `checkpoint` is "best" (lowest validation loss) or "last". Raises FileNotFoundError (no such
    checkpoint), stripes.checkpoints.BadCheckpointError naming the file (unreadable, truncated, or
    with NaN/inf weights: a diverged run) and stripes.identity.ConfigMismatchError when the
    config saved in the checkpoint has another identity than the run's config.yaml.
    """
    cfg = load_config(run_dir)
    path = checkpoint_path(run_dir, checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint '{checkpoint}' not found in {run_dir}")
    content = read_checkpoint(path, map_location=map_location)
    saved = (content.get("hyper_parameters") or {}).get("cfg")
    if saved is not None:
        diff = identity_diff(saved, cfg)
        if diff:
            raise ConfigMismatchError(f"{path}: the checkpoint's saved config differs from "
                                      f"{Path(run_dir) / CONFIG} in {describe_diff(diff)}")
    state = content["state_dict"]
    check_finite(path, state)
    model = HarmonizationTransformer.from_config(cfg)
    prefix = "model."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: checkpoint does not match the config's model "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.to(map_location)
    model.eval()
    return model, cfg
