"""F-StrIPE ([F] §III eq. 6 and 9; [S] §III-A eq. 11–12): random Fourier features on structure labels.

Per head and dimension d: Nf learnable frequency vectors f_d[ω] ∈ R^P, phases θ_d[ω] and gains λ_d[ω].
    Ω(p)_{2ω} = cos(2π f_d[ω]·p + θ_d[ω]),  Ω(p)_{2ω+1} = sin(2π f_d[ω]·p + θ_d[ω])      ([F] eq. 6)
    P_d(p) = Ω(p) diag(λ̈_d) / √Nf                                                      ([F] eq. 9)
    q̃ = Σ_d q_d P_d^Q(p) ∈ R^{2Nf}  (pooled, as SPE's eq. 7)
Only the phase difference Θ = θ^Q − θ^K matters (eq. 11), so the phases sit on the query side
(``forward_qk``); ``forward`` is the key-side transform (θ^K = 0). The same-dimension part of
q̃_m·k̃_n is (1/Nf) Σ_d q_md k_nd Σ_ω λ_dω² cos(2π f_dω·(p_m − p_n) + θ_dω), eq. (11).
Choices (the papers do not state them): Nf = 8 by default; f ~ N(0, init_scale²) per component
(cycles per label unit, init_scale 0.05), θ = 0, λ = 1 at initialisation; all three learnable.
``.frequencies`` has shape (H, D, Nf, P).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import PositionalEncoding, compute_dtype, register_pe


class FStripe(PositionalEncoding):
    def __init__(self, num_heads: int, head_dim: int, pos_dim: int, num_frequencies: int = 8,
                 init_scale: float = 0.05):
        super().__init__(num_heads, head_dim, pos_dim)
        shape = (num_heads, head_dim, num_frequencies)
        self.num_frequencies = num_frequencies
        self.frequencies = nn.Parameter(init_scale * torch.randn(*shape, pos_dim))
        self.phases = nn.Parameter(torch.zeros(shape))
        self.gains = nn.Parameter(torch.ones(shape))
        self.out_dim = 2 * num_frequencies

    def transform(self, x: torch.Tensor, pos: torch.Tensor, query: bool) -> torch.Tensor:
        pos = self.check(x, pos)
        acc = compute_dtype(x)
        angle = 2 * math.pi * self.angles(pos, self.frequencies)  # (B,T,H,D,Nf)
        if query:
            angle = angle + self.phases.to(acc)
        weighted = x.to(acc).unsqueeze(-1) * self.gains.to(acc)  # (B,T,H,D,Nf)
        cos_part = (weighted * torch.cos(angle)).sum(dim=3)
        sin_part = (weighted * torch.sin(angle)).sum(dim=3)
        out = torch.stack([cos_part, sin_part], dim=-1).flatten(-2) / math.sqrt(self.num_frequencies)
        return out.to(x.dtype)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Key-side transform (no phase)."""
        return self.transform(x, pos, query=False)

    def forward_qk(self, q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor):
        return self.transform(q, pos, query=True), self.transform(k, pos, query=False)


@register_pe("fstripe")
def build_fstripe(num_heads, head_dim, pos_dim, num_frequencies: int = 8,
                  init_scale: float = 0.05) -> FStripe:
    return FStripe(num_heads, head_dim, pos_dim, num_frequencies=num_frequencies,
                   init_scale=init_scale)
