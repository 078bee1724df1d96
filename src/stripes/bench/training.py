"""Training throughput: tokens per second of one optimisation step (forward + backward + Adam).

Shapes: the paper's (spec §5: T = 1024 ticks = 16 bars at 16 ticks per quarter, batch 8,
d_model 512, 4 heads) and the cpu profile's (conf/profile/cpu.yaml). PEs: NoPE, RoPE(C),
F-StrIPE1, RoPEPool; attention: linear (the paper's) and softmax (reference). The model is built
through the composed Hydra config (conf/train.yaml), so the benchmark measures what training runs.
Inputs are random binary rolls with TIME positions. tokens/s = batch · T / median step time.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir

from stripes.lit import masked_bce_with_logits
from stripes.machine import machine_description
from stripes.nn.transformer import HarmonizationTransformer

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"
PES = ("nope", "rope_c", "fstripe1", "ropepool")
ATTENTIONS = ("linear", "softmax")
#: shape name -> (profile, sequence length in ticks or None = the profile's 16-bar window)
SHAPES = {"paper": ("paper", 1024), "cpu": ("cpu", None)}


def _config(profile: str, pe: str, attention: str, *extra: str):
    """The composed training config of one benchmark row (``extra``: more Hydra overrides)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "train",
            overrides=[f"profile={profile}", f"pe={pe}", "context=time", f"model.attention={attention}",
                       "trainer=cpu", *extra],
        )


def make_training_step(cfg, batch_size: int, length: int, device: str, amp: torch.dtype | None = None):
    """A closure running one optimisation step (forward, loss, backward, clip, Adam) of the model of
    ``cfg`` on random binary rolls with TIME positions, synchronised on CUDA so that wall-clock
    timing is right. ``amp``: the autocast dtype of forward and loss (bf16 = ``bf16-mixed``, as
    ``trainer=gpu`` trains)."""
    torch.manual_seed(0)
    model = HarmonizationTransformer.from_config(cfg).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=float(cfg.optim.lr))
    inputs = (torch.rand(batch_size, length, int(cfg.model.input_dim), device=device) < 0.05).float()
    target = (torch.rand(batch_size, length, int(cfg.model.output_dim), device=device) < 0.05).float()
    positions = torch.arange(length, device=device, dtype=torch.float32).view(1, length, 1).expand(batch_size, -1, -1)
    mask = torch.ones(batch_size, length, dtype=torch.bool, device=device)
    clip = float(cfg.trainer.gradient_clip_val)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=amp, enabled=amp is not None):
            loss = masked_bce_with_logits(model(inputs, positions), target, mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return step


def time_training_step(cfg, batch_size: int, length: int, steps: int, device: str,
                       amp: torch.dtype | None = None) -> float:
    """Median seconds of one optimisation step (``make_training_step``) after one warm-up step."""
    step = make_training_step(cfg, batch_size, length, device, amp)
    step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(out_dir: str | Path = "outputs/bench", steps: int = 3, shapes=tuple(SHAPES), pes=PES,
        attentions=ATTENTIONS, device: str | None = None) -> pd.DataFrame:
    """Benchmark every shape × PE × attention; write training.csv and training.md to `out_dir`."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    machine = machine_description()
    rows = []
    for shape in shapes:
        profile, length = SHAPES[shape]
        for pe in pes:
            for attention in attentions:
                cfg = _config(profile, pe, attention)
                tpq = int(cfg.data.ticks_per_quarter)
                window = length or 16 * int(cfg.data.beats_per_bar) * tpq
                batch = int(cfg.data.batch_size)
                seconds = time_training_step(cfg, batch, window, steps, device)
                rows.append({
                    "shape": shape, "pe": pe, "label": str(cfg.pe.label), "attention": attention,
                    "batch": batch, "T": window, "d_model": int(cfg.model.d_model),
                    "heads": int(cfg.model.num_heads), "step_s": seconds,
                    "tokens_per_s": batch * window / seconds, "device": device, "machine": machine,
                })
                print(f"[bench.training] {shape:5s} {pe:9s} {attention:7s} B={batch} T={window}: "
                      f"{seconds * 1e3:8.1f} ms/step, {batch * window / seconds:10.0f} tokens/s", flush=True)
    table = pd.DataFrame(rows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "training.csv", index=False)
    (out / "training.md").write_text(to_markdown(table, machine, steps))
    return table


def to_markdown(table: pd.DataFrame, machine: str, steps: int) -> str:
    lines = [
        "# Training throughput (one optimisation step: forward + backward + clip + Adam)",
        "",
        f"Machine: {machine}. Median of {steps} steps after one warm-up step; random binary inputs,",
        "TIME positions. tokens/s = batch × T / step time.",
        "",
        "| shape | B | T | d_model | PE | attention | ms/step | tokens/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        lines.append(f"| {r.shape} | {r.batch} | {r.T} | {r.d_model} | {r.label} | {r.attention} | "
                     f"{r.step_s * 1e3:.1f} | {r.tokens_per_s:,.0f} |")
    return "\n".join(lines) + "\n"
