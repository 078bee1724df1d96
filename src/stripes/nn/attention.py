"""Causal linear attention [Katharopoulos et al. 2020] and the multi-head attention layer.

Linear attention (spec §3; [S] eq. 3, 5, 7):

    y_m = Σ_{n≤m} (φ(q̃_m)·φ(k̃_n)) v_n / (Σ_{n≤m} φ(q̃_m)·φ(k̃_n) + ε)

where q̃, k̃ are the PE-transformed queries/keys (``stripes.pe``) and φ a non-negative feature map
(elu+1 by default, as in fast-transformers; FAVOR+ positive random features as an option).

The causal sum is computed in chunks of ``chunk_size`` steps, in O(T) memory: inside a chunk the
masked (C×C) products are formed explicitly; across chunks a running state
S_c = Σ_{n < start of chunk c} φ(k_n) v_nᵀ (F×Dv) and normaliser z_c = Σ φ(k_n) (F) are used.
All per-chunk states are computed at once (one batched matmul) followed by an exclusive cumulative
sum over chunks, so there is no Python loop over chunks. No T×T matrix is ever built. Sums are
accumulated in float32 whatever the input dtype; the result is cast back to the value dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Chunk size chosen from measurements on the 2-core CPU box (outputs/bench/attention_chunks.csv,
#: written by ``python -m stripes.bench.attention``): 64 is fastest or within noise of the fastest
#: from T = 1024 to T = 8192 at H = 4, F = Dv = 128.
DEFAULT_CHUNK_SIZE = 64


def _check_shapes(q_feat: torch.Tensor, k_feat: torch.Tensor, v: torch.Tensor) -> None:
    if q_feat.dim() != 4 or k_feat.dim() != 4 or v.dim() != 4:
        raise ValueError(
            "stripes/nn/attention.py: linear_attention expects q_feat, k_feat (B,T,H,F) and "
            f"v (B,T,H,Dv); got shapes {tuple(q_feat.shape)}, {tuple(k_feat.shape)}, {tuple(v.shape)}"
        )
    if q_feat.shape != k_feat.shape:
        raise ValueError(
            "stripes/nn/attention.py: q_feat and k_feat must have the same shape (B,T,H,F); got "
            f"{tuple(q_feat.shape)} and {tuple(k_feat.shape)}"
        )
    if v.shape[:3] != q_feat.shape[:3]:
        raise ValueError(
            "stripes/nn/attention.py: v must share (B,T,H) with the features; got "
            f"{tuple(v.shape)} vs {tuple(q_feat.shape)}"
        )


def linear_attention(
    q_feat: torch.Tensor,
    k_feat: torch.Tensor,
    v: torch.Tensor,
    causal: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Linear attention on non-negative features ([S] eq. 3 with 𝖺_mn = φ(q̃_m)·φ(k̃_n)).

    Args:
        q_feat, k_feat: (B, T, H, F) feature-mapped queries/keys, φ(q̃) and φ(k̃) (non-negative).
        v: (B, T, H, Dv) values.
        causal: if True, position m attends to n ≤ m only; otherwise to all n.
        chunk_size: chunk length C of the causal algorithm (any C ≥ 1; T need not be a multiple).
        eps: added to the normaliser.

    Returns:
        (B, T, H, Dv) in v's dtype. Internally everything is float32 (or float64 if given).
    """
    _check_shapes(q_feat, k_feat, v)
    if chunk_size < 1:
        raise ValueError(f"stripes/nn/attention.py: chunk_size must be >= 1, got {chunk_size}")
    out_dtype = v.dtype
    acc = torch.float64 if q_feat.dtype == torch.float64 else torch.float32
    # (B, H, T, F) layout: the matmuls below run over the last two axes.
    q = q_feat.to(acc).transpose(1, 2)
    k = k_feat.to(acc).transpose(1, 2)
    val = v.to(acc).transpose(1, 2)
    if causal:
        out = _causal_chunked(q, k, val, chunk_size, eps)
    else:
        kv = k.transpose(-1, -2) @ val  # (B,H,F,Dv)
        z = k.sum(dim=-2)  # (B,H,F)
        num = q @ kv
        den = (q @ z.unsqueeze(-1)) + eps
        out = num / den
    return out.transpose(1, 2).to(out_dtype)


def _causal_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int, eps: float):
    """Chunked causal linear attention on (B,H,T,F)/(B,H,T,Dv) tensors; returns (B,H,T,Dv)."""
    b, h, t, f = q.shape
    dv = v.shape[-1]
    c = min(chunk, t)
    n = -(-t // c)
    pad = n * c - t
    if pad:
        # Zero keys/values add nothing to any sum; padded query rows are dropped at the end.
        q = F.pad(q, (0, 0, 0, pad))
        k = F.pad(k, (0, 0, 0, pad))
        v = F.pad(v, (0, 0, 0, pad))
    qc = q.reshape(b, h, n, c, f)
    kc = k.reshape(b, h, n, c, f)
    vc = v.reshape(b, h, n, c, dv)
    # Per-chunk sums of φ(k) vᵀ and φ(k), then the state *before* each chunk (exclusive cumsum).
    kv_chunk = kc.transpose(-1, -2) @ vc  # (B,H,N,F,Dv)
    z_chunk = kc.sum(dim=-2)  # (B,H,N,F)
    kv_state = torch.cumsum(kv_chunk, dim=2)
    z_state = torch.cumsum(z_chunk, dim=2)
    kv_prev = torch.cat([torch.zeros_like(kv_state[:, :, :1]), kv_state[:, :, :-1]], dim=2)
    z_prev = torch.cat([torch.zeros_like(z_state[:, :, :1]), z_state[:, :, :-1]], dim=2)
    # Inside a chunk: masked C×C products (lower triangle, diagonal included).
    scores = qc @ kc.transpose(-1, -2)  # (B,H,N,C,C)
    mask = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~mask, 0.0)
    num = qc @ kv_prev + scores @ vc  # (B,H,N,C,Dv)
    den = (qc @ z_prev.unsqueeze(-1)).squeeze(-1) + scores.sum(dim=-1) + eps  # (B,H,N,C)
    out = (num / den.unsqueeze(-1)).reshape(b, h, n * c, dv)
    return out[:, :, :t]


def causal_linear_attention_loop(
    q_feat: torch.Tensor, k_feat: torch.Tensor, v: torch.Tensor, chunk_size: int = 64,
    eps: float = 1e-6,
) -> torch.Tensor:
    """The same causal result with an explicit Python loop over chunks and a running state.

    Kept as the textbook form of the algorithm (running S and z carried from chunk to chunk) and
    for the chunk-algorithm comparison in the benchmark; ``linear_attention`` is the one to use.
    """
    _check_shapes(q_feat, k_feat, v)
    acc = torch.float64 if q_feat.dtype == torch.float64 else torch.float32
    q = q_feat.to(acc).transpose(1, 2)
    k = k_feat.to(acc).transpose(1, 2)
    val = v.to(acc).transpose(1, 2)
    b, h, t, f = q.shape
    state = q.new_zeros(b, h, f, val.shape[-1])
    norm = q.new_zeros(b, h, f)
    outs = []
    for start in range(0, t, chunk_size):
        qs, ks, vs = (x[:, :, start:start + chunk_size] for x in (q, k, val))
        scores = (qs @ ks.transpose(-1, -2)).tril()
        num = qs @ state + scores @ vs
        den = (qs @ norm.unsqueeze(-1)).squeeze(-1) + scores.sum(-1) + eps
        outs.append(num / den.unsqueeze(-1))
        state = state + ks.transpose(-1, -2) @ vs
        norm = norm + ks.sum(dim=-2)
    return torch.cat(outs, dim=2).transpose(1, 2).to(v.dtype)


def chunked_attention_flops(t: int, f: int, dv: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Forward floating-point operations of ``linear_attention`` (causal) for one (batch, head).

    Counts multiply and add separately (a multiply-add = 2 FLOPs): per-chunk KV sums 2·T·F·Dv,
    inter-chunk products 2·T·F·Dv, intra-chunk scores 2·T·C·F and their product with V 2·T·C·Dv,
    the normalisers 2·T·F + T·C, the cumulative sums N·F·(Dv+1) and the division T·Dv.
    Padding of the last chunk is counted (it is computed).
    """
    c = min(chunk_size, t)
    n = -(-t // c)
    tp = n * c
    return (4 * tp * f * dv + 2 * tp * c * (f + dv) + 2 * tp * f + tp * c
            + n * f * (dv + 1) + tp * dv)


# --------------------------------------------------------------------------------------------
# Feature maps φ
# --------------------------------------------------------------------------------------------


class EluFeatureMap(nn.Module):
    """φ(x) = elu(x) + 1 [Katharopoulos et al. 2020], computed in float32; width unchanged."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.out_dim = in_dim

    def forward_qk(self, q: torch.Tensor, k: torch.Tensor):
        acc = torch.float64 if q.dtype == torch.float64 else torch.float32
        return F.elu(q.to(acc)) + 1.0, F.elu(k.to(acc)) + 1.0


class FavorFeatureMap(nn.Module):
    """FAVOR+ positive random features [Choromanski et al. 2021] for the softmax kernel.

    φ(x) = exp(wᵢ·x' − |x'|²/2) / √M with x' = x / F^{1/4} and M orthogonal Gaussian directions
    wᵢ (rows of a (M, F) matrix; blocks of F orthogonal rows rescaled to chi-distributed norms), so
    E[φ(q)·φ(k)] = exp(q·k/√F). Stabilisation that leaves every attention ratio unchanged: the
    query exponent subtracts its own row maximum (a per-query factor cancels between numerator and
    denominator), the key exponent subtracts the constant max|wᵢ|²/2 (a global factor).
    ``redraw=True`` draws new directions at every training-mode call; otherwise they stay fixed.
    """

    def __init__(self, in_dim: int, num_features: int = 128, redraw: bool = False):
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = num_features
        self.redraw = redraw
        self.register_buffer("directions", self._draw(in_dim, num_features))

    @staticmethod
    def _draw(in_dim: int, num_features: int) -> torch.Tensor:
        blocks = []
        for _ in range(-(-num_features // in_dim)):
            g = torch.randn(in_dim, in_dim)
            qmat, _ = torch.linalg.qr(g)
            blocks.append(qmat.T)
        w = torch.cat(blocks, dim=0)[:num_features]
        norms = torch.randn(num_features, in_dim).norm(dim=1, keepdim=True)
        return w * norms

    def forward_qk(self, q: torch.Tensor, k: torch.Tensor):
        if self.redraw and self.training:
            self.directions = self._draw(self.in_dim, self.out_dim).to(self.directions.device)
        acc = torch.float64 if q.dtype == torch.float64 else torch.float32
        w = self.directions.to(acc)
        scale = self.in_dim ** -0.25
        qx, kx = q.to(acc) * scale, k.to(acc) * scale
        q_exp = qx @ w.T - 0.5 * (qx * qx).sum(-1, keepdim=True)
        k_exp = kx @ w.T - 0.5 * (kx * kx).sum(-1, keepdim=True)
        q_exp = q_exp - q_exp.amax(dim=-1, keepdim=True).detach()
        k_exp = k_exp - 0.5 * (w * w).sum(-1).max()
        norm = self.out_dim ** -0.5
        return torch.exp(q_exp) * norm, torch.exp(k_exp) * norm


def build_feature_map(name: str, in_dim: int, **options) -> nn.Module:
    """φ by name: ``elu`` (default, elu+1) or ``favor`` (options: num_features, redraw)."""
    if name == "elu":
        return EluFeatureMap(in_dim)
    if name == "favor":
        return FavorFeatureMap(in_dim, **options)
    raise ValueError(f"stripes/nn/attention.py: unknown feature_map {name!r}; use 'elu' or 'favor'")


# --------------------------------------------------------------------------------------------
# The attention layer
# --------------------------------------------------------------------------------------------


class MultiHeadAttention(nn.Module):
    """Multi-head attention with a positional encoding applied to queries and keys.

    x → q, k, v projections (H heads of D = d_model/H) → ``pe.forward_qk(q, k, pos)`` = (q̃, k̃)
    (B,T,H,F) → either
      * ``kind="linear"``: φ(q̃), φ(k̃) then ``linear_attention`` (the paper's setting), or
      * ``kind="softmax"``: causal SDPA on (q̃, k̃, v) with scale 1/√D ([S] eq. 1–2), a reference;
    → output projection. Dropout: on the attention probabilities for softmax, on the attention
    output (before the output projection) for linear attention, where no probability matrix exists.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        pe: nn.Module,
        kind: str = "linear",
        feature_map: str = "elu",
        dropout: float = 0.0,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        feature_map_options: dict | None = None,
        eps: float = 1e-6,
    ):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(
                f"stripes/nn/attention.py: d_model={d_model} is not divisible by num_heads={num_heads}"
            )
        if kind not in ("linear", "softmax"):
            raise ValueError(f"stripes/nn/attention.py: kind must be 'linear' or 'softmax', got {kind!r}")
        self.d_model, self.num_heads, self.head_dim = d_model, num_heads, d_model // num_heads
        self.kind, self.chunk_size, self.eps, self.dropout = kind, chunk_size, eps, dropout
        self.pe = pe
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.feature_map = (
            build_feature_map(feature_map, pe.out_dim, **(feature_map_options or {}))
            if kind == "linear" else None
        )

    def forward(self, x: torch.Tensor, pos: torch.Tensor, causal: bool = True) -> torch.Tensor:
        b, t, _ = x.shape
        shape = (b, t, self.num_heads, self.head_dim)
        q = self.q_proj(x).view(shape)
        k = self.k_proj(x).view(shape)
        v = self.v_proj(x).view(shape)
        q_t, k_t = self.pe.forward_qk(q, k, pos)
        if self.kind == "linear":
            q_f, k_f = self.feature_map.forward_qk(q_t, k_t)
            y = linear_attention(q_f, k_f, v, causal=causal, chunk_size=self.chunk_size, eps=self.eps)
            y = F.dropout(y, self.dropout, self.training)
        else:
            y = F.scaled_dot_product_attention(
                q_t.transpose(1, 2), k_t.transpose(1, 2).to(q_t.dtype), v.transpose(1, 2).to(q_t.dtype),
                is_causal=causal, dropout_p=self.dropout if self.training else 0.0,
                scale=1.0 / math.sqrt(self.head_dim),
            ).transpose(1, 2).to(x.dtype)
        return self.out_proj(y.reshape(b, t, self.d_model))
