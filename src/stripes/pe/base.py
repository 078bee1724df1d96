"""The positional-encoding interface and registry (spec §4; [S] §III, eq. 16–22).

Every PE is a feature transform applied to queries and keys *before* the attention feature map φ:
``forward(x: (B,T,H,D), pos: (B,T,P)) -> (B,T,H,F)`` with ``out_dim`` = F. The attention layer calls
``forward_qk(q, k, pos) -> (q̃, k̃)``; by default that applies ``forward`` to each side, and PEs that
treat the two sides differently (SPE: phases on the query side and noise shared by both sides;
F-StrIPE: query-side phases) override it. Positions are vectors (P = 1 for TIME/REP/KEY, P = 12 for
BIN); a (B,T) tensor is accepted as P = 1. Rotation- and RFF-based PEs expose their angular
frequencies as ``.frequencies`` with the position axis last.

Computation runs in float32 (float64 if the input is float64) and returns the input dtype.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_pe(name: str):
    """Decorator: register a factory ``(num_heads, head_dim, pos_dim, **options) -> module``."""

    def wrap(factory):
        if name in _REGISTRY:
            raise ValueError(f"stripes/pe/base.py: PE name {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return wrap


def pe_names() -> list[str]:
    return sorted(_REGISTRY)


def build_pe(name: str, num_heads: int, head_dim: int, pos_dim: int, **options) -> nn.Module:
    """Build the PE registered as ``name`` (conf/pe/<name>.yaml ``options`` go to ``**options``)."""
    if name not in _REGISTRY:
        raise ValueError(f"stripes/pe/base.py: unknown PE {name!r}; known: {', '.join(pe_names())}")
    try:
        return _REGISTRY[name](num_heads, head_dim, pos_dim, **options)
    except TypeError as err:
        raise TypeError(f"stripes/pe/base.py: bad options {options} for PE {name!r}: {err}") from err


def seed_stochastic_pes(model: nn.Module, seed: int | None) -> int:
    """Seed the noise of every stochastic PE in ``model`` (spec decision 12); returns how many.

    Each module with a ``seed_noise(seed)`` method (SPE) gets ``seed``; None restores the global RNG.
    Evaluation calls this with the run's seed before each split, so every split's numbers are
    reproducible and do not depend on which splits were evaluated before it.
    """
    count = 0
    for module in model.modules():
        if callable(getattr(module, "seed_noise", None)):
            module.seed_noise(seed)
            count += 1
    return count


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class PositionalEncoding(nn.Module):
    """Base class: shape checks, the default ``forward_qk`` and the position → angle projection."""

    def __init__(self, num_heads: int, head_dim: int, pos_dim: int):
        super().__init__()
        if num_heads < 1 or head_dim < 1 or pos_dim < 1:
            raise ValueError(
                f"stripes/pe/base.py: num_heads, head_dim, pos_dim must be >= 1; got "
                f"{num_heads}, {head_dim}, {pos_dim}"
            )
        self.num_heads, self.head_dim, self.pos_dim = num_heads, head_dim, pos_dim
        self.out_dim = head_dim

    def forward_qk(self, q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor):
        """(q̃, k̃) for the attention layer; the same transform on both sides unless overridden."""
        return self(q, pos), self(k, pos)

    def check(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Validate shapes and return the positions as (B, T, P) in the compute dtype."""
        name = type(self).__name__
        if x.dim() != 4 or x.shape[2] != self.num_heads or x.shape[3] != self.head_dim:
            raise ValueError(
                f"stripes/pe/base.py: {name} expects x of shape (B,T,H={self.num_heads},"
                f"D={self.head_dim}), got {tuple(x.shape)}"
            )
        if pos.dim() == 2:
            pos = pos.unsqueeze(-1)
        if pos.dim() != 3 or pos.shape[-1] != self.pos_dim or pos.shape[1] != x.shape[1]:
            raise ValueError(
                f"stripes/pe/base.py: {name} expects positions (B,T={x.shape[1]},P={self.pos_dim}), "
                f"got {tuple(pos.shape)}"
            )
        return pos.to(compute_dtype(x))

    def check_all(self, pos: torch.Tensor, *xs: torch.Tensor) -> torch.Tensor:
        """``check`` for inputs that share the positions (q and k); returns them as (B, T, P)."""
        pos = self.check(xs[0], pos)
        for x in xs[1:]:
            self.check(x, pos)
        return pos

    @staticmethod
    def angles(pos: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
        """θ = f·p for every head and frequency: pos (B,T,P), frequencies (H,...,P) -> (B,T,H,...)."""
        h = frequencies.shape[0]
        flat = frequencies.to(pos.dtype).reshape(h, -1, pos.shape[-1])  # (H, K, P)
        theta = torch.einsum("btp,hkp->bthk", pos, flat)
        return theta.reshape(*pos.shape[:2], *frequencies.shape[:-1])


class JointTransformPE(PositionalEncoding):
    """A PE whose q and k transforms share one evaluation of the angles: subclasses implement
    ``_transform(pos, *xs) -> tuple`` (one output per input); ``forward`` is its one-input case."""

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self._transform(pos, x)[0]

    def forward_qk(self, q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor):
        return self._transform(pos, q, k)

    def _transform(self, pos: torch.Tensor, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError


def geometric_frequencies(count: int, base: float = 10000.0) -> torch.Tensor:
    """base^(−k/count), k = 0…count−1: RoPE's exponential grid ([S] §IV-E, RoPE(A))."""
    return base ** (-torch.arange(count, dtype=torch.float64) / count)


def per_head_frequencies(num_heads: int, per_head: int, base: float = 10000.0) -> torch.Tensor:
    """Decision 9.4: H·K values base^(−k/(H·K)); head h takes those with k ≡ h (mod H). (H, K)."""
    grid = geometric_frequencies(num_heads * per_head, base)
    return grid.reshape(per_head, num_heads).T.contiguous()


def expand_to_positions(freqs: torch.Tensor, pos_dim: int) -> torch.Tensor:
    """Scalar frequency → frequency vector f·(1,…,1) ∈ R^P (decision 9.4). (..., ) -> (..., P)."""
    return freqs.unsqueeze(-1).expand(*freqs.shape, pos_dim).clone()
