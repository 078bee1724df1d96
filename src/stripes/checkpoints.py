"""Checkpoints the pipeline can trust: written atomically, load-tested before use, finite.

* :class:`AtomicCheckpointIO` (a Lightning ``CheckpointIO`` plugin) writes every checkpoint to a
  temporary file in the checkpoint folder and renames it (``stripes.atomic``). Lightning's own
  ``_atomic_save`` writes through fsspec, which may stage the file elsewhere and copy it: a kill
  or a full disk then leaves a truncated ``last.ckpt`` (issue 14, item 2).
* :func:`read_checkpoint` loads a file and checks what resuming and evaluation need, raising
  :class:`BadCheckpointError` naming the file; :func:`set_aside` moves a bad one out of the way.
* :func:`non_finite_weights` counts NaN/inf entries of a state dict (issue 14, item 3).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from stripes.atomic import atomic_write

REQUIRED_KEYS = ("state_dict", "epoch", "global_step")


class BadCheckpointError(RuntimeError):
    """A checkpoint file cannot be used (truncated, not a checkpoint, non-finite weights)."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into ``.<name>.tmp-<pid>`` beside the target, fsync, rename.

    A failed write raises ``stripes.atomic.WriteError`` naming the checkpoint (e.g. ENOSPC) and
    leaves the previous checkpoint as it was."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_write(Path(path), lambda tmp: torch.save(checkpoint, tmp))


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict of ``path``, after checking it is a complete Lightning checkpoint.

    Raises FileNotFoundError when absent and :class:`BadCheckpointError` (naming ``path`` and the
    reason) when it cannot be read or lacks ``state_dict``/``epoch``/``global_step``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # truncated zip, pickle errors, ...: all mean "unusable"
        raise BadCheckpointError(f"{path}: cannot be loaded ({type(err).__name__}: {err})") from err
    if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in REQUIRED_KEYS):
        raise BadCheckpointError(f"{path}: not a Lightning checkpoint (needs {list(REQUIRED_KEYS)})")
    return checkpoint


def non_finite_weights(state_dict: dict[str, torch.Tensor]) -> dict[str, int]:
    """{parameter name: number of NaN/inf entries} for the floating tensors that have any."""
    counts = {}
    for name, value in state_dict.items():
        if torch.is_tensor(value) and value.is_floating_point():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                counts[name] = bad
    return counts


def check_finite(path: str | Path, state_dict: dict[str, torch.Tensor]) -> None:
    """Raise :class:`BadCheckpointError` naming ``path`` when any weight is NaN or inf."""
    bad = non_finite_weights(state_dict)
    if bad:
        names = ", ".join(list(bad)[:3]) + (" ..." if len(bad) > 3 else "")
        raise BadCheckpointError(f"{path}: {sum(bad.values())} non-finite weights in {len(bad)} "
                                 f"tensors ({names}); the run diverged, refusing to use it")


def set_aside(path: str | Path) -> Path:
    """Rename a bad checkpoint to ``<name>.bad-<UTC time>`` in the same folder; return the new path."""
    path = Path(path)
    target = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}")
    n = 1
    while target.exists():
        target = target.with_name(f"{target.name}.{n}")
        n += 1
    path.rename(target)
    return target
