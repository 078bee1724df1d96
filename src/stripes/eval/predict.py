"""Inference over a split's windows, streamed straight into per-window metrics.

One forward pass per batch over the whole window (16 or 64 bars, [S] §IV-F: no sampling), sigmoid,
then each binarization, then the four metrics on the piano (accompaniment) track (decision 9.6).
Logits are never kept: only per-window metric values and, for the first few windows, the inputs,
targets and piano probabilities needed to render samples.

A batch is the contract's dict: ``input`` (B,T,256), ``target`` (B,T,384), ``positions`` (B,T,P),
``mask`` (B,T) True on real ticks, ``song`` (B,), ``start`` (B,). The model maps
``(input, positions) -> logits (B,T,384)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from stripes.eval.binarize import binarize
from stripes.eval.metrics import all_metrics

PIANO = slice(256, 384)


@dataclass
class SampleWindows:
    """The first windows of a split, kept to render MIDI and pianorolls."""

    song: list = field(default_factory=list)
    start: list = field(default_factory=list)
    input: list = field(default_factory=list)  # (T, 256) bool, melody ⊕ bridge
    target_piano: list = field(default_factory=list)  # (T, 128) bool
    piano_probs: list = field(default_factory=list)  # (T, 128) float16
    length: list = field(default_factory=list)  # real ticks

    def add(self, batch_np: dict, probs: np.ndarray, limit: int) -> None:
        for b in range(len(batch_np["song"])):
            if len(self.song) >= limit:
                return
            n = int(batch_np["mask"][b].sum())
            self.song.append(int(batch_np["song"][b]))
            self.start.append(int(batch_np["start"][b]))
            self.length.append(n)
            self.input.append(batch_np["input"][b, :n] > 0.5)
            self.target_piano.append(batch_np["target"][b, :n, PIANO] > 0.5)
            self.piano_probs.append(probs[b, :n].astype(np.float16))

    def to_npz_dict(self, prefix: str) -> dict:
        """Flat arrays for ``np.savez`` (windows are padded to the longest one)."""
        if not self.song:
            return {}
        t_max = max(self.length)

        def pad(arrays, width, dtype):
            out = np.zeros((len(arrays), t_max, width), dtype=dtype)
            for i, a in enumerate(arrays):
                out[i, : len(a)] = a
            return out

        return {
            f"{prefix}_song": np.array(self.song), f"{prefix}_start": np.array(self.start),
            f"{prefix}_length": np.array(self.length),
            f"{prefix}_input": pad(self.input, 256, bool),
            f"{prefix}_target_piano": pad(self.target_piano, 128, bool),
            f"{prefix}_piano_probs": pad(self.piano_probs, 128, np.float16),
        }


def _to_numpy(batch: dict) -> dict:
    return {k: (v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v)) for k, v in batch.items()}


@torch.no_grad()
def predict_and_score(
    model: torch.nn.Module,
    loader,
    ticks_per_quarter: int,
    binarizations: dict[str, dict],
    device: str | torch.device = "cpu",
    n_samples: int = 0,
) -> tuple[pd.DataFrame, SampleWindows]:
    """Score every window of ``loader``.

    ``binarizations`` maps a name (``threshold`` | ``threshold_merge``) to its keyword arguments
    (``thr``, ``max_gap``). Returns a long table with one row per window × binarization × metric
    (columns song, start, n_ticks, binarization, metric, value) and the first ``n_samples`` windows.
    """
    model.eval()
    records = []
    samples = SampleWindows()
    for batch in loader:
        for key in ("input", "target", "positions", "mask", "song", "start"):
            if key not in batch:
                raise KeyError(f"predict batch lacks '{key}' (has {sorted(batch)})")
        logits = model(batch["input"].to(device), batch["positions"].to(device))
        if logits.shape[-1] != 384:
            raise ValueError(f"model returned logits of shape {tuple(logits.shape)}; expected (..., 384)")
        probs = torch.sigmoid(logits[..., PIANO].float()).cpu().numpy()
        batch_np = _to_numpy(batch)
        mask = batch_np["mask"].astype(bool)
        probs = np.where(mask[..., None], probs, 0.0)  # padded ticks are silent
        target = (batch_np["target"][..., PIANO] > 0.5) & mask[..., None]
        samples.add(batch_np, probs, n_samples)
        for name, options in binarizations.items():
            prediction = binarize(probs, name, **options)
            values = all_metrics(target, prediction, ticks_per_quarter, mask=mask)
            for metric, per_window in values.items():
                for b in range(len(per_window)):
                    records.append((int(batch_np["song"][b]), int(batch_np["start"][b]),
                                    int(mask[b].sum()), name, metric, float(per_window[b])))
    windows = pd.DataFrame(records, columns=["song", "start", "n_ticks", "binarization", "metric", "value"])
    return windows, samples


def summarize_windows(windows: pd.DataFrame) -> pd.DataFrame:
    """Mean over windows (NaN windows, too short for a unit, are skipped) per binarization × metric."""
    if windows.empty:
        return pd.DataFrame(columns=["binarization", "metric", "value", "n_windows"])
    grouped = windows.groupby(["binarization", "metric"])["value"]
    return grouped.agg(value="mean", n_windows="count").reset_index()
