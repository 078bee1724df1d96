"""F-StrIPE1 ([S] §III-C, eq. 15–20): one learnable frequency (vector) per dimension, phase 0.

Per dimension d with θ_d = f_d·p: h(x_d) = [x_d cos θ_d, x_d sin θ_d] (eq. 20).
  * unpooled U(x) = h(x_1) ⊕ … ⊕ h(x_D) ∈ R^{2D} (eq. 17): U(q_m)·U(k_n) = Σ_d q_md k_nd cos Δ⁻_d,
    exactly eq. (15);
  * pooled C(x) = h(x_1) + … + h(x_D) ∈ R^2 (eq. 19), the paper's choice (decision 9.5, default).
Frequencies: per head, learnable, initialised by decision 9.4 applied to dimensions (H·D values
10000^(−k/(H·D)), head h takes k ≡ h mod H, so all dimensions start distinct); ``.frequencies`` has
shape (H, D, P). Both sides share one evaluation of cos θ and sin θ per call (``forward_qk``); the
pooled form is ``stripes.pe.rotation.pool_dimensions`` (hand-written backward, no (B,T,H,D)
products kept by autograd).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import (
    JointTransformPE, compute_dtype, expand_to_positions, per_head_frequencies, register_pe,
)
from .rotation import pool_dimensions


class FStripe1(JointTransformPE):
    def __init__(self, num_heads: int, head_dim: int, pos_dim: int, pooled: bool = True,
                 learnable: bool = True, base: float = 10000.0):
        super().__init__(num_heads, head_dim, pos_dim)
        freqs = expand_to_positions(per_head_frequencies(num_heads, head_dim, base).float(), pos_dim)
        if learnable:
            self.frequencies = nn.Parameter(freqs)
        else:
            self.register_buffer("frequencies", freqs)
        self.pooled = pooled
        self.out_dim = 2 if pooled else 2 * head_dim

    def _transform(self, pos: torch.Tensor, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B,T,H,D) inputs, positions (B,T,P) → one output per input, in its dtype."""
        pos = self.check_all(pos, *xs)
        theta = self.angles(pos, self.frequencies)  # (B,T,H,D)
        acc = [x.to(compute_dtype(x)) for x in xs]
        if self.pooled:
            outs = pool_dimensions(theta, *acc)
        else:  # U(x): (x_d cos θ_d, x_d sin θ_d) adjacent, eq. (17)
            cos, sin = torch.cos(theta), torch.sin(theta)
            outs = [torch.stack([x * cos, x * sin], dim=-1).flatten(-2) for x in acc]
        return tuple(o.to(x.dtype) for o, x in zip(outs, xs))


@register_pe("fstripe1")
def build_fstripe1(num_heads, head_dim, pos_dim, pooled: bool = True, learnable: bool = True,
                   base: float = 10000.0) -> FStripe1:
    return FStripe1(num_heads, head_dim, pos_dim, pooled=pooled, learnable=learnable, base=base)
