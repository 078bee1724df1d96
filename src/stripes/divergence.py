"""Stop training at the first non-finite loss (issue 14, item 3).

Lightning keeps stepping on a NaN loss: the weights fill with NaN/inf and, with a monitored
``val/loss`` of NaN, a run can still end as "finished" with a non-finite ``best.ckpt``. The
:class:`StopOnNonFiniteLoss` callback checks the training loss before the backward pass (so the
bad step never updates the weights or the optimiser state) and raises :class:`DivergenceError`
with the optimisation step; ``stripes.train`` records the run as failed with that step.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch


class DivergenceError(RuntimeError):
    """The training loss became NaN or inf; ``step`` is the optimisation step (0-based)."""

    def __init__(self, step: int, epoch: int, value: float):
        self.step, self.epoch, self.value = int(step), int(epoch), float(value)
        super().__init__(f"training diverged: loss {value} at step {step} (epoch {epoch}); "
                         f"the weights of that step were not updated")


class StopOnNonFiniteLoss(pl.Callback):
    """Raise :class:`DivergenceError` as soon as a training loss is not finite."""

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           loss: torch.Tensor) -> None:
        if not bool(torch.isfinite(loss.detach()).all()):
            raise DivergenceError(trainer.global_step, trainer.current_epoch, float(loss.detach()))
