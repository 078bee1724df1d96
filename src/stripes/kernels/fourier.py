"""Pooled F-StrIPE features through the fused C kernel ``fourier.c`` (CPU, float32).

``fused_fourier_features(q, k, pos, frequencies, phases, gains)`` returns (q̃, k̃) of [F] eq. 6 and 9
(pooled as SPE's eq. 7, without the 1/√Nf) as ``stripes.pe.fstripe.pooled_fourier_features`` does for
each side, the query side with the phases, the key side without; q or k may be None (that side is
skipped). One sincos per (token, head, d, ω) serves both sides (fourier.c's header); the backward
pass recomputes it and returns the gradients of q, k, frequencies, phases and gains (positions get
none). Nothing of size T·H·D·Nf is built: memory is the inputs, outputs and O(H·D·Nf·P) scratch.
Single-threaded (whatever ``torch.get_num_threads()`` says).

``available()`` says whether the kernel can be used (``stripes.kernels.native.load``); callers
check it and fall back to PyTorch otherwise.
"""

from __future__ import annotations

import math

import torch

from . import native

_KERNEL = native.Kernel("fourier", {
    "fourier_forward": (5, 9),
    "fourier_backward": (5, 14),
})

available = _KERNEL.available
supports = native.cpu_float32
usable = _KERNEL.usable


class _FusedFourierFeatures(torch.autograd.Function):
    """(q (N,H,D) | None, k (N,H,D) | None, pos (N,P), f (H,D,Nf,P), θ (H,D,Nf), λ (H,D,Nf)) → (q̃, k̃)."""

    @staticmethod
    def forward(ctx, q, k, pos, frequencies, phases, gains):
        x = q if q is not None else k
        n, h, d = x.shape
        nf, p = frequencies.shape[2], frequencies.shape[3]
        # kernel layouts: (H, P, Nf, D) angular frequencies, (H, Nf, D) per-(d, ω) constants
        freq = (2 * math.pi * frequencies).permute(0, 3, 2, 1).contiguous()
        g = gains.transpose(1, 2).contiguous()
        ct, st = torch.cos(phases).transpose(1, 2), torch.sin(phases).transpose(1, 2)
        gc, gs = (g * ct).contiguous(), (g * st).contiguous()
        qt = x.new_empty(n, h, 2 * nf) if q is not None else None
        kt = x.new_empty(n, h, 2 * nf) if k is not None else None
        _KERNEL.call("fourier_forward", n, h, d, nf, p, pos, freq, g, gc, gs, q, k, qt, kt)
        ctx.save_for_backward(q, k, pos, freq, g, ct.contiguous(), st.contiguous())
        ctx.has = (q is not None, k is not None)
        return qt, kt

    @staticmethod
    def backward(ctx, grad_qt, grad_kt):
        q, k, pos, freq, g, ct, st = ctx.saved_tensors
        has_q, has_k = ctx.has
        x = q if has_q else k
        n, h, d = x.shape
        p, nf = freq.shape[1], freq.shape[2]

        def upstream(grad, present):
            if not present:
                return None
            return x.new_zeros(n, h, 2 * nf) if grad is None else grad.contiguous()

        gq, gk = upstream(grad_qt, has_q), upstream(grad_kt, has_k)
        dq = torch.empty_like(q) if has_q else None
        dk = torch.empty_like(k) if has_k else None
        wide = dict(dtype=torch.float64, device=x.device)
        dfreq, dphase, dgain = torch.empty(h, p, nf, d, **wide), torch.empty(h, nf, d, **wide), \
            torch.empty(h, nf, d, **wide)
        _KERNEL.call("fourier_backward", n, h, d, nf, p, pos, freq, g, ct, st, q, k, gq, gk, dq, dk,
                     dfreq, dphase, dgain)
        need = ctx.needs_input_grad
        dfreq = (2 * math.pi * dfreq).permute(0, 3, 2, 1).to(x.dtype) if need[3] else None
        dphase = dphase.transpose(1, 2).to(x.dtype) if need[4] and has_q else None
        dgain = dgain.transpose(1, 2).to(x.dtype) if need[5] else None
        return (dq if need[0] else None, dk if need[1] else None, None, dfreq, dphase, dgain)


def fused_fourier_features(q: torch.Tensor | None, k: torch.Tensor | None, pos: torch.Tensor,
                           frequencies: torch.Tensor, phases: torch.Tensor, gains: torch.Tensor):
    """(q̃, k̃) = pooled F-StrIPE features of q (with ``phases``) and k (phase 0), fused.

    Args:
        q, k: (N, H, D) float32 CPU queries / keys (N = B·T tokens), either may be None.
        pos: (N, P) float32 positions (label units; no gradient).
        frequencies: (H, D, Nf, P) cycles per label unit; phases (H, D, Nf) radians; gains (H, D, Nf).

    Returns:
        (q̃, k̃), each (N, H, 2Nf) float32 (slot 2ω the cosine, 2ω+1 the sine) or None where the
        input was None.

    Raises:
        RuntimeError: if the kernel is unavailable (check ``available()`` first);
        ValueError: on inputs the kernel does not take (not CPU float32, mismatched shapes);
        MemoryError: if the kernel's scratch allocation fails.
    """
    if not available():
        raise RuntimeError("stripes/kernels/fourier.py: the native kernel is unavailable "
                           "(STRIPES_NATIVE=0 or no working C compiler)")
    if q is None and k is None:
        raise ValueError("stripes/kernels/fourier.py: q and k are both None")
    x = q if q is not None else k
    if not supports(q, k, pos, frequencies, phases, gains):
        raise ValueError("stripes/kernels/fourier.py: the kernel takes float32 CPU tensors only")
    n, h, d = x.shape
    if (q is not None and k is not None and q.shape != k.shape) or frequencies.dim() != 4 \
            or frequencies.shape[:2] != (h, d) or pos.shape != (n, frequencies.shape[3]) \
            or phases.shape != frequencies.shape[:3] or gains.shape != frequencies.shape[:3]:
        raise ValueError(f"stripes/kernels/fourier.py: q/k {tuple(x.shape)}, pos {tuple(pos.shape)}, "
                         f"frequencies {tuple(frequencies.shape)}, phases {tuple(phases.shape)}, "
                         f"gains {tuple(gains.shape)} do not fit (N,H,D), (N,P), (H,D,Nf,P), (H,D,Nf)")
    q = q.contiguous() if q is not None else None
    k = k.contiguous() if k is not None else None
    return _FusedFourierFeatures.apply(q, k, pos.contiguous(), frequencies, phases, gains)
