"""NoPE: no positional encoding, q̃ = q ([F] §IV-D)."""

from __future__ import annotations

import torch

from .base import PositionalEncoding, register_pe


class NoPE(PositionalEncoding):
    """Identity transform; positions are checked for shape and ignored. F = D."""

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        self.check(x, pos)
        return x


@register_pe("nope")
def build_nope(num_heads: int, head_dim: int, pos_dim: int) -> NoPE:
    return NoPE(num_heads, head_dim, pos_dim)
