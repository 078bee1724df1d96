"""Causal linear attention through the C kernel ``causal_attention.c`` (CPU, float32, one thread).

``causal_linear_attention(q, k, v, chunk, eps, phi)`` returns what
``stripes.nn.attention._CausalLinearAttention`` returns (same algorithm, formulas in its docstring and
in the C file's header), with the whole chunk loop of each head in C: φ(q), φ(k) of one chunk are
formed in cache, the products go to the BLAS sgemm PyTorch itself uses (``native.blas_sgemm``) with
the (B, T, H, ·) tensors read and written in place through their row strides, and the elementwise
work (triangles, normaliser, division, φ and its slope) is done on the way. Saved for the backward:
per head the chunk states S (B, N, F, Dv) and z (B, N, F) and the normaliser (B, T): memory linear
in T, each head's states a separate tensor (8 MiB at T = 8192, F = Dv = 128, under glibc's mmap
threshold).

``usable(...)`` says whether the kernel can run (CPU float32, the library builds, PyTorch exports
sgemm_); the caller keeps its PyTorch implementation otherwise.
"""

from __future__ import annotations

import torch

from . import native

_KERNEL = native.Kernel("causal_attention", {
    "causal_forward": (9, 9),
    "causal_backward": (8, 12),
})


def usable(*tensors) -> bool:
    """CPU float32 inputs, the library loads and PyTorch exports its BLAS sgemm_."""
    return _KERNEL.usable(*tensors) and native.blas_sgemm() is not None


class _NativeCausalLinearAttention(torch.autograd.Function):
    """(q, k (B,T,H,F), v (B,T,H,Dv), chunk, eps float or (B,T,H), phi) → y (B,T,H,Dv)."""

    @staticmethod
    def forward(ctx, q, k, v, chunk, eps, phi):
        b, t, h, f = q.shape
        dv = v.shape[-1]
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        c = max(1, min(chunk, t))
        n = -(-t // c)
        per_query = torch.is_tensor(eps)
        eps_t = eps.contiguous() if per_query else torch.tensor([eps], dtype=torch.float32)
        y = v.new_empty(b, t, h, dv)
        sgemm = native.blas_sgemm()
        saved = []
        for head in range(h):
            states, norms = q.new_empty(b, n, f, dv), q.new_empty(b, n, f)
            den = q.new_empty(b, t)
            _KERNEL.call("causal_forward", b, t, h, f, dv, head, c, int(phi), int(per_query), sgemm,
                         q, k, v, eps_t, y, states, norms, den)
            saved += [states, norms, den]
        ctx.save_for_backward(q, k, v, y, *saved)
        ctx.chunk, ctx.phi = c, phi
        return y

    @staticmethod
    def backward(ctx, grad):
        q, k, v, y, *saved = ctx.saved_tensors
        b, t, h, f = q.shape
        dv = v.shape[-1]
        grad = grad.contiguous()
        dq, dk, d_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        sgemm = native.blas_sgemm()
        for head in range(h):
            states, norms, den = saved[3 * head:3 * head + 3]
            _KERNEL.call("causal_backward", b, t, h, f, dv, head, ctx.chunk, int(ctx.phi), sgemm,
                         q, k, v, y, grad, states, norms, den, dq, dk, d_v)
        return dq, dk, d_v, None, None, None


def causal_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int,
                            eps: float | torch.Tensor, phi: bool) -> torch.Tensor:
    """Normalised causal linear attention by the C kernel, differentiable in q, k, v.

    Args:
        q, k: (B, T, H, F) float32 CPU features, or the raw q̃, k̃ with ``phi`` (φ = elu + 1 inside).
        v: (B, T, H, Dv) float32 CPU values.
        chunk: chunk length C ≥ 1 (T need not be a multiple).
        eps: the normaliser's ε, a float or a (B, T, H) float32 tensor (no gradient).
        phi: apply φ = elu + 1 to q and k (and its slope to their gradients).

    Returns:
        (B, T, H, Dv) float32.

    Raises:
        MemoryError: the kernel's scratch allocation failed.
    """
    return _NativeCausalLinearAttention.apply(q, k, v, chunk, eps, phi)
