"""RoPE and its three baselines RoPE(A), RoPE(B), RoPE(C) ([S] eq. 8–10, 14, 21–22, §IV-E).

One parameterised module, ``RotaryPE``, registered three times:
  * ``rope_a``: fixed f_j = 10000^(−2j/D), j = 0…D/2−1, shared by all heads;
  * ``rope_b``: fixed, different per head (decision 9.4: H·D/2 values 10000^(−k/(H·D/2)), head h
    takes k ≡ h mod H);
  * ``rope_c``: learnable per head, initialised as RoPE(B).
A frequency is a vector f_j ∈ R^P acting on vector positions, θ_j = f_j·p; fixed variants use the
scalar frequency times the all-ones vector. ``.frequencies`` has shape (H, D/2, P).

Feature transform (eq. 21–22) on adjacent pairs (x_{2j}, x_{2j+1}):
    h(x) = [x_{2j} cos θ_j − x_{2j+1} sin θ_j,  x_{2j+1} cos θ_j + x_{2j} sin θ_j]   (F = D),
so that U(q_m)·U(k_n) is eq. (14), a function of p_m − p_n only. On the CPU in float32 (the
compute dtype of float32 and bfloat16 inputs) the rotation runs in the fused C kernel
``stripes.kernels.rotary`` (θ = f·p, one sincos per token, frequency head and pair for both sides,
the frequency gradient of RoPE(C) summed over tokens inside the kernel; no (B,T,H,D/2) angle,
cos or sin tensor). Otherwise (float64, CUDA, ``STRIPES_NATIVE=0``, no C compiler) it is the
PyTorch reference ``stripes.pe.rotation.rotate_pairs`` on the angles ``PositionalEncoding.angles``:
e^{iθ} computed once per call for both sides, backward by the inverse rotation and, for RoPE(C),
the angle gradient of that module's doc. Both paths agree to float32 rounding
(tests/test_rotary_kernel.py).
"""

from __future__ import annotations

import torch
from torch import nn

from stripes.kernels import rotary as rotary_kernel

from .base import (
    JointTransformPE, PositionalEncoding, compute_dtype, expand_to_positions, geometric_frequencies,
    per_head_frequencies, register_pe,
)
from .rotation import rotate_pairs


def rope_frequencies(num_heads: int, head_dim: int, pos_dim: int, per_head: bool,
                     base: float = 10000.0) -> torch.Tensor:
    """(H, D/2, P) RoPE frequencies: shared 10000^(−2j/D) (A) or per head by decision 9.4 (B)."""
    pairs = head_dim // 2
    if per_head:
        freqs = per_head_frequencies(num_heads, pairs, base)
    else:
        freqs = geometric_frequencies(pairs, base).expand(num_heads, pairs)
    return expand_to_positions(freqs.to(torch.float32), pos_dim)


def attach_rope_frequencies(pe: PositionalEncoding, name: str, per_head: bool, learnable: bool,
                            base: float) -> None:
    """Give `pe` its (H, D/2, P) `.frequencies` (eq. 8 / decision 9.4): a Parameter when learnable."""
    if pe.head_dim % 2:
        raise ValueError(f"{name} needs an even head_dim, got {pe.head_dim}")
    freqs = rope_frequencies(pe.num_heads, pe.head_dim, pe.pos_dim, per_head, base)
    if learnable:
        pe.frequencies = nn.Parameter(freqs)
    else:
        pe.register_buffer("frequencies", freqs)


class RotaryPE(JointTransformPE):
    """RoPE feature transform U(·) (eq. 21–22); frequencies fixed or learnable, shared or per head."""

    def __init__(self, num_heads: int, head_dim: int, pos_dim: int, per_head: bool = False,
                 learnable: bool = False, base: float = 10000.0):
        super().__init__(num_heads, head_dim, pos_dim)
        attach_rope_frequencies(self, "RoPE", per_head, learnable, base)
        self.out_dim = head_dim

    def _transform(self, pos: torch.Tensor, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B,T,H,D) inputs, positions (B,T,P) → one output per input, in its dtype."""
        pos = self.check_all(pos, *xs)
        freqs = self.frequencies
        if not freqs.requires_grad and torch.equal(freqs, freqs[:1].expand_as(freqs)):
            freqs = freqs[:1]  # RoPE(A): one set of angles (B,T,1,D/2) for all heads
        cast = [x.to(compute_dtype(x)) for x in xs]
        if len(cast) <= 2 and rotary_kernel.usable(freqs, pos, *cast):
            outs = _native_transform(pos, freqs, *cast)
        else:
            outs = rotate_pairs(self.angles(pos, freqs), *cast)
        return tuple(o.to(x.dtype) for o, x in zip(outs, xs))


def _native_transform(pos: torch.Tensor, freqs: torch.Tensor, *xs: torch.Tensor):
    """``rotary_kernel.fused_rotary`` on (B,T,H,D) inputs (1 or 2), positions (B or 1, T, P)."""
    b, t, h, d = xs[0].shape
    flat_pos = pos.expand(b, t, pos.shape[-1]).reshape(b * t, pos.shape[-1])
    flat = [x.reshape(b * t, h, d) for x in xs]
    outs = rotary_kernel.fused_rotary(flat[0], flat[1] if len(flat) > 1 else None, flat_pos, freqs)
    return tuple(o.view(b, t, h, d) for o in outs[:len(xs)])


@register_pe("rope_a")
def build_rope_a(num_heads, head_dim, pos_dim, base: float = 10000.0) -> RotaryPE:
    return RotaryPE(num_heads, head_dim, pos_dim, per_head=False, learnable=False, base=base)


@register_pe("rope_b")
def build_rope_b(num_heads, head_dim, pos_dim, base: float = 10000.0) -> RotaryPE:
    return RotaryPE(num_heads, head_dim, pos_dim, per_head=True, learnable=False, base=base)


@register_pe("rope_c")
def build_rope_c(num_heads, head_dim, pos_dim, base: float = 10000.0) -> RotaryPE:
    return RotaryPE(num_heads, head_dim, pos_dim, per_head=True, learnable=True, base=base)
