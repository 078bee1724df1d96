"""The chunked causal linear attention's elementwise passes through the C kernel ``head_chunks.c``.

``stripes.nn.attention._CausalLinearAttention`` works on contiguous per-head-group chunk batches
(G·B·N, C, X) gathered from the (B, Tp, H, X) layout of its inputs and outputs (Tp = N·C padded
steps, heads h0 … h0+G−1, ``heads`` a slice). These functions move data between the two layouts
and do the elementwise work on the way, one pass each (the PyTorch path needs two to four passes
and temporaries for the same results; it stays the reference and the fallback):

* ``gather_heads``: the group's chunks, through φ = elu + 1 if ``phi``;
* ``scatter_heads``: a group's gradient written back, plus an optional rank-one term w·vecᵀ per
  chunk, times φ's slope min(φ, 1) when φ's output is given;
* ``divide_heads``: y = num / den written into the output;
* ``output_grads``: g_num = dy / den and g_den = −Σ g_num·y (the gradients w.r.t. the numerator
  and the normaliser);
* ``exclusive_scan_``: the chunk states' exclusive prefix (or suffix) sums, in place.

All take CPU float32 contiguous tensors; ``usable(...)`` says whether the kernel can run on given
tensors (``stripes.kernels.native``); single-threaded.
"""

from __future__ import annotations

import torch

from . import native

_KERNEL = native.Kernel("head_chunks", {
    "gather_heads": (7, 2),
    "scatter_heads": (7, 5),
    "divide_heads": (6, 3),
    "output_grads": (6, 5),
    "exclusive_scan_inplace": (4, 2),
})

usable = _KERNEL.usable


def _sizes(full: torch.Tensor, heads: slice) -> tuple[int, int, int, int, int, int]:
    b, tp, h, x = full.shape
    return b, tp, h, x, heads.start, heads.stop - heads.start


def gather_heads(full: torch.Tensor, heads: slice, chunk: int, phi: bool) -> torch.Tensor:
    """Heads ``heads`` of ``full`` (B, Tp, H, X) as a new (G·B·N, C, X) tensor (N = Tp / C), mapped
    through φ = elu + 1 if ``phi`` (max(x, 0) + exp(min(x, 0)), float32 exp within 2 ulp)."""
    b, tp, h, x, h0, g = _sizes(full, heads)
    group = full.new_empty(g * b * tp // chunk, chunk, x)
    _KERNEL.call("gather_heads", b, tp, h, x, h0, g, int(phi), full, group)
    return group


def scatter_heads(group: torch.Tensor, full: torch.Tensor, heads: slice,
                  weight: torch.Tensor | None = None, vec: torch.Tensor | None = None,
                  phi_out: torch.Tensor | None = None) -> None:
    """full[:, :, heads] = (group + weight ⊗ vec) ⊙ min(phi_out, 1), in place.

    group, phi_out: (G·B·N, C, X); weight: (G·B·N, C, 1) per-row factors (None: 1); vec:
    (G·B·N, 1, X) or (G·B·N, X) per-chunk vectors (None: nothing added); phi_out None: no slope.
    """
    b, tp, h, x, h0, g = _sizes(full, heads)
    _KERNEL.call("scatter_heads", b, tp, h, x, h0, g, group.shape[1], group, weight, vec, phi_out, full)


def divide_heads(num: torch.Tensor, den: torch.Tensor, full: torch.Tensor, heads: slice) -> None:
    """full[:, :, heads] = num / den in place; num (G·B·N, C, X), den (G·B·N, C, 1)."""
    _KERNEL.call("divide_heads", *_sizes(full, heads), num, den, full)


def output_grads(grad: torch.Tensor, out: torch.Tensor, den: torch.Tensor, heads: slice):
    """(g_num (G·B·N, C, X), g_den (G·B·N, C, 1)) from grad and out (B, Tp, H, X), den like g_den:
    g_num = grad / den and g_den = −Σ_x g_num·out for heads ``heads``."""
    g_num, g_den = torch.empty(den.shape[:2] + grad.shape[-1:]), torch.empty_like(den)
    _KERNEL.call("output_grads", *_sizes(grad, heads), grad, out, den, g_num, g_den)
    return g_num, g_den


def exclusive_scan_(x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """In place over axis 1 of a contiguous (R, N, M) tensor: x[:, i] = Σ_{j < i} x[:, j]
    (Σ_{j > i} if ``reverse``); returns x. One pass, the running sum in cache."""
    r, n, m = x.shape
    _KERNEL.call("exclusive_scan_inplace", r, n, m, int(reverse), x, x.new_empty(m))
    return x
