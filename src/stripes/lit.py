"""Lightning wrapper around `HarmonizationTransformer`: loss, optimiser, schedules, curriculum.

Training recipe ([S] §IV-C, spec §5; the values live in conf/profile/*.yaml and conf/train.yaml):

* loss: BCE-with-logits on all 384 outputs (melody ⊕ bridge ⊕ piano), averaged over the real
  (unpadded, `batch["mask"]`) ticks;
* optimiser: Adam (the authors' ICASSP-2024 config; [S] does not name it), no weight decay;
* learning rate (spec decision 11): linear warm-up to the grid value, *then* a per-epoch step decay
  counted from the end of the warm-up, computed per optimisation step as

      lr(step) = lr · (step + 1) / W                              for step < W,
      lr(step) = lr · γ^⌊⌊(step − W) / steps_per_epoch⌋ / decay_every⌋   for step ≥ W,

  with W = `optim.warmup_steps` or, when that is null, `optim.warmup_epochs` · steps per epoch
  ([S]: "the first three epochs"; the authors' 2024 code: 160 steps). The peak factor is exactly
  1.0 (reached at step W − 1 and held for one epoch). Multiplying the warm-up by a decay running
  from epoch 0 instead peaked at 0.85² = 0.72 in the paper profile (decision 11: a bug);
* gradient clipping: `trainer.gradient_clip_val` (Lightning, by norm; authors' code 0.0005);
* curriculum over the cropped length ([S] §IV-C "curriculum learning", authors' code):

      length(step) = start + (T − start) · step / ramp_steps   for step < ramp_steps, else T,

  and the batch is cropped to its first `length` ticks (`stripes.data.datamodule.crop_batch`);
* validation: loss, a cheap CS (sigmoid ≥ 0.5 on the piano track, `stripes.eval.metrics`) and the
  piano track's note density (fraction of real tick × pitch cells on), predicted and target.

Each training epoch reseeds the global RNGs and the training sampler's shuffle with (seed, epoch),
so the shuffle order and dropout of an epoch do not depend on whether the run was resumed.
"""

from __future__ import annotations

import math
import random
from typing import Any, Mapping

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from stripes.eval.metrics import chroma_similarity
from stripes.nn.transformer import HarmonizationTransformer

#: Outputs are melody (0:128) ⊕ bridge (128:256) ⊕ piano (256:384); metrics use the piano track.
PIANO = slice(256, 384)


def masked_bce_with_logits(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the real ticks (mask True) and all output units, in float32
    whatever the logits' dtype (bf16 under mixed precision, issue 10)."""
    per_cell = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    weights = mask.to(per_cell.dtype).unsqueeze(-1)
    denominator = weights.sum() * per_cell.shape[-1]
    return (per_cell * weights).sum() / denominator.clamp_min(1.0)


def curriculum_length(step: int, full_length: int, start_length: int, ramp_steps: int) -> int:
    """Cropped sequence length at optimisation step `step` (linear ramp from start to full)."""
    if ramp_steps <= 0 or step >= ramp_steps:
        return int(full_length)
    start = min(int(start_length), int(full_length))
    return max(1, int(start + (full_length - start) * step / ramp_steps))


def lr_factor(step: int, steps_per_epoch: int, warmup_steps: int, gamma: float, decay_every: int) -> float:
    """Multiplier of the base learning rate at optimisation step `step` (0-based; spec decision 11).

    Linear warm-up (step + 1) / warmup_steps for step < warmup_steps, then γ^k with
    k = ⌊⌊(step − warmup_steps) / steps_per_epoch⌋ / decay_every⌋: the decay epochs are counted
    from the end of the warm-up, so the factor peaks at exactly 1.0. Dimensionless, in (0, 1].

    Raises:
        ValueError: steps_per_epoch < 1, decay_every < 1 or warmup_steps < 0.
    """
    if steps_per_epoch < 1 or decay_every < 1 or warmup_steps < 0:
        raise ValueError(
            f"stripes/lit.py: lr_factor needs steps_per_epoch >= 1, decay_every >= 1, warmup_steps >= 0; "
            f"got {steps_per_epoch}, {decay_every}, {warmup_steps}"
        )
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_epochs = (step - warmup_steps) // steps_per_epoch
    return gamma ** (decay_epochs // decay_every)


def warmup_steps_for(optim: Mapping[str, Any], steps_per_epoch: int) -> int:
    """Warm-up length in optimisation steps: `optim.warmup_steps` when set, else
    round(`optim.warmup_epochs` · steps_per_epoch) (conf/train.yaml `optim`)."""
    if optim.get("warmup_steps") is not None:
        return int(optim["warmup_steps"])
    return int(round(float(optim["warmup_epochs"]) * steps_per_epoch))


class HarmonizationModule(pl.LightningModule):
    """Thin LightningModule: the model is built from the composed config (conf/train.yaml)."""

    def __init__(self, cfg: Mapping[str, Any] | DictConfig) -> None:
        super().__init__()
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        self.save_hyperparameters({"cfg": cfg}, logger=False)  # W&B gets the config as written (train.py)
        self.cfg = OmegaConf.create(cfg)
        self.model = HarmonizationTransformer.from_config(self.cfg)
        self.ticks_per_quarter = int(self.cfg.data.ticks_per_quarter)

    def forward(self, inputs: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.model(inputs, positions)

    # ---- training -------------------------------------------------------------------------
    def _reseed(self, epoch: int) -> None:
        """Seed the global RNGs and the training sampler's shuffle for `epoch`.

        The sampler gets its own generator, seeded from (seed, epoch) and read when the loader's
        first batch is drawn, so the order does not depend on how many draws the loader made from
        its generator before (a resumed run creates its iterator before the hooks below run).
        """
        seed = int(self.cfg.seed) * 100_003 + int(epoch)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        loader = self.trainer.train_dataloader if self._trainer is not None else None
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, torch.utils.data.RandomSampler):
            sampler.generator = torch.Generator().manual_seed(seed)

    def on_train_start(self) -> None:  # a (re)started run: before its first batch is drawn
        self._reseed(self.current_epoch)

    def on_train_epoch_start(self) -> None:
        self._reseed(self.current_epoch)

    def _crop_for_curriculum(self, batch: dict) -> dict:
        from stripes.data.datamodule import crop_batch

        cur = self.cfg.curriculum
        full = int(batch["input"].shape[1])
        if not cur.enabled:
            return batch
        length = curriculum_length(self.global_step, full, int(cur.start_length), int(cur.ramp_steps))
        return crop_batch(batch, length) if length < full else batch

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        batch = self._crop_for_curriculum(batch)
        logits = self.model(batch["input"], batch["positions"])
        loss = masked_bce_with_logits(logits, batch["target"], batch["mask"])
        size = int(batch["input"].shape[0])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("train/length", float(batch["input"].shape[1]), on_step=True, on_epoch=False, batch_size=size)
        return loss

    # ---- validation -----------------------------------------------------------------------
    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self.model(batch["input"], batch["positions"])
        loss = masked_bce_with_logits(logits, batch["target"], batch["mask"])
        size = int(batch["input"].shape[0])
        self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=size, sync_dist=True)
        pred = (torch.sigmoid(logits[..., PIANO]) >= 0.5).cpu().numpy()
        target = batch["target"][..., PIANO].cpu().numpy() > 0.5
        cs = chroma_similarity(target, pred, self.ticks_per_quarter, mask=batch["mask"].cpu().numpy())
        real = batch["mask"].cpu().numpy().astype(bool)
        if real.any():  # fraction of (real tick, pitch) cells switched on: predicted vs target
            for name, roll in (("val/density", pred), ("val/target_density", target)):
                self.log(name, float(roll[real].mean()), on_step=False, on_epoch=True, batch_size=size,
                         sync_dist=True)
        cs = np.asarray(cs, dtype=np.float64)
        if np.isfinite(cs).any():
            self.log(
                "val/cs", float(np.nanmean(cs)), on_step=False, on_epoch=True, prog_bar=True,
                batch_size=int(np.isfinite(cs).sum()), sync_dist=True,
            )
        return loss

    # ---- prediction -----------------------------------------------------------------------
    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Logits for whole windows (no crop): {"logits" (B,T,384), "mask", "song", "start"}."""
        logits = self.model(batch["input"], batch["positions"])
        out = {"logits": logits}
        for key in ("mask", "song", "start"):
            if key in batch:
                out[key] = batch[key]
        return out

    # ---- optimiser ------------------------------------------------------------------------
    def configure_optimizers(self):
        optim = self.cfg.optim
        if str(optim.name).lower() == "adam":
            optimizer = torch.optim.Adam(
                self.parameters(), lr=float(optim.lr), betas=tuple(optim.betas),
                weight_decay=float(optim.weight_decay),
            )
        elif str(optim.name).lower() == "adamw":
            optimizer = torch.optim.AdamW(
                self.parameters(), lr=float(optim.lr), betas=tuple(optim.betas),
                weight_decay=float(optim.weight_decay),
            )
        else:
            raise ValueError(f"conf optim.name: unknown optimiser {optim.name!r} (adam | adamw)")
        max_epochs = max(1, int(self.trainer.max_epochs or 1))
        total = self.trainer.estimated_stepping_batches
        steps_per_epoch = max(1, int(total // max_epochs)) if math.isfinite(total) else 1
        warmup = warmup_steps_for(optim, steps_per_epoch)
        gamma, every = float(optim.decay_gamma), int(optim.decay_every_epochs)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, steps_per_epoch, warmup, gamma, every)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
