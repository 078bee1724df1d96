"""GPU check: ``outputs/gpu_check/REPORT.md`` from the sections' tables (pure formatting)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

TARGETS = {
    "train_ratio_1024": 0.9,   # linear (fused) tokens/s ≥ 0.9× softmax at T = 1024
    "fwd_4096": 1.5,           # forward at T = 4096 ≥ 1.5× SDPA
    "fwd_16384": 4.0,          # forward at T = 16384 ≥ 4× SDPA
    "grid_hours": 8.0,         # 480 runs on one H200
}


@dataclass
class CheckResults:
    """Everything the report shows; a missing table means the section did not run (see ``stages``)."""

    machine: str = ""
    stages: list[dict] = field(default_factory=list)   # name, status, seconds, note
    compile: pd.DataFrame | None = None                 # fla's first-use compile + autotune per key
    correctness: pd.DataFrame | None = None
    long_sequence: pd.DataFrame | None = None
    attention: pd.DataFrame | None = None
    training: pd.DataFrame | None = None
    concurrency: pd.DataFrame | None = None
    spot_runs: pd.DataFrame | None = None
    spot: pd.DataFrame | None = None
    spot_note: str = ""
    projection: pd.DataFrame | None = None
    projection_note: str = ""


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if abs(value) >= 1e-2 or value == 0 else f"{value:.2e}"
    return str(value)


def table(frame: pd.DataFrame, columns: dict[str, str], digits: dict[str, int] | None = None) -> list[str]:
    """Markdown table of ``frame``'s ``columns`` ({column: header})."""
    digits = digits or {}
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    for row in frame.to_dict("records"):
        lines.append("| " + " | ".join(_fmt(row.get(c), digits.get(c, 2)) for c in columns) + " |")
    return lines


def _met(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**MISSED**")


def _missing(results: CheckResults, name: str) -> list[str]:
    stage = next((s for s in results.stages if s["name"] == name), None)
    if stage is None:
        return ["Not run.", ""]
    return [f"Not available: {stage['status']}. {stage.get('note', '')}".strip(), ""]


def target_lines(results: CheckResults) -> list[str]:
    lines = []
    if results.training is not None and len(results.training):
        fused = results.training[results.training.impl == "fla"]
        if len(fused):
            worst = fused.ratio_vs_softmax.min()
            lines.append(f"- training at T = 1024, linear (fused) ≥ 0.9× SDPA tokens/s: smallest ratio "
                         f"{worst:.2f}× → {_met(worst >= TARGETS['train_ratio_1024'])}")
    if results.attention is not None and len(results.attention):
        fwd = results.attention[(results.attention["mode"] == "fwd") & (results.attention.impl == "fla")]
        for t, key in ((4096, "fwd_4096"), (16384, "fwd_16384")):
            rows = fwd[fwd["T"] == t]
            if len(rows):
                worst = rows.speedup_vs_sdpa.min()
                lines.append(f"- forward at T = {t} ≥ {TARGETS[key]}× SDPA: smallest {worst:.2f}× → "
                             f"{_met(worst >= TARGETS[key])}")
        both = results.attention[(results.attention.impl == "fla") & (results.attention["mode"] == "fwd+bwd")]
        if both["T"].nunique() >= 2:
            lo, hi = both["T"].min(), both["T"].max()
            growth = (both[both["T"] == hi].peak_mib.to_numpy() / both[both["T"] == lo].peak_mib.to_numpy()).max()
            lines.append(f"- attention memory linear in T: fused fwd+bwd peak grows ≤ {growth:.1f}× from "
                         f"T = {lo} to {hi} ({hi / lo:.0f}× longer) → {_met(growth <= 1.25 * hi / lo)}")
    if results.projection is not None and len(results.projection):
        one = results.projection[results.projection.gpus == 1]
        if len(one):
            best = one.total_hours.min()
            lines.append(f"- full paper grid on one H200 ≤ 8 h: projected {best:.1f} h → "
                         f"{_met(best <= TARGETS['grid_hours'])}")
    if results.spot is not None and len(results.spot):
        cs = results.spot[results.spot.metric == "CS"]
        ok = cs.within_2sd.dropna()
        lines.append(f"- spot check CS within 2 sd of the paper: {int(ok.sum())} of {len(ok)} "
                     f"(method × setting) → {_met(bool(ok.all()) if len(ok) else None)}")
    return lines or ["- no section produced figures"]


def render(results: CheckResults) -> str:
    r = results
    lines = ["# GPU check (`make gpu-check`)", "", f"Machine: {r.machine}", "",
             "Stages (wall seconds):", ""]
    lines += table(pd.DataFrame(r.stages), {"name": "stage", "status": "status", "seconds": "s", "note": "note"},
                   {"seconds": 1})
    if r.compile is not None:
        lines += ["", "fla's first use (Triton compile + autotune, forward + backward, one process per key, "
                  "all at once; later processes read Triton's disk cache): " + ", ".join(
                      f"F={row['F']} {row['dtype']} {row['seconds']:.0f} s" for row in r.compile.to_dict("records"))]
    lines += ["", "## Targets", ""] + target_lines(r)

    lines += ["", "## 1. CUDA attention against a float64 reference", "",
              "max |ours − ref| / max |ref| of the output and of dq, dk, dv (B = 2, T = 1000, H = 4); "
              "bf16 = kernel in bfloat16 under autocast, φ and normaliser float32.", ""]
    if r.correctness is not None:
        lines += table(r.correctness, {"impl": "impl", "dtype": "dtype", "F": "F", "Dv": "Dv", "pes": "PEs",
                                       "forward": "fwd", "dq": "dq", "dk": "dk", "dv": "dv",
                                       "tolerance": "tol", "ok": "ok"})
        if r.long_sequence is not None:
            lines += ["", "T = 16384, one RoPEPool attention layer (d_model 512) under bf16 autocast, "
                      "forward + backward: " + ", ".join(
                          f"{row['impl']} {'finite' if row['finite'] else '**NaN/Inf**'}"
                          for row in r.long_sequence.to_dict("records"))]
    else:
        lines += _missing(r, "1 correctness")

    lines += ["", "## 2. Attention block: SDPA (flash) vs linear attention", "",
              "B = 1, H = 4, D = 128, TIME positions; bf16 autocast (SDPA → flash; linear: PE in bf16, "
              "φ and sums float32, fused numerator in bf16). Best of ≥ 5 synchronised calls; memory = "
              "peak CUDA allocation during one call above the inputs.", ""]
    if r.attention is not None:
        lines += table(r.attention, {"T": "T", "mode": "mode", "label": "method", "impl": "impl", "F": "F",
                                     "time_ms": "ms", "peak_mib": "MiB", "speedup_vs_sdpa": "× SDPA"},
                       {"time_ms": 3, "peak_mib": 1})
    else:
        lines += _missing(r, "2 attention")

    lines += ["", "## 3. Training throughput at the paper shape (B = 8, T = 1024, d_model 512, bf16)", ""]
    if r.training is not None:
        lines += table(r.training, {"label": "PE", "attention": "attention", "impl": "impl", "step_ms": "ms/step",
                                    "tokens_per_s": "tokens/s", "ratio_vs_softmax": "× softmax",
                                    "peak_gib": "peak GiB"},
                       {"step_ms": 1, "tokens_per_s": 0})
    else:
        lines += _missing(r, "3 training")
    lines += ["", "K processes training side by side on the one GPU (RoPEPool, linear, fused):", ""]
    if r.concurrency is not None:
        lines += table(r.concurrency, {"K": "K", "aggregate_tokens_per_s": "aggregate tokens/s",
                                       "per_run_tokens_per_s": "per run", "speedup_vs_k1": "× K=1"},
                       {"aggregate_tokens_per_s": 0, "per_run_tokens_per_s": 0})
    else:
        lines += _missing(r, "3 K per GPU")

    lines += ["", "## 4. Paper-scale spot check: BIN, seed 0, lr 5e-4, `paper` profile", ""]
    if r.spot_note:
        lines += [r.spot_note, ""]
    if r.spot_runs is not None and len(r.spot_runs):
        lines += table(r.spot_runs, {"run": "run", "status": "status", "epochs": "epochs", "global_step": "steps",
                                     "wall_s": "wall s", "s_per_epoch": "s / epoch"}, {"wall_s": 0, "s_per_epoch": 1})
        lines.append("")
    if r.spot is not None and len(r.spot):
        lines += table(r.spot, {"method": "method", "setting": "setting", "metric": "metric", "ours": "ours",
                                "paper_mean": "paper", "paper_std": "paper sd", "gap_in_sd": "|gap| / sd",
                                "within_2sd": "within 2 sd", "source": "paper table"})
    elif r.spot_runs is None:
        lines += _missing(r, "4 spot check")

    lines += ["", "## 5. Projected wall time of the full paper grid (480 runs + evaluation)", ""]
    if r.projection_note:
        lines += [r.projection_note, ""]
    if r.projection is not None:
        lines += table(r.projection, {"gpus": "GPUs", "K": "K per GPU", "runs_per_hour_per_gpu": "runs / h / GPU",
                                      "batches_per_gpu": "batches per GPU",
                                      "train_hours": "training h", "eval_hours": "evaluation h",
                                      "total_hours": "total h"})
    else:
        lines += _missing(r, "5 projection")
    return "\n".join(lines) + "\n"
