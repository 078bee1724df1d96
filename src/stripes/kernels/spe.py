"""sineSPE's elementwise work through the fused C kernel ``spe.c`` (CPU, float32), chunk by chunk.

``chunk_forward`` writes the codes [x cos a | x sin a | x] of one chunk of tokens for one or two
sides into the caller's (H, C, W) bmm input buffers; ``chunk_backward`` turns the caller's
dcodes = g z'ᵀ into dx and adds the side's token sums (float64) for the gradients of the
frequencies, gains, gate and phases (spe.c's header gives the formulas and layouts). One sincos per
(head, token, k, d) serves both sides, in the forward and again (recomputed) in the backward.
The matrix products stay with the caller (torch.bmm); ``stripes.pe.spe_native`` is the autograd
Function. Single-threaded (whatever ``torch.get_num_threads()`` says).

``available()`` says whether the kernel can be used (``stripes.kernels.native.load``); callers
check it and ``supports`` and fall back to PyTorch otherwise.
"""

from __future__ import annotations

import torch

from . import native

_KERNEL = native.Kernel("spe", {
    "spe_forward": (6, 6),
    "spe_backward": (5, 12),
})

available = _KERNEL.available
supports = native.cpu_float32
usable = _KERNEL.usable


def chunk_forward(pos: torch.Tensor, omega: torch.Tensor, k: int, gated: bool, xs, codes) -> None:
    """Codes of one chunk for 1 or 2 sides, written in place.

    Args:
        pos: (C, P) contiguous float32 positions of the chunk's tokens.
        omega: (H, P, K·D) contiguous angular frequencies (radians per unit).
        k: number of sines K; gated: whether the codes carry the gate slot [.. | x].
        xs: 1 or 2 tensors (C, H, D), each a contiguous slice of an (N, H, D) tensor.
        codes: as many (H, C, W) contiguous buffers, W = (2K + gated)·D, overwritten.
    Raises:
        MemoryError: the kernel's scratch allocation failed.
    """
    c, h, d = xs[0].shape
    two = len(xs) == 2
    _KERNEL.call("spe_forward", c, h, k, d, pos.shape[1], int(gated), pos, omega, xs[0],
                 xs[1] if two else None, codes[0], codes[1] if two else None)


def chunk_backward(pos: torch.Tensor, omega: torch.Tensor, s: torch.Tensor, t: torch.Tensor | None,
                   sides) -> None:
    """dx and token sums of one chunk for 1 or 2 sides, in place (spe.c's header).

    Args:
        pos: (C, P), omega: (H, P, K·D), s: (H, K, D), t: (H, D) or None (ungated); contiguous float32.
        sides: 1 or 2 tuples (dcodes (H, C, W) contiguous or None to skip the side, x (C, H, D)
            contiguous slice, dx (C, H, D) contiguous slice or None, sums (H, P + 1, W) float64,
            added into).
    Raises:
        MemoryError: the kernel's scratch allocation failed.
    """
    c, h, d = sides[0][1].shape
    k = s.shape[1]
    flat = []
    for dc, x, dx, sums in list(sides) + [(None, None, None, None)] * (2 - len(sides)):
        flat += [dc, x, dx, sums] if dc is not None else [None] * 4
    _KERNEL.call("spe_backward", c, h, k, d, pos.shape[1], pos, omega, s, t, *flat)
