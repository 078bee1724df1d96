"""GPU check, section 1: the linear attention's implementations against a float64 reference.

For every PE's feature width F at the paper shape (H = 4, D = 128: NoPE/RoPE 128, RoPEPool and
SPE 64, F-StrIPE1 pooled 2, F-StrIPE 2·Nf = 16, plus F ≠ Dv), each implementation (``fla``: the
fused kernel, ``torch``: the chunked PyTorch path) in float32 and under bf16 autocast (kernel in
bf16, φ and normaliser float32) is compared with the quadratic float64 formula
``y = tril(QKᵀ)V / (tril(QKᵀ)1 + ε)`` (spec §3), forward and backward (dq, dk, dv). The error is
max |ours − reference| / max |reference|, per tensor. Then the attention layer at T = 16384 under
bf16 autocast, forward and backward, must be free of NaN/Inf.

Runs on any device (the tests run it on the CPU with ``impls=("torch",)``).
"""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from stripes.nn.attention import MultiHeadAttention, linear_attention
from stripes.pe import build_pe, pe_names

#: Largest relative error accepted (fla's float32 kernels may use TF32 tensor cores: 2^-11).
TOLERANCE = {"float32": 5e-3, "bfloat16": 3e-2}
EPS = 1e-6


def feature_widths(num_heads: int = 4, head_dim: int = 128, pos_dim: int = 1) -> dict[int, list[str]]:
    """{F: [PE names with that width]} for the registered PEs at this shape."""
    widths: dict[int, list[str]] = {}
    for name in pe_names():
        width = build_pe(name, num_heads, head_dim, pos_dim).out_dim
        widths.setdefault(width, []).append(name)
    return dict(sorted(widths.items()))


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Causal normalised linear attention in float64 with the T×T matrix, (B,T,H,·) layout."""
    q, k, v = (x.double().transpose(1, 2) for x in (q, k, v))
    scores = (q @ k.transpose(-1, -2)).tril()
    return ((scores @ v) / (scores.sum(-1, keepdim=True) + eps)).transpose(1, 2)


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double(), want.detach()
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))


def compare(impl: str, f: int, dv: int, amp: torch.dtype | None, device: str, b: int = 2, t: int = 1000,
            h: int = 4, seed: int = 0) -> dict:
    """Errors of one implementation against ``reference``: forward and the three gradients."""
    g = torch.Generator(device=device).manual_seed(seed)
    q_raw, k_raw = (torch.randn(b, t, h, f, generator=g, device=device) for _ in range(2))
    v = torch.randn(b, t, h, dv, generator=g, device=device, requires_grad=True)
    q_raw.requires_grad_()
    k_raw.requires_grad_()
    q, k = F.elu(q_raw) + 1, F.elu(k_raw) + 1
    with torch.autocast(device, dtype=amp, enabled=amp is not None):
        v_in = v.to(amp) if amp is not None else v  # values come out of a bf16 projection
    y = linear_attention(q, k, v_in, causal=True, impl=impl, dtype=amp)
    grad = torch.randn(b, t, h, dv, generator=g, device=device)
    got = torch.autograd.grad(y, (q_raw, k_raw, v), grad.to(y.dtype))
    ref = reference(F.elu(q_raw.double()) + 1, F.elu(k_raw.double()) + 1, v)  # its own graph, float64
    want = torch.autograd.grad(ref, (q_raw, k_raw, v), grad.double())
    dtype = "bfloat16" if amp is not None else "float32"
    errors = {"forward": _relative(y, ref)}
    errors.update({name: _relative(a, w) for name, a, w in zip(("dq", "dk", "dv"), got, want)})
    worst = max(errors.values())
    return {"impl": impl, "dtype": dtype, "F": f, "Dv": dv, "T": t, **errors, "max_error": worst,
            "tolerance": TOLERANCE[dtype], "ok": bool(worst <= TOLERANCE[dtype]),
            "finite": bool(torch.isfinite(y).all())}


def long_sequence(impl: str, device: str, t: int = 16384, pe: str = "ropepool", d_model: int = 512,
                  heads: int = 4) -> dict:
    """One attention layer at T = ``t`` under bf16 autocast, forward + backward: all finite?"""
    torch.manual_seed(0)
    layer = MultiHeadAttention(d_model, heads, build_pe(pe, heads, d_model // heads, 1),
                               attention_impl=impl).to(device)
    x = torch.randn(1, t, d_model, device=device, requires_grad=True)
    pos = torch.arange(t, dtype=torch.float32, device=device).view(1, t, 1)
    with torch.autocast(device, dtype=torch.bfloat16):
        y = layer(x, pos)
    y.float().square().mean().backward()
    finite = bool(torch.isfinite(y).all() and torch.isfinite(x.grad).all())
    return {"impl": impl, "pe": pe, "T": t, "dtype": "bfloat16", "finite": finite}


def run(device: str, impls=("fla", "torch"), t: int = 1000, long_t: int = 16384) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(errors per impl × dtype × width, the long-sequence finiteness rows)."""
    widths = feature_widths()
    cases = [(f, 128) for f in widths]  # the model's Dv = 128: F ≠ Dv for F = 2, 16, 64
    rows = []
    for impl in impls:
        for amp in (None, torch.bfloat16):
            for f, dv in cases:
                row = compare(impl, f, dv, amp, device, t=t)
                row["pes"] = ", ".join(widths[f])
                rows.append(row)
                print(f"[gpu-check] correctness {impl:5s} {row['dtype']:8s} F={f:3d} Dv={dv:3d}: "
                      f"max rel error {row['max_error']:.2e} ({'ok' if row['ok'] else 'FAIL'})", flush=True)
    long_rows = [long_sequence(impl, device, t=long_t) for impl in impls]
    return pd.DataFrame(rows), pd.DataFrame(long_rows)


def kernel_keys(head_dim: int = 128) -> list[tuple[int, int, str]]:
    """(padded F, Dv, dtype) of every fused-kernel specialisation the model's PEs need."""
    from stripes.nn.fla_attention import TILE

    padded = sorted({max(TILE, -(-f // TILE) * TILE) for f in feature_widths(head_dim=head_dim)})
    return [(f, head_dim, dtype) for f in padded for dtype in ("float32", "bfloat16")]


def warm_kernel(f: int, dv: int, dtype: str, t: int = 256) -> float:
    """Compile and autotune the fused kernel for one (F, Dv, dtype), forward and backward; seconds.

    fla autotunes each kernel over up to 48 Triton configurations per (F, Dv, dtype) on first use,
    and Triton caches the compiled kernels and (``FLA_CACHE_RESULTS``) the autotuning results on
    disk, so one process per key, all at once, pays this once for every later process.
    """
    import time

    from stripes.nn.fla_attention import fused_causal_linear_attention

    started = time.perf_counter()
    amp = getattr(torch, dtype)
    q, k = (torch.rand(1, t, 4, f, device="cuda", requires_grad=True) for _ in range(2))
    v = torch.randn(1, t, 4, dv, device="cuda", requires_grad=True)
    y = fused_causal_linear_attention(q, k, v.to(amp), dtype=amp)
    y.float().sum().backward()
    torch.cuda.synchronize()
    return time.perf_counter() - started
