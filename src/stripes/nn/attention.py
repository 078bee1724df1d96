"""Causal linear attention [Katharopoulos et al. 2020] and the multi-head attention layer.

Linear attention (spec §3; [S] eq. 3, 5, 7):

    y_m = Σ_{n≤m} (φ(q̃_m)·φ(k̃_n)) v_n / (Σ_{n≤m} φ(q̃_m)·φ(k̃_n) + ε)

where q̃, k̃ are the PE-transformed queries/keys (``stripes.pe``) and φ a non-negative feature map
(elu+1 by default, as in fast-transformers; FAVOR+ positive random features as an option).

The causal sum is computed in chunks of ``chunk_size`` steps, in O(T) memory: inside a chunk the
masked (C×C) products are formed explicitly; across chunks the states
S_c = Σ_{n < start of chunk c} φ(k_n) v_nᵀ (F×Dv) and z_c = Σ_{n < start of chunk c} φ(k_n) are used.
Per group of heads, all per-chunk states come from one batched matmul, followed by an exclusive
scan over chunks (N − 1 slice additions into one buffer). Head groups (``GROUP_STATE_BYTES``) are
gathered from and written back to the (B, T, H, ·) layout of the projections, so no (B, H, T, ·)
transposed copy of the whole tensors is made and no temporary reaches glibc's mmap threshold; the
backward pass is written by hand with the same chunked kernels (``_CausalLinearAttention``) so
autograd does not store per-op intermediates. φ = elu + 1 can be applied inside
(``feature_map="elu"``, what the model does), fused into the gathering. On CPU float32 with one
intra-op thread, causal attention goes to the C kernel ``stripes.kernels.causal_attention`` (the
same algorithm with each head's chunk loop in C and its products in PyTorch's own sgemm), where it
builds; this PyTorch path is the reference and the fallback. No T×T matrix is ever built. Sums
are accumulated in float32 whatever the input dtype; the result is cast back to the value dtype.

On CUDA, ``linear_attention(..., impl="auto" | "fla")`` hands causal attention to the fused kernel of
``stripes.nn.fla_attention`` (flash-linear-attention's numerator, the project's float32
denominator); this PyTorch path stays the reference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stripes.kernels import causal_attention as causal_kernel
from stripes.nn.fla_attention import fused_causal_linear_attention, kernel_dtype, select_impl

#: Chunk size chosen from measurements on the 2-core CPU box (outputs/bench/attention.md, chunk
#: table, written by ``python -m stripes.bench.attention``): with NoPE at H = 4, F = Dv = 128 and one
#: thread (the C kernel), C = 64 was fastest at T = 8192 (121 ms vs 126/143/187 for
#: C = 32/128/256) and within 5 % of C = 32 at T = 2048 (40 vs 38/45/47 ms); the Python loop over
#: chunks with autograd took 154 and 1678 ms. (The PyTorch path, 2026-11: C = 64 fastest at both.)
#: With two threads on the shared CPU the sweep was dominated by contention (no consistent winner).
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
    feature_map: str | None = None,
) -> torch.Tensor:
    """Linear attention on non-negative features ([S] eq. 3 with 𝖺_mn = φ(q̃_m)·φ(k̃_n)).

    Args:
        q_feat, k_feat: (B, T, H, F) feature-mapped queries/keys, φ(q̃) and φ(k̃) (non-negative),
            or q̃, k̃ themselves with ``feature_map="elu"``.
        v: (B, T, H, Dv) values.
        causal: if True, position m attends to n ≤ m only; otherwise to all n.
        chunk_size: chunk length C of the causal algorithm (any C ≥ 1; T need not be a multiple).
        eps: added to the normaliser: a float, or a (B, T, H) tensor of per-query values (a
            constant: no gradient flows into it; FAVOR+ uses it to keep ε at the scale of its
            unshifted features, see ``FavorFeatureMap.features``).
        impl: ``torch`` (default: the chunked computation on this device; on CPU float32 at one
            intra-op thread the C kernel ``stripes.kernels.causal_attention``, else PyTorch), ``fla`` or
            ``auto`` (``model.attention_impl``): causal attention on CUDA then goes to the fused
            kernel (``stripes.nn.fla_attention``: numerator in ``dtype``, float32 denominator) when
            ``select_impl`` says so; non-causal attention and CPU calls always stay here.
        dtype: the fused kernel's dtype (``kernel_dtype``: bfloat16 under autocast); the PyTorch
            path ignores it.
        feature_map: None (q_feat, k_feat are already φ-mapped) or ``"elu"``: φ = elu + 1
            (``elu_plus_one``) is applied here. The same values and gradients; on the causal
            paths φ is then computed chunk by chunk while the chunks are gathered (in the C kernel:
            while each chunk is read), and its slope applied while the gradients are written back,
            instead of in separate passes over (B, T, H, F) tensors.

    Returns:
        (B, T, H, Dv) in v's dtype. Internally everything is float32 (or float64 if given).

    Raises:
        ValueError, RuntimeError, ImportError: see ``select_impl`` (e.g. ``fla`` off CUDA); ValueError
            for an unknown ``feature_map``.
    """
    if feature_map not in (None, "elu"):
        raise ValueError(f"stripes/nn/attention.py: feature_map must be None or 'elu', got {feature_map!r}")
    use_fla = causal and select_impl(impl, q_feat) == "fla"
    fused_phi = feature_map == "elu" and causal and not use_fla
    acc = torch.float64 if q_feat.dtype == torch.float64 else torch.float32
    if feature_map == "elu" and not fused_phi:
        q_feat, k_feat = elu_plus_one(q_feat.to(acc)), elu_plus_one(k_feat.to(acc))
    if use_fla:
        return fused_causal_linear_attention(q_feat, k_feat, v, eps=eps, dtype=dtype)
    _check_shapes(q_feat, k_feat, v)
    if chunk_size < 1:
        raise ValueError(f"stripes/nn/attention.py: chunk_size must be >= 1, got {chunk_size}")
    out_dtype = v.dtype
    q, k, val = q_feat.to(acc), k_feat.to(acc), v.to(acc)
    if torch.is_tensor(eps):
        if eps.shape != q_feat.shape[:3]:
            raise ValueError(f"stripes/nn/attention.py: eps must be a float or (B,T,H) "
                             f"{tuple(q_feat.shape[:3])}, got {tuple(eps.shape)}")
        eps = eps.detach().to(acc)
    if causal:
        eps_tensor = eps if torch.is_tensor(eps) else None
        if _single_threaded() and causal_kernel.usable(q, k, val, eps_tensor):  # the C kernel
            return causal_kernel.causal_linear_attention(q, k, val, chunk_size, eps, fused_phi).to(out_dtype)
        # PyTorch: (B, T, H, ·) throughout, in head groups
        return _CausalLinearAttention.apply(q, k, val, chunk_size, eps, fused_phi).to(out_dtype)
    # (B, H, T, F) layout: the matmuls run over the last two axes.
    q, k, val = q.transpose(1, 2), k.transpose(1, 2), val.transpose(1, 2)
    if torch.is_tensor(eps):
        eps = eps.transpose(1, 2).unsqueeze(-1)  # (B,H,T,1)
    kv = k.transpose(-1, -2) @ val  # (B,H,F,Dv)
    z = k.sum(dim=-2)  # (B,H,F)
    out = (q @ kv) / ((q @ z.unsqueeze(-1)) + eps)
    return out.transpose(1, 2).to(out_dtype)


def _exclusive_scan(x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """Exclusive prefix sums over axis 1 of (G, N, M) (suffix sums if ``reverse``), a new tensor.

    Wide rows (M > 1024, the F×Dv chunk states): N − 1 additions of (G, M) slices into one
    preallocated buffer. Measured on the 2-core box (one thread, G = 4, N = 128, M = 128²): 5 ms,
    against 40 ms for the former triangular-matmul scan and 85 ms for torch.cumsum along a non-last
    axis; most of the difference was the page faults of their fresh (G, N, M) outputs, 33.5 MiB,
    above glibc's 32 MiB mmap threshold. Narrow rows (the normalisers): torch.cumsum, shifted.
    """
    g, n, m = x.shape
    if m <= 1024:
        src = x.flip(1) if reverse else x
        out = torch.zeros_like(x)
        if n > 1:
            out[:, 1:] = torch.cumsum(src[:, :-1], dim=1)
        return out.flip(1) if reverse else out
    out = torch.empty_like(x)
    outs, xs = out.unbind(1), x.unbind(1)  # views, made once (no per-step slicing)
    first, steps = (n - 1, range(n - 2, -1, -1)) if reverse else (0, range(1, n))
    outs[first].zero_()
    for i in steps:
        j = i + 1 if reverse else i - 1
        torch.add(outs[j], xs[j], out=outs[i])
    return out


def _single_threaded() -> bool:
    """Whether PyTorch runs one intra-op thread: only then does the C kernel
    (``stripes.kernels.causal_attention``, one head after another) take causal attention; with more
    threads PyTorch's parallel ops here win."""
    return torch.get_num_threads() == 1


def _state_scan(a: torch.Tensor, b: torch.Tensor, rows: int, reverse: bool = False) -> torch.Tensor:
    """Exclusive prefix sums over chunks of aᵢᵀbᵢ (suffix sums if ``reverse``), per row.

    a: (R·N, C, F), b: (R·N, C, X), R = ``rows`` sequences of N chunks each → (R·N, F, X) with
    entry i = Σ_{j < i} a_jᵀ b_j (Σ_{j > i} if ``reverse``) within its row: one bmm, then
    ``_exclusive_scan``.
    """
    f, x = a.shape[-1], b.shape[-1]
    products = torch.bmm(a.transpose(1, 2), b).view(rows, -1, f * x)
    return _exclusive_scan(products, reverse).view(-1, f, x)


def _scan_flops(n: int, m: int) -> int:
    return (n - 1) * m


#: Heads are processed in groups whose chunk states (B·N·G·F·Dv floats) stay under this many bytes:
#: every temporary then stays far below glibc's 32 MiB mmap threshold (above it, every allocation
#: pays a page fault per 4 KiB: about 28 ms per 33.5 MiB block on the 2-core box, more than the
#: matmuls it holds), while small problems take all heads at once (fewer, larger ops). Measured
#: (one thread, fwd + bwd, H = 4): 4 MiB gives one head at a time at B=1, T=8192, D=128 (16 MiB,
#: two heads, was 10 % slower) and all heads at B=8, T=256, D=16 (4.8 ms vs 5.4 ms one by one).
GROUP_STATE_BYTES = 4 * 2 ** 20


def _head_groups(h: int, per_head_bytes: int) -> list[slice]:
    """Equal groups of consecutive heads (the largest divisor of H within ``GROUP_STATE_BYTES``)."""
    g = max(1, min(h, GROUP_STATE_BYTES // max(per_head_bytes, 1)))
    while h % g:
        g -= 1
    return [slice(i, i + g) for i in range(0, h, g)]


def _head_view(x: torch.Tensor, heads: slice, chunks: int, c: int) -> torch.Tensor:
    """Heads ``heads`` of a contiguous (B, N·C, H, X) tensor as a strided (G, B·N, C, X) view."""
    part = x[:, :, heads]
    return part.permute(2, 0, 1, 3).view(part.shape[2], x.shape[0] * chunks, c, x.shape[-1])


def _head_chunks(x: torch.Tensor, heads: slice, chunks: int, c: int, phi: bool = False) -> torch.Tensor:
    """Heads ``heads`` of a contiguous (B, N·C, H, X) tensor gathered into a contiguous
    (G·B·N, C, X) tensor, mapped through φ = elu + 1 on the way if ``phi``."""
    view = _head_view(x, heads, chunks, c)
    out = torch.empty(view.shape, dtype=x.dtype, device=x.device).copy_(view)
    if phi:  # φ = elu + 1 in place on the gathered copy (contiguous passes beat strided ones)
        positive = out.clamp(min=0.0)
        out.clamp_(max=0.0).exp_().add_(positive)
    return out.view(-1, c, x.shape[-1])


def _pad_time(x: torch.Tensor, length: int, value: float = 0.0) -> torch.Tensor:
    """(B, T, ...) zero-padded (or ``value``-padded) to (B, length, ...), contiguous."""
    if x.shape[1] == length:
        return x.contiguous()
    pad = [0, 0] * (x.dim() - 2) + [0, length - x.shape[1]]
    return F.pad(x, pad, value=value).contiguous()


class _CausalLinearAttention(torch.autograd.Function):
    """Normalised causal linear attention, chunked, with a hand-written chunked backward.

    Inputs q, k (B, T, H, F), v (B, T, H, Dv), ε a float or (B, T, H). Per chunk of C steps
    (exclusive scans over chunks):
      S = Σ_{earlier chunks} kᵀv (F×Dv),  z = Σ_{earlier chunks} k (F),  A = tril(q kᵀ) (C×C),
      num = A v + q S,  den = A·1 + q·z + ε,  y = num / den.
    Backward with g_n = dy/den and g_d = −(dy·y)/den (gradients w.r.t. num and den):
      B = tril(g_n vᵀ + g_d 1ᵀ),  R = Σ_{later chunks} qᵀg_n (F×Dv),  r = Σ_{later chunks} q g_d (F),
      dq = B k + g_n Sᵀ + g_d zᵀ,   dk = Bᵀ q + v Rᵀ + 1 rᵀ,   dv = Aᵀ g_n + k R.
    A, S, z and the normaliser are kept from the forward (O(T·C) and O((T/C)·F·Dv) memory, linear
    in T). Heads are processed in groups (``GROUP_STATE_BYTES``), read from and written to the
    (B, T, H, ·) layout of the inputs and outputs through strided views; inside a group every
    tensor is a contiguous (G·B·N, ·, ·) batch. With ``phi``, q and k are the raw q̃, k̃: φ = elu + 1
    is applied while gathering a group's chunks and its slope min(φ, 1) while writing dq, dk back.
    """

    @staticmethod
    def forward(ctx, q, k, v, chunk, eps, phi):
        b, t, h, f = q.shape
        dv = v.shape[-1]
        c = min(chunk, t)
        n = -(-t // c)
        q, k, v = (_pad_time(x, n * c) for x in (q, k, v))
        eps_t = _pad_time(eps, n * c, value=1.0) if torch.is_tensor(eps) else None  # no 0/0 in padding
        out = v.new_empty(b, n * c, h, dv)
        groups = _head_groups(h, b * n * f * dv * q.element_size())
        saved = []
        for heads in groups:
            qh, kh = _head_chunks(q, heads, n, c, phi), _head_chunks(k, heads, n, c, phi)
            vh = _head_chunks(v, heads, n, c)
            rows = qh.shape[0] // n  # G·B sequences of N chunks
            states = _state_scan(kh, vh, rows)  # (G·B·N, F, Dv)
            norms = _exclusive_scan(kh.sum(dim=1).view(rows, n, f)).view(-1, f, 1)
            scores = torch.bmm(qh, kh.transpose(1, 2)).tril_()  # (G·B·N, C, C)
            num = torch.bmm(scores, vh).baddbmm_(qh, states)  # (G·B·N, C, Dv)
            den = torch.baddbmm(scores.sum(-1, keepdim=True), qh, norms)
            den += _head_chunks(eps_t.unsqueeze(-1), heads, n, c) if eps_t is not None else eps
            y = _head_view(out, heads, n, c)
            torch.div(num.view(y.shape), den.view(*y.shape[:3], 1), out=y)
            saved += [qh, kh, vh, states, norms, scores, den]  # one group's chunks, contiguous
        ctx.save_for_backward(out, *saved)
        ctx.shape, ctx.phi, ctx.groups = (b, t, h, f, dv, n, c), phi, groups
        return out[:, :t]

    @staticmethod
    def backward(ctx, grad):
        out, *saved = ctx.saved_tensors
        b, t, h, f, dv, n, c = ctx.shape
        tp = n * c
        grad = _pad_time(grad, tp)
        dq, dk = grad.new_empty(b, tp, h, f), grad.new_empty(b, tp, h, f)
        d_v = grad.new_empty(b, tp, h, dv)
        for index, heads in enumerate(ctx.groups):
            qh, kh, vh, states, norms, scores, den = saved[7 * index:7 * index + 7]
            rows = qh.shape[0] // n
            g_num, g_den = _output_grads(grad, out, den, heads, n, c)
            mixed = torch.baddbmm(g_den, g_num, vh.transpose(1, 2)).tril_()  # B
            dq_h = torch.bmm(mixed, kh).baddbmm_(g_num, states.transpose(1, 2))
            rev = _state_scan(qh, g_num, rows, reverse=True)
            rev_norm = _exclusive_scan(torch.bmm(g_den.transpose(1, 2), qh).view(rows, n, f), reverse=True)
            dk_h = torch.bmm(mixed.transpose(1, 2), qh).baddbmm_(vh, rev.transpose(1, 2))
            dv_h = torch.bmm(scores.transpose(1, 2), g_num).baddbmm_(kh, rev)
            slope = ctx.phi  # through φ: slope min(φ, 1) (``_EluPlusOne``), from φ's output qh, kh
            _scatter_heads(dq_h, dq, heads, g_den, norms.view(-1, f), qh if slope else None)
            _scatter_heads(dk_h, dk, heads, None, rev_norm.view(-1, f), kh if slope else None)
            _scatter_heads(dv_h, d_v, heads)
        return dq[:, :t], dk[:, :t], d_v[:, :t], None, None, None


def _output_grads(grad, out, den, heads, n, c):
    """(g_num, g_den) of heads ``heads``, each (G·B·N, C, ·): g_num = dy / den, g_den = −Σ g_num·y."""
    grad_view = _head_view(grad, heads, n, c)  # (G, B·N, C, Dv)
    g_num = torch.empty(grad_view.shape, dtype=grad.dtype, device=grad.device)
    torch.div(grad_view, den.view(*grad_view.shape[:3], 1), out=g_num)
    g_den = (g_num * _head_view(out, heads, n, c)).sum(-1, keepdim=True).neg_()
    return g_num.view(-1, c, grad.shape[-1]), g_den.reshape(-1, c, 1)


def _scatter_heads(group, full, heads, weight=None, vec=None, phi_out=None):
    """full[:, :, heads] = (group + weight ⊗ vec) ⊙ min(phi_out, 1), in place: group, phi_out
    (G·B·N, C, X) (group is modified), weight (G·B·N, C, 1) or None (1), vec (G·B·N, X) per chunk or
    None (nothing added), phi_out None (no slope)."""
    c = group.shape[1]
    view = _head_view(full, heads, full.shape[1] // c, c)
    if vec is not None:
        vec = vec.view(-1, 1, group.shape[-1])
        if weight is None:
            group += vec
        else:
            group.addcmul_(weight, vec)
    if phi_out is not None:
        torch.mul(group.view(view.shape), phi_out.view(view.shape).clamp(max=1.0), out=view)
    else:
        view.copy_(group.view(view.shape))


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
    """FLOPs of causal ``linear_attention`` for one (batch, head), as the PyTorch path implements it
    (padding counted; a multiply-add = 2 FLOPs; N = ⌈T/C⌉ chunks). The C kernel
    (``stripes.kernels.causal_attention``) does not pad and has no scan additions, but recomputes
    the scores in the backward (2·T·C·F more): within a few % of this count.

    Forward: chunk states kᵀv and q·S 4·T·F·Dv, scores 2·T·C·F, A·v 2·T·C·Dv, the two scans
    ((N − 1)·width additions each),
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


def _elu_plus_one_values(x: torch.Tensor) -> torch.Tensor:
    """max(x, 0) + exp(min(x, 0)) = elu(x) + 1, a new tensor."""
    return x.clamp(max=0.0).exp_().add_(x.clamp(min=0.0))


class _EluPlusOne(torch.autograd.Function):
    """φ(x) = elu(x) + 1 = max(x, 0) + exp(min(x, 0)), with dφ/dx = min(φ(x), 1).

    (For x > 0, φ = x + 1 > 1 and the slope is 1; for x ≤ 0, φ = exp(x) ≤ 1 is its own slope.)
    Two exp/clamp passes instead of F.elu's expm1 plus a separate +1, and only φ is kept for the
    backward. Measured on the 2-core box (one thread, 4 Mi floats): 5.5 ms vs 9.0 ms forward.
    """

    @staticmethod
    def forward(ctx, x):
        y = _elu_plus_one_values(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return y.clamp(max=1.0).mul_(grad)


def elu_plus_one(x: torch.Tensor) -> torch.Tensor:
    """φ(x) = elu(x) + 1 [Katharopoulos et al. 2020] elementwise, any shape; the same values and
    gradient as ``F.elu(x) + 1`` (tests/test_attention.py)."""
    return _EluPlusOne.apply(x)


class EluFeatureMap(nn.Module):
    """φ(x) = elu(x) + 1 [Katharopoulos et al. 2020], computed in float32; width unchanged."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.out_dim = in_dim

    def forward_qk(self, q: torch.Tensor, k: torch.Tensor):
        acc = torch.float64 if q.dtype == torch.float64 else torch.float32
        return elu_plus_one(q.to(acc)), elu_plus_one(k.to(acc))


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
                    eps, phi = self.feature_map.scaled_eps(self.eps, log_scale), None
                else:  # φ = elu + 1, applied inside linear_attention (fused on the causal CPU path)
                    acc = torch.float64 if q_t.dtype == torch.float64 else torch.float32
                    q_f, k_f, eps, phi = q_t.to(acc), k_t.to(acc), self.eps, "elu"
                y = linear_attention(q_f, k_f, v, causal=causal, chunk_size=self.chunk_size, eps=eps,
                                     impl=self.attention_impl, dtype=fused_dtype, feature_map=phi)
            y = F.dropout(y, self.dropout, self.training)
        else:
            y = F.scaled_dot_product_attention(
                q_t.transpose(1, 2), k_t.transpose(1, 2).to(q_t.dtype), v.transpose(1, 2).to(q_t.dtype),
                is_causal=causal, dropout_p=self.dropout if self.training else 0.0,
                scale=1.0 / math.sqrt(self.head_dim),
            ).transpose(1, 2).to(x.dtype)
        return self.out_proj(y.reshape(b, t, self.d_model))
