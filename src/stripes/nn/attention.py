"""Causal linear attention [Katharopoulos et al. 2020] and the multi-head attention layer.

Linear attention (spec §3; [S] eq. 3, 5, 7):

    y_m = Σ_{n≤m} (φ(q̃_m)·φ(k̃_n)) v_n / (Σ_{n≤m} φ(q̃_m)·φ(k̃_n) + ε)

where q̃, k̃ are the PE-transformed queries/keys (``stripes.pe``) and φ a non-negative feature map
(elu+1 by default, as in fast-transformers; FAVOR+ positive random features as an option).

The causal sum is computed in chunks of ``chunk_size`` steps, in O(T) memory: inside a chunk the
masked (C×C) products are formed explicitly; across chunks the states
S_c = Σ_{n < start of chunk c} φ(k_n) v_nᵀ (F×Dv) and z_c = Σ_{n < start of chunk c} φ(k_n) are used.
All per-chunk states come from one batched matmul, followed by an exclusive scan over chunks done
with two small triangular matmuls, so there is no Python loop over chunks (a loop of N additions
and torch.cumsum were both measured slower on the 2-core CPU, where torch.cumsum along a
non-last axis is very slow). The backward pass is written by hand with the same chunked kernels
(``_CausalLinearAttention``) so autograd does not store per-op intermediates. No T×T matrix is ever
built. Sums are accumulated in float32 whatever the input dtype; the result is cast back to the
value dtype.

On CUDA, ``linear_attention(..., impl="auto" | "fla")`` hands causal attention to the fused kernel of
``stripes.nn.fla_attention`` (flash-linear-attention's numerator, the project's float32
denominator); this PyTorch path stays the reference and the CPU implementation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stripes.nn.fla_attention import fused_causal_linear_attention, kernel_dtype, select_impl

#: Chunk size chosen from measurements on the 2-core CPU box (outputs/bench/attention.md, chunk
#: table, written by ``python -m stripes.bench.attention``): with NoPE at H = 4, F = Dv = 128 and one
#: thread, C = 64 was fastest at T = 2048 (61 ms vs 77/63/80 for C = 32/128/256) and T = 8192
#: (282 ms vs 378/290/331); the Python loop over chunks with autograd took 102 and 1024 ms. With two
#: threads on the shared CPU the sweep was dominated by contention (no consistent winner).
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
    impl: str = "torch",
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Linear attention on non-negative features ([S] eq. 3 with 𝖺_mn = φ(q̃_m)·φ(k̃_n)).

    Args:
        q_feat, k_feat: (B, T, H, F) feature-mapped queries/keys, φ(q̃) and φ(k̃) (non-negative).
        v: (B, T, H, Dv) values.
        causal: if True, position m attends to n ≤ m only; otherwise to all n.
        chunk_size: chunk length C of the causal algorithm (any C ≥ 1; T need not be a multiple).
        eps: added to the normaliser: a float, or a (B, T, H) tensor of per-query values (a
            constant: no gradient flows into it; FAVOR+ uses it to keep ε at the scale of its
            unshifted features, see ``FavorFeatureMap.features``).
        impl: ``torch`` (default: this chunked PyTorch computation, the reference), ``fla`` or
            ``auto`` (``model.attention_impl``): causal attention on CUDA then goes to the fused
            kernel (``stripes.nn.fla_attention``: numerator in ``dtype``, float32 denominator) when
            ``select_impl`` says so; non-causal attention and CPU calls always stay here.
        dtype: the fused kernel's dtype (``kernel_dtype``: bfloat16 under autocast); the PyTorch
            path ignores it.

    Returns:
        (B, T, H, Dv) in v's dtype. Internally everything is float32 (or float64 if given).

    Raises:
        ValueError, RuntimeError, ImportError: see ``select_impl`` (e.g. ``fla`` off CUDA).
    """
    if causal and select_impl(impl, q_feat) == "fla":
        return fused_causal_linear_attention(q_feat, k_feat, v, eps=eps, dtype=dtype)
    _check_shapes(q_feat, k_feat, v)
    if chunk_size < 1:
        raise ValueError(f"stripes/nn/attention.py: chunk_size must be >= 1, got {chunk_size}")
    out_dtype = v.dtype
    acc = torch.float64 if q_feat.dtype == torch.float64 else torch.float32
    # (B, H, T, F) layout: the matmuls below run over the last two axes.
    q = q_feat.to(acc).transpose(1, 2)
    k = k_feat.to(acc).transpose(1, 2)
    val = v.to(acc).transpose(1, 2)
    if torch.is_tensor(eps):
        if eps.shape != q_feat.shape[:3]:
            raise ValueError(f"stripes/nn/attention.py: eps must be a float or (B,T,H) "
                             f"{tuple(q_feat.shape[:3])}, got {tuple(eps.shape)}")
        eps = eps.detach().to(acc).transpose(1, 2).unsqueeze(-1)  # (B,H,T,1)
    if causal:
        out = _causal_chunked(q, k, val, chunk_size, eps)
    else:
        kv = k.transpose(-1, -2) @ val  # (B,H,F,Dv)
        z = k.sum(dim=-2)  # (B,H,F)
        num = q @ kv
        den = (q @ z.unsqueeze(-1)) + eps
        out = num / den
    return out.transpose(1, 2).to(out_dtype)


def _to_chunks(x: torch.Tensor, c: int) -> torch.Tensor:
    """(G, T, X) -> (G, N, C, X), zero-padding T up to a multiple of C (zeros add nothing)."""
    g, t, d = x.shape
    n = -(-t // c)
    if n * c != t:
        x = F.pad(x, (0, 0, 0, n * c - t))
    return x.reshape(g, n, c, d)


def _exclusive_scan(x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """Exclusive prefix sums over axis 1 of (G, N, M) (suffix sums if ``reverse``), as matmuls.

    Up to 64 chunks: one strictly triangular N×N matmul (2·N²·M FLOPs). Beyond: two levels with
    blocks of s ≈ √N chunks (a divisor of N when one is near √N, so nothing is padded): triangular
    s×s matmuls inside blocks, plus the block totals scanned with a triangular (N/s)×(N/s) matmul
    and added in place (≈ 2·(s+1)·N·M + 2·(N/s)²·M FLOPs). A few BLAS calls instead of
    torch.cumsum or N small additions (both measured slower on the 2-core box).
    """
    g, n, m = x.shape
    s = _scan_block(n)
    nb = -(-n // s)
    if nb * s != n:
        x = F.pad(x, (0, 0, 0, nb * s - n))
    ones_s = torch.ones(s, s, dtype=x.dtype, device=x.device)
    tri_s = (ones_s.triu(1) if reverse else ones_s.tril(-1)).expand(g * nb, s, s)
    blocks = x.reshape(g * nb, s, m)
    within = torch.bmm(tri_s, blocks)
    if nb > 1:
        ones_b = torch.ones(nb, nb, dtype=x.dtype, device=x.device)
        tri_b = (ones_b.triu(1) if reverse else ones_b.tril(-1)).expand(g, nb, nb)
        across = torch.bmm(tri_b, blocks.reshape(g, nb, s, m).sum(dim=2))  # (G, nb, M)
        within.view(g, nb, s, m).add_(across.unsqueeze(2))
    within = within.view(g, nb * s, m)
    return within if nb * s == n else within[:, :n]


def _scan_block(n: int) -> int:
    """Block length of the scan: N itself up to 64 chunks (one triangular matmul), else a divisor
    of N in [√N, 2√N] if there is one (no padding), else ⌈√N⌉."""
    if n <= 64:
        return n
    root = math.isqrt(n - 1) + 1
    for s in range(root, 2 * root + 1):
        if n % s == 0:
            return s
    return root


def _scan_flops(n: int, m: int) -> int:
    s = _scan_block(n)
    nb = -(-n // s)
    if nb == 1:
        return 2 * s * s * m
    return 2 * s * nb * s * m + nb * s * m + 2 * nb * nb * m + nb * s * m  # within, sums, across, add


class _CausalLinearAttention(torch.autograd.Function):
    """Normalised causal linear attention, chunked, with a hand-written chunked backward.

    Inputs (G, T, ·) with G = batch·heads. Per chunk of C steps (exclusive scans over chunks):
      S = Σ_{earlier chunks} kᵀv (F×Dv),  z = Σ_{earlier chunks} k (F),  A = tril(q kᵀ) (C×C),
      num = A v + q S,  den = A·1 + q·z + ε,  y = num / den.
    Backward with g_n = dy/den and g_d = −(dy·y)/den (gradients w.r.t. num and den):
      B = tril(g_n vᵀ + g_d 1ᵀ),  R = Σ_{later chunks} qᵀg_n (F×Dv),  r = Σ_{later chunks} q g_d (F),
      dq = B k + g_n Sᵀ + g_d zᵀ,   dk = Bᵀ q + v Rᵀ + 1 rᵀ,   dv = Aᵀ g_n + k R.
    A, S and z are kept from the forward (O(T·C) and O((T/C)·F·Dv) memory, linear in T).
    """

    @staticmethod
    def forward(ctx, q, k, v, chunk, eps):
        g, t, dv = v.shape
        c = min(chunk, t)
        qc, kc, vc = _to_chunks(q, c), _to_chunks(k, c), _to_chunks(v, c)
        n, f = qc.shape[1], qc.shape[-1]
        flat = lambda x: x.reshape(g * n, x.shape[-2], x.shape[-1])
        qf, kf, vf = flat(qc), flat(kc), flat(vc)
        states = _exclusive_scan(torch.bmm(kf.transpose(1, 2), vf).view(g, n, f * dv))
        states = states.reshape(g * n, f, dv)
        norms = _exclusive_scan(kc.sum(dim=2))  # (G, N, F)
        scores = torch.bmm(qf, kf.transpose(1, 2)).tril_()  # (G·N, C, C)
        num = torch.bmm(scores, vf).baddbmm_(qf, states)  # (G·N, C, Dv); in place, no copy
        if torch.is_tensor(eps):  # (G, T, 1) per-query ε; padded steps get 1 (never 0/0)
            eps = F.pad(eps, (0, 0, 0, n * c - t), value=1.0).reshape(g * n, c, 1)
        den = torch.baddbmm(scores.sum(-1, keepdim=True), qf, norms.reshape(g * n, f, 1)).add_(eps)
        out = num.div_(den)
        ctx.save_for_backward(qc, kc, vc, out, den.squeeze(-1), scores.view(g, n, c, c), states, norms)
        ctx.length = t
        return out.view(g, n * c, dv)[:, :t]

    @staticmethod
    def backward(ctx, grad):
        qc, kc, vc, out, den, scores, states, norms = ctx.saved_tensors
        g, n, c, f = qc.shape
        dv = vc.shape[-1]
        t = ctx.length
        flat = lambda x: x.reshape(g * n, x.shape[-2], x.shape[-1])
        qf, kf, vf = flat(qc), flat(kc), flat(vc)
        gc = flat(_to_chunks(grad.contiguous(), c))  # (G·N, C, Dv)
        g_num = gc / den.unsqueeze(-1)
        g_den = -(gc * out).sum(-1) / den  # (G·N, C)
        mixed = torch.baddbmm(g_den.unsqueeze(-1), g_num, vf.transpose(1, 2)).tril_()  # B
        dq = torch.bmm(mixed, kf).baddbmm_(g_num, states.transpose(1, 2))
        dq += g_den.unsqueeze(-1) * norms.reshape(g * n, 1, f)
        rev = _exclusive_scan(torch.bmm(qf.transpose(1, 2), g_num).view(g, n, f * dv), reverse=True)
        rev = rev.reshape(g * n, f, dv)
        rev_norm = _exclusive_scan((qf * g_den.unsqueeze(-1)).sum(1).view(g, n, f), reverse=True)
        dk = torch.bmm(mixed.transpose(1, 2), qf).baddbmm_(vf, rev.transpose(1, 2))
        dk += rev_norm.reshape(g * n, 1, f)
        d_v = torch.bmm(flat(scores).transpose(1, 2), g_num).baddbmm_(kf, rev)
        unchunk = lambda x: x.reshape(g, n * c, -1)[:, :t]
        return unchunk(dq), unchunk(dk), unchunk(d_v), None, None


def _causal_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int, eps):
    """Chunked causal linear attention on (B,H,T,F)/(B,H,T,Dv) tensors (ε: float or (B,H,T,1));
    returns (B,H,T,Dv)."""
    b, h, t, f = q.shape
    flat = lambda x: x.reshape(b * h, t, x.shape[-1])
    if torch.is_tensor(eps):
        eps = flat(eps)
    out = _CausalLinearAttention.apply(flat(q), flat(k), flat(v), chunk, eps)
    return out.reshape(b, h, t, -1)


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


def chunked_attention_flops(t: int, f: int, dv: int, chunk_size: int = DEFAULT_CHUNK_SIZE,
                            backward: bool = False) -> int:
    """FLOPs of causal ``linear_attention`` for one (batch, head), as implemented (padding counted;
    a multiply-add = 2 FLOPs; N = ⌈T/C⌉ chunks).

    Forward: chunk states kᵀv and q·S 4·T·F·Dv, scores 2·T·C·F, A·v 2·T·C·Dv, the two scans,
    normaliser (A·1, q·z, Σk) T·C + 3·T·F, division T·Dv.
    Backward (``backward=True`` adds it): B 2·T·C·Dv + T·C, B·k and Bᵀ·q 4·T·C·F, g_n·Sᵀ, qᵀg_n,
    v·Rᵀ, k·R 8·T·F·Dv, Aᵀ·g_n 2·T·C·Dv, the two reverse scans, g_d·z, q·g_d, r 5·T·F, and the
    elementwise g_n, g_d ≈ 3·T·Dv.
    """
    c = min(chunk_size, t)
    n = -(-t // c)
    tp = n * c
    scans = _scan_flops(n, f * dv) + _scan_flops(n, f)
    fwd = 4 * tp * f * dv + 2 * tp * c * (f + dv) + scans + tp * c + 3 * tp * f + tp * dv
    if not backward:
        return fwd
    bwd = 8 * tp * f * dv + 4 * tp * c * (f + dv) + scans + tp * c + 5 * tp * f + 3 * tp * dv
    return fwd + bwd


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
    E[φ(q)·φ(k)] = exp(q·k/√F). Shapes: q, k (B,T,H,F) → φ(q), φ(k) (B,T,H,M), float32 (float64 for
    float64 input).

    Stabilisation, data-dependent as in Performer's ``softmax_kernel``: the query exponent subtracts
    its own row maximum (a per-query factor, which cancels between numerator and denominator), the
    key exponent subtracts its maximum over time and features per (batch, head) (one factor for
    every key of a sequence), both detached. The largest query and key features are then exactly
    1/√M, so nothing underflows in float32 (the former constant key shift max|wᵢ|²/2, 64 to 88 at
    F = 128, underflowed φ(k) to 0 and the output to ≈ 0; issue 11).
    Both shifts cancel between numerator and denominator except against ε, so ``features`` also
    returns log_scale = −(query shift + key shift) per query, and the attention layer adds
    ε·exp(log_scale) to the shifted normaliser: exactly the unstabilised formula with ε, hence
    causal although the key maximum spans the whole sequence (future keys change the shift, never
    the output at earlier steps).

    ``num_features`` = M (spec §3: configurable; ``model.favor.num_features``), ``redraw=True`` draws
    new directions at every training-mode call (``model.favor.redraw``); otherwise they stay fixed.
    """

    def __init__(self, in_dim: int, num_features: int = 256, redraw: bool = False):
        super().__init__()
        if num_features < 1:
            raise ValueError(f"stripes/nn/attention.py: FAVOR+ num_features must be >= 1, got {num_features}")
        self.in_dim = in_dim
        self.out_dim = int(num_features)
        self.redraw = bool(redraw)
        self.register_buffer("directions", self._draw(in_dim, self.out_dim))

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

    def exponents(self, q: torch.Tensor, k: torch.Tensor):
        """Unstabilised exponents wᵢ·x' − |x'|²/2 of queries and keys, (B,T,H,M) each."""
        acc = torch.float64 if q.dtype == torch.float64 else torch.float32
        w = self.directions.to(acc)
        scale = self.in_dim ** -0.25
        qx, kx = q.to(acc) * scale, k.to(acc) * scale
        return (qx @ w.T - 0.5 * (qx * qx).sum(-1, keepdim=True),
                kx @ w.T - 0.5 * (kx * kx).sum(-1, keepdim=True))

    def features(self, q: torch.Tensor, k: torch.Tensor):
        """(φ(q), φ(k), log_scale): features (B,T,H,M) after the shifts, and log_scale (B,T,H) =
        −(query shift + key shift), so that φ(q_m)·φ(k_n) = exp(log_scale_m)·φ_raw(q_m)·φ_raw(k_n)."""
        if self.redraw and self.training:
            self.directions = self._draw(self.in_dim, self.out_dim).to(self.directions.device)
        q_exp, k_exp = self.exponents(q, k)
        q_shift = q_exp.amax(dim=-1, keepdim=True).detach()
        k_shift = k_exp.amax(dim=(1, 3), keepdim=True).detach()  # over time and features
        norm = self.out_dim ** -0.5
        log_scale = -(q_shift + k_shift).squeeze(-1)
        return torch.exp(q_exp - q_shift) * norm, torch.exp(k_exp - k_shift) * norm, log_scale

    @staticmethod
    def scaled_eps(eps: float, log_scale: torch.Tensor) -> torch.Tensor:
        """ε·exp(log_scale), (B,T,H): the normaliser's ε on the scale of the shifted features, so the
        result equals unstabilised attention with ε. log_scale is clamped to ±60 (float32 range)."""
        return eps * torch.exp(log_scale.clamp(-60.0, 60.0))

    def forward_qk(self, q: torch.Tensor, k: torch.Tensor):
        """(φ(q), φ(k)), each (B,T,H,M); the shifts are in ``features``' log_scale."""
        q_f, k_f, _ = self.features(q, k)
        return q_f, k_f


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

    ``attention_impl`` (``auto | torch | fla``) picks the linear-attention implementation
    (``linear_attention``'s ``impl``). Under autocast (bf16-mixed on GPU), φ and the linear
    attention's sums run with autocast off, in float32; only the fused kernel's numerator runs in
    bfloat16 (issue 10).
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
        attention_impl: str = "auto",
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
        self.attention_impl = attention_impl
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
            fused_dtype = kernel_dtype(x.device.type)
            with torch.autocast(x.device.type, enabled=False):  # φ and the sums in float32
                if isinstance(self.feature_map, FavorFeatureMap):  # ε on the unshifted features' scale
                    q_f, k_f, log_scale = self.feature_map.features(q_t, k_t)
                    eps = self.feature_map.scaled_eps(self.eps, log_scale)
                else:
                    q_f, k_f = self.feature_map.forward_qk(q_t, k_t)
                    eps = self.eps
                y = linear_attention(q_f, k_f, v, causal=causal, chunk_size=self.chunk_size, eps=eps,
                                     impl=self.attention_impl, dtype=fused_dtype)
            y = F.dropout(y, self.dropout, self.training)
        else:
            y = F.scaled_dot_product_attention(
                q_t.transpose(1, 2), k_t.transpose(1, 2).to(q_t.dtype), v.transpose(1, 2).to(q_t.dtype),
                is_causal=causal, dropout_p=self.dropout if self.training else 0.0,
                scale=1.0 / math.sqrt(self.head_dim),
            ).transpose(1, 2).to(x.dtype)
        return self.out_proj(y.reshape(b, t, self.d_model))
