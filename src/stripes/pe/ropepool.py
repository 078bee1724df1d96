"""RoPEPool ([S] §III-D, eq. 23 and 26): RoPE's pairwise rotation followed by pooling in each pair.

For pair j with θ_j = f_j·p, the two rotated coordinates of eq. (22) are summed:
    z_j = (x_{2j} cos θ_j − x_{2j+1} sin θ_j) + (x_{2j+1} cos θ_j + x_{2j} sin θ_j)
        = (x_{2j} + x_{2j+1}) cos θ_j + (x_{2j} − x_{2j+1}) sin θ_j          (F = D/2).
z(q_m)·z(k_n) is exactly eq. (23): terms in Δ⁻ = θ_m − θ_n and in Δ⁺ = θ_m + θ_n, so the score sees
p_m + p_n and is not shift invariant; for unit 2-vectors it is eq. (26). Frequencies are per head and
learnable by default (as RoPE(C), initialised as RoPE(B)); ``.frequencies`` has shape (H, D/2, P).
Computed as z_j = x_{2j} (cos θ_j + sin θ_j) + x_{2j+1} (cos θ_j − sin θ_j) by
``stripes.pe.rotation.pool_pairs`` (both sides at once, hand-written backward).
"""

from __future__ import annotations

import torch

from .base import JointTransformPE, compute_dtype, register_pe
from .rope import attach_rope_frequencies
from .rotation import pool_pairs


class RoPEPool(JointTransformPE):
    def __init__(self, num_heads: int, head_dim: int, pos_dim: int, learnable: bool = True,
                 per_head: bool = True, base: float = 10000.0):
        super().__init__(num_heads, head_dim, pos_dim)
        attach_rope_frequencies(self, "RoPEPool", per_head, learnable, base)
        self.out_dim = head_dim // 2

    def _transform(self, pos: torch.Tensor, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B,T,H,D) inputs, positions (B,T,P) → (B,T,H,D/2) pooled rotated pairs each, in its
        dtype; cos θ and sin θ computed once for all inputs."""
        theta = self.angles(self.check_all(pos, *xs), self.frequencies)
        outs = pool_pairs(theta, *(x.to(compute_dtype(x)) for x in xs))
        return tuple(o.to(x.dtype) for o, x in zip(outs, xs))


@register_pe("ropepool")
def build_ropepool(num_heads, head_dim, pos_dim, learnable: bool = True, per_head: bool = True,
                   base: float = 10000.0) -> RoPEPool:
    return RoPEPool(num_heads, head_dim, pos_dim, learnable=learnable, per_head=per_head, base=base)
