"""RoPE's rotation of q and k through the fused C kernel ``rotary.c`` (CPU, float32).

``fused_rotary(q, k, pos, frequencies)`` returns (q̃, k̃) of [S] eq. 21–22 as
``stripes.pe.rotation.rotate_pairs(θ, q, k)`` with θ = f·p (``PositionalEncoding.angles``) does;
k may be None (that side is skipped). One sincos per (token, frequency head, pair) serves both sides
(and, with one shared set of frequencies, every head); the backward pass recomputes it and returns
the gradients of q, k and (when they require one) the frequencies (positions get none). Nothing of
size T·H·D/2 is built (no θ, cos or sin tensors): memory is the inputs, outputs and O(H·D·P)
scratch. Single-threaded (whatever ``torch.get_num_threads()`` says).

``available()`` says whether the kernel can be used (``stripes.kernels.native.load``); callers
check it and ``supports`` and fall back to PyTorch otherwise.
"""

from __future__ import annotations

import torch

from . import native

_KERNEL = native.Kernel("rotary", {
    "rotary_forward": (5, 6),
    "rotary_backward": (5, 9),
})

available = _KERNEL.available
supports = native.cpu_float32
usable = _KERNEL.usable


class _FusedRotary(torch.autograd.Function):
    """(q (N,H,D), k (N,H,D) | None, pos (N,P), f (Hf,D/2,P)) → (q̃, k̃ | None)."""

    @staticmethod
    def forward(ctx, q, k, pos, frequencies):
        n, h, d = q.shape
        hf, j, p = frequencies.shape
        freq = frequencies.detach().transpose(1, 2).contiguous()  # kernel layout (Hf, P, J)
        qt = torch.empty_like(q)
        kt = torch.empty_like(k) if k is not None else None
        _KERNEL.call("rotary_forward", n, h, hf, j, p, pos, freq, q, k, qt, kt)
        # q and k are kept only for the frequency gradient (fixed frequencies: not at all)
        keep = ctx.needs_input_grad[3]
        ctx.save_for_backward(pos, freq, q if keep else None, k if keep else None)
        ctx.has_k = k is not None
        return qt, kt

    @staticmethod
    def backward(ctx, grad_qt, grad_kt):
        pos, freq, q, k = ctx.saved_tensors
        hf, p, j = freq.shape
        n, h = pos.shape[0], grad_qt.shape[1] if grad_qt is not None else grad_kt.shape[1]
        want = ctx.needs_input_grad[3]
        shape = (n, h, 2 * j)
        gq = grad_qt.contiguous() if grad_qt is not None else pos.new_zeros(shape)
        gk = None
        if ctx.has_k:
            gk = grad_kt.contiguous() if grad_kt is not None else pos.new_zeros(shape)
        dq = torch.empty_like(gq)
        dk = torch.empty_like(gk) if gk is not None else None
        dfreq = torch.empty(hf, p, j, dtype=torch.float64) if want else None
        _KERNEL.call("rotary_backward", n, h, hf, j, p, pos, freq, q, k, gq, gk, dq, dk, dfreq)
        need = ctx.needs_input_grad
        dfreq = dfreq.transpose(1, 2).to(torch.float32) if want else None
        return (dq if need[0] else None, dk if need[1] else None, None, dfreq)


def fused_rotary(q: torch.Tensor, k: torch.Tensor | None, pos: torch.Tensor,
                 frequencies: torch.Tensor):
    """(q̃, k̃) = RoPE rotations (eq. 21–22) of q and k by θ_j = f_j·p, fused.

    Args:
        q, k: (N, H, D) float32 CPU queries / keys (N = B·T tokens, D even); k may be None.
        pos: (N, P) float32 positions (label units; no gradient).
        frequencies: (Hf, D/2, P) float32 radians per label unit, Hf = 1 (shared by all heads) or
            Hf = H; may require a gradient (it is then returned, summed over tokens and, for Hf = 1,
            over heads).

    Returns:
        (q̃, k̃), each (N, H, D) float32, k̃ None where k was None.

    Raises:
        RuntimeError: if the kernel is unavailable (check ``available()`` first);
        ValueError: on inputs the kernel does not take (not CPU float32, mismatched shapes);
        MemoryError: if the kernel's scratch allocation fails.
    """
    if not available():
        raise RuntimeError("stripes/kernels/rotary.py: the native kernel is unavailable "
                           "(STRIPES_NATIVE=0 or no working C compiler)")
    if not supports(q, k, pos, frequencies):
        raise ValueError("stripes/kernels/rotary.py: the kernel takes float32 CPU tensors only")
    n, h, d = q.shape
    if (k is not None and k.shape != q.shape) or frequencies.dim() != 3 or d % 2 \
            or frequencies.shape[0] not in (1, h) or frequencies.shape[1] != d // 2 \
            or pos.shape != (n, frequencies.shape[2]):
        raise ValueError(f"stripes/kernels/rotary.py: q/k {tuple(q.shape)}, pos {tuple(pos.shape)}, "
                         f"frequencies {tuple(frequencies.shape)} do not fit (N,H,2J), (N,P), "
                         f"(1 or H,J,P)")
    k = k.contiguous() if k is not None else None
    return _FusedRotary.apply(q.contiguous(), k, pos.contiguous(), frequencies)
