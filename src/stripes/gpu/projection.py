"""GPU check, section 5: the wall time of the full paper grid, projected from measured figures.

Inputs (all measured by ``make gpu-check``):
* the spot check: ``n_side`` runs trained side by side in ``spot_wall_s`` seconds (process start,
  data loading, training, per-epoch validation, checkpoints), each having trained ``spot_tokens``
  tokens; a full run trains ``run_tokens`` (``training_tokens`` of the paper profile);
* the aggregate training throughput of K processes on one GPU (section 3b), ``aggregate[K]``;
* the evaluation wall time per run (val + 16- and 64-bar test windows).

Model: a batch of K side-by-side full runs takes
``spot_wall_s · (run_tokens / spot_tokens) · (K / n_side) · (aggregate(n_side) / aggregate(K))``:
the spot check's measured cost per token (overheads included), scaled to a full run and to K
processes by the measured throughput ratio (``aggregate`` interpolated linearly in K where K was not
measured). The grid needs ⌈runs / K⌉ such batches per GPU, plus the evaluations (run one after
another, as ``make evaluate`` does). Throughput that does not grow with K makes K > 1 no faster.
"""

from __future__ import annotations

import math

import numpy as np

from stripes.lit import curriculum_length

#: The paper grid ([S] Tables II, III and the F-StrIPE rows, spec §5): 32 (PE, context) cells × 5
#: seeds × 3 learning rates.
PAPER_GRID_RUNS = 480


def training_tokens(steps: int, batch: int, full_length: int, start_length: int, ramp_steps: int,
                    curriculum: bool = True) -> int:
    """Σ over the first ``steps`` optimisation steps of batch × (cropped) length."""
    if not curriculum:
        return steps * batch * full_length
    ramp = min(steps, ramp_steps)
    lengths = sum(curriculum_length(s, full_length, start_length, ramp_steps) for s in range(ramp))
    return batch * (lengths + (steps - ramp) * full_length)


def interpolate(aggregate: dict[int, float], k: float) -> float:
    """Aggregate throughput at K, linear between measured K (constant beyond the ends)."""
    ks = sorted(aggregate)
    return float(np.interp(k, ks, [aggregate[x] for x in ks]))


def batch_wall_s(k: int, spot_wall_s: float, spot_tokens: float, run_tokens: float, n_side: int,
                 aggregate: dict[int, float]) -> float:
    """Seconds for K full runs side by side on one GPU (module docstring)."""
    if spot_tokens <= 0 or spot_wall_s <= 0:
        raise ValueError("batch_wall_s: the spot check trained nothing; no projection")
    return (spot_wall_s * (run_tokens / spot_tokens) * (k / n_side)
            * (interpolate(aggregate, n_side) / interpolate(aggregate, k)))


def grid_hours(k: int, gpus: int, spot_wall_s: float, spot_tokens: float, run_tokens: float, n_side: int,
               aggregate: dict[int, float], eval_s_per_run: float, runs: int = PAPER_GRID_RUNS) -> dict:
    """Projected hours of ``runs`` trainings + evaluations on ``gpus`` GPUs with K runs per GPU, and
    the training runs finished per hour on one GPU at that K."""
    per_gpu = math.ceil(runs / gpus)
    batches = math.ceil(per_gpu / k)
    batch_s = batch_wall_s(k, spot_wall_s, spot_tokens, run_tokens, n_side, aggregate)
    train_s = batches * batch_s
    eval_s = per_gpu * eval_s_per_run
    return {"K": k, "gpus": gpus, "runs": runs, "batches_per_gpu": batches,
            "runs_per_hour_per_gpu": 3600 * k / batch_s,
            "train_hours": train_s / 3600, "eval_hours": eval_s / 3600,
            "total_hours": (train_s + eval_s) / 3600}


def best_k(gpus: int, ks, **figures) -> dict:
    """The K with the smallest projected total (ties: the smaller K)."""
    options = [grid_hours(k, gpus, **figures) for k in sorted(ks)]
    return min(options, key=lambda row: (round(row["total_hours"], 9), row["K"]))
