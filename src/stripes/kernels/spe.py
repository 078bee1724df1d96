"""sineSPE's elementwise work through the fused C kernel ``spe.c`` (CPU, float32), chunk by chunk.

``chunk_forward`` writes the codes [x cos a | x sin a | x] of one chunk of tokens for one or two
sides into the caller's (H, C, W) bmm input buffers; ``chunk_backward`` turns the caller's
dcodes = g z'ᵀ into dx and adds the side's token sums (float64) for the gradients of the
frequencies, gains, gate and phases (spe.c's header gives the formulas and layouts). One sincos per
(head, token, k, d) serves both sides, in the forward and again (recomputed) in the backward.
``forward_chunks`` / ``backward_chunks`` run a whole pass (every chunk, and the products with the
noise rows through the ``sgemm_`` that PyTorch's own torch.bmm uses, ``native.blas_sgemm``) in one call;
where that symbol is missing the caller loops over the chunks with torch.bmm.
``stripes.pe.spe_native`` is the autograd Function. The elementwise work is single-threaded
(whatever ``torch.get_num_threads()`` says); the sgemm calls use MKL's thread setting, as torch.bmm.

``available()`` says whether the kernel can be used (``stripes.kernels.native.load``); callers
check it and ``supports`` and fall back to PyTorch otherwise.
"""

from __future__ import annotations

import torch

from . import native

_KERNEL = native.Kernel("spe", {
    "spe_forward": (6, 6),
    "spe_backward": (5, 12),
    "spe_forward_chunks": (8, 11),
    "spe_backward_chunks": (7, 17),
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


def forward_chunks(pos, omega, k: int, gated: bool, xs, rows, outs, codes, chunk: int, sgemm: int) -> None:
    """The whole forward pass in one call (spe.c ``spe_forward_chunks``): per chunk of ``chunk``
    tokens, ``chunk_forward``'s codes and their products with the noise rows (one sgemm per head
    and side, written into the outputs).

    Args:
        pos: (N, P), omega: (H, P, K·D), contiguous float32; k, gated: as ``chunk_forward``.
        xs: 1 or 2 contiguous (N, H, D) inputs; rows: as many contiguous (H, W, R) scaled (and,
            for queries, rotated) noise rows.
        outs: as many contiguous (N, H, R) outputs, overwritten.
        codes: as many contiguous (H, min(chunk, N), W) scratch buffers.
        chunk: tokens per chunk (≥ 1); sgemm: ``native.blas_sgemm()`` (not None).
    Raises:
        MemoryError: the kernel's scratch allocation failed.
    """
    n, h, d = xs[0].shape
    sides = [(x, rows_, out, buf) for x, rows_, out, buf in zip(xs, rows, outs, codes)]
    sides += [(None, None, None, None)] * (2 - len(sides))
    (xq, zq, oq, cq), (xk, zk, ok, ck) = sides
    _KERNEL.call("spe_forward_chunks", n, chunk, h, k, d, pos.shape[1], rows[0].shape[2], int(gated),
                 pos, omega, xq, xk, zq, zk, oq, ok, cq, ck, sgemm)


def backward_chunks(pos, omega, s, t, sides, chunk: int, sgemm: int) -> None:
    """The whole backward pass in one call (spe.c ``spe_backward_chunks``): per chunk, dcodes = g z'ᵀ
    by one sgemm per head and side, then ``chunk_backward``'s dx and token sums.

    Args:
        pos, omega, s, t: as ``chunk_backward``.
        sides: 1 or 2 tuples (g (N, H, R) contiguous upstream gradient or None to skip the side,
            z' (H, W, R) contiguous rotated, unscaled noise rows, x (N, H, D) contiguous,
            dx (N, H, D) or None (no gradient of x), sums (H, P + 1, W) float64 added into,
            dcodes (H, min(chunk, N), W) scratch).
        chunk: tokens per chunk (≥ 1); sgemm: ``native.blas_sgemm()`` (not None).
    Raises:
        MemoryError: the kernel's scratch allocation failed.
    """
    n, h, d = sides[0][2].shape
    flat = []
    for side in list(sides) + [(None,) * 6] * (2 - len(sides)):
        flat += list(side)
    _KERNEL.call("spe_backward_chunks", n, chunk, h, s.shape[1], d, pos.shape[1], sides[0][1].shape[2],
                 pos, omega, s, t, *flat, sgemm)
