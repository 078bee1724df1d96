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

Computation. On CPU float32 inputs (training and the benchmark) a fused C kernel does the work
(``stripes.kernels.fourier``, compiled at first use; ``stripes.kernels.native``): the key-side angle
a = 2π f·p needs one sincos per (token, head, d, ω), and the query side reuses it through
cos(a + θ) = cos a cos θ − sin a sin θ, sin(a + θ) = sin a cos θ + cos a sin θ, so ``forward_qk``
costs T·H·D·Nf sincos in the forward and as many again in the backward (which recomputes them and
accumulates the gradients of q, k, f, θ, λ over tokens in one pass). Nothing of size T·H·D·Nf is
stored; memory is O(B·T·H·(D + Nf)). Single-threaded. Measured on the 2-core Xeon (T = 8192, B = 1,
H = 4, D = 128, Nf = 8, P = 1, one thread, best of 5, A/B interleaved): PE forward + backward of
q and k 66–71 ms (the C calls: forward 24–30 ms, backward 35–41 ms) against 424–445 ms for the
PyTorch path below; the attention block 141–149 ms against 510–553 (causal SDPA 1994 ms: 14.1×).

The PyTorch implementation (``_PooledFourierFeatures``) is the reference and the fallback: float64
inputs, CUDA tensors, env ``STRIPES_NATIVE=0``, no C compiler or a failed compile (warned once).
It forms the sum over d per token as a (1×D)·(D×2Nf) product, chunk by chunk over the B·T tokens,
so no (B, T, H, D, Nf) tensor is ever built: memory is O(B·T·H·(D + Nf)) plus one chunk's
(C, H, D, 2Nf) oscillators. The sine is the cosine at the angle − π/2, so one ``addmm`` (angles for
both) and one ``cos`` give the whole bank; the backward pass recomputes it per chunk (one cosine
pass, since d cos/dangle is the other slot's value) and contracts over tokens with matmuls. Both
are exact (to rounding) against the direct formula in float64 (tests/test_pe.py,
tests/test_fourier_kernel.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from stripes.kernels import fourier as fourier_kernel

from .base import PositionalEncoding, compute_dtype, register_pe

#: Tokens per chunk of the PyTorch path of ``pooled_fourier_features`` (the native kernel works per
#: token and ignores it): (C, H·D·2Nf) oscillators live at once (16 × 8192 float32 = 512 KiB at
#: H = 4, D = 128, Nf = 8). Measured on the 2-core CPU (attention block at T = 8192, forward +
#: backward, one thread, CPU time): C = 16/32 554–577 ms, 8: 609, 64: 606–629, 128: 694, 1024: 1563.
CHUNK_TOKENS = 16


class _PooledFourierFeatures(torch.autograd.Function):
    """out[n,h,(ω,s)] = Σ_d x[n,h,d] G[h,d,ω] cos(2π f[h,d,ω]·p[n] + θ[h,d,ω] − s·π/2), s ∈ {0,1}.

    Every per-chunk tensor lives in buffers allocated once per call (fresh chunk-sized tensors
    cost a page fault per 4 KiB on every allocation, which dominated the time)."""

    @staticmethod
    def forward(ctx, x, pos, frequencies, phases, gains, chunk):
        n, h, d = x.shape
        nf = frequencies.shape[2]
        j = 2 * nf
        slots = torch.tensor([0.0, -math.pi / 2], dtype=x.dtype, device=x.device)
        # (P, H·D·Nf·2): each frequency twice (cos slot, sin slot); offsets θ and θ − π/2
        freq2 = (2 * math.pi * frequencies).permute(3, 0, 1, 2).unsqueeze(-1).expand(-1, h, d, nf, 2)
        freq2 = freq2.reshape(frequencies.shape[-1], -1)
        offset = (phases.unsqueeze(-1) + slots).reshape(1, -1)
        gain2 = gains.unsqueeze(-1).expand(h, d, nf, 2).reshape(1, -1)
        out = x.new_empty(n, h, j)
        bank = x.new_empty(min(chunk, n), h * d * j)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            c = stop - start
            angles = torch.addmm(offset, pos[start:stop], freq2, out=bank[:c])
            angles.cos_().mul_(gain2)
            torch.bmm(x[start:stop].view(c * h, 1, d), angles.view(c * h, d, j),
                      out=out[start:stop].view(c * h, 1, j))
        ctx.save_for_backward(x, pos, freq2, offset, gain2)
        ctx.chunk, ctx.nf = chunk, nf
        return out

    @staticmethod
    def backward(ctx, grad):
        x, pos, freq2, offset, gain2 = ctx.saved_tensors
        n, h, d = x.shape
        nf, chunk = ctx.nf, ctx.chunk
        j = 2 * nf
        need_x, _, need_f, need_th, need_g = ctx.needs_input_grad[:5]
        grad = grad.contiguous()
        # the other slot's upstream gradient: d cos(a)/da = −sin(a) is the other slot's cosine
        grad_swap = grad.view(n, h, nf, 2).flip(-1).reshape(n, h, j)
        dx = x.new_empty(n, h, d) if need_x else None
        dgain = x.new_zeros(1, h * d * j) if need_g else None
        need_angle = need_f or need_th
        dangle = x.new_zeros(pos.shape[1] + 1, h * d * j) if need_angle else None
        pos_one = torch.cat([pos, pos.new_ones(n, 1)], dim=1) if need_angle else None  # (N, P + 1)
        ones = x.new_ones(1, chunk)
        bank = x.new_empty(min(chunk, n), h * d * j)
        work = torch.empty_like(bank)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            c = stop - start
            cosines = torch.addmm(offset, pos[start:stop], freq2, out=bank[:c]).cos_()
            tmp = work[:c]
            if need_x:
                torch.mul(cosines, gain2, out=tmp)
                torch.bmm(tmp.view(c * h, d, j), grad[start:stop].view(c * h, j, 1),
                          out=dx[start:stop].view(c * h, d, 1))
            if not (need_g or need_angle):
                continue
            cosines.view(c, h, d, j).mul_(x[start:stop].view(c, h, d, 1))  # x·cos
            if need_g:
                torch.mul(cosines.view(c, h, d, j), grad[start:stop].view(c, h, 1, j), out=tmp.view(c, h, d, j))
                dgain.addmm_(ones[:, :c], tmp)
            if need_angle:
                cosines.view(c, h, d, j).mul_(grad_swap[start:stop].view(c, h, 1, j))
                dangle.addmm_(pos_one[start:stop].T, cosines)
        dfreq = dphase = dgains = None
        if need_angle:
            # Σ_n dL/dangle (and Σ_n p_n dL/dangle): G · (slot-0 minus slot-1 sums of x·cos·g_swap)
            dangle = dangle.view(-1, h, d, nf, 2)
            dangle = (dangle[..., 0] - dangle[..., 1]) * gain2.view(h, d, nf, 2)[..., 0]
            if need_f:
                dfreq = (2 * math.pi * dangle[:-1]).permute(1, 2, 3, 0)
            if need_th:
                dphase = dangle[-1]
        if need_g:
            dgains = dgain.view(h, d, nf, 2).sum(-1)
        return dx, None, dfreq, dphase, dgains, None


def pooled_fourier_features(x: torch.Tensor, pos: torch.Tensor, frequencies: torch.Tensor,
                            phases: torch.Tensor | None, gains: torch.Tensor,
                            chunk_tokens: int | None = None) -> torch.Tensor:
    """Pooled F-StrIPE features q̃ = Σ_d x_d Ω_d(p) diag(gains_d) ([F] eq. 6, 9 without the 1/√Nf).

    Args:
        x: (B, T, H, D) queries or keys.
        pos: (B, T, P) positions (label units); no gradient flows to them.
        frequencies: (H, D, Nf, P) in cycles per label unit.
        phases: (H, D, Nf) radians, or None for 0 (the key side).
        gains: (H, D, Nf).
        chunk_tokens: tokens per chunk of the PyTorch path (memory O(chunk · H·D·Nf) for the
            oscillators); None = ``CHUNK_TOKENS``. The native kernel (CPU float32) ignores it.

    Returns:
        (B, T, H, 2Nf), entries 2ω = Σ_d x_d gains_dω cos(2π f_dω·p + θ_dω) and 2ω+1 the sines,
        in the dtype of x (computed in float32, or float64 for float64 input).

    Raises:
        ValueError: on mismatched shapes or chunk_tokens < 1.
        MemoryError: if the native kernel cannot allocate its O(H·D·Nf·P) scratch.
    """
    b, t, h, d = x.shape
    _check_shapes(x, pos, frequencies)
    query = phases is not None
    chunk_tokens = CHUNK_TOKENS if chunk_tokens is None else chunk_tokens
    if chunk_tokens < 1:
        raise ValueError(f"stripes/pe/fstripe.py: chunk_tokens must be >= 1, got {chunk_tokens}")
    acc = compute_dtype(x)
    flat = x.to(acc).reshape(b * t, h, d)
    pos, frequencies, gains = pos.to(acc).reshape(b * t, pos.shape[-1]), frequencies.to(acc), gains.to(acc)
    phases = torch.zeros_like(gains) if phases is None else phases.to(acc)
    if fourier_kernel.usable(flat, pos, frequencies, phases, gains):
        pair = fourier_kernel.fused_fourier_features(flat if query else None, None if query else flat,
                                                     pos, frequencies, phases, gains)
        out = pair[0] if query else pair[1]
    else:
        out = _PooledFourierFeatures.apply(flat.contiguous(), pos.contiguous(), frequencies, phases,
                                           gains, int(chunk_tokens))
    return out.view(b, t, h, out.shape[-1]).to(x.dtype)


def pooled_fourier_features_qk(q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor,
                               frequencies: torch.Tensor, phases: torch.Tensor,
                               gains: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q̃, k̃) = (pooled features of q with ``phases``, of k with phase 0), sharing the oscillators.

    Shapes, units and errors as ``pooled_fourier_features`` (q and k both (B, T, H, D)). With the
    native kernel one sincos per (token, head, d, ω) serves both sides (module doc); otherwise the
    two sides are computed one after the other by the PyTorch implementation.
    """
    if q.shape != k.shape:
        raise ValueError(f"stripes/pe/fstripe.py: q {tuple(q.shape)} and k {tuple(k.shape)} differ")
    b, t, h, d = q.shape
    _check_shapes(q, pos, frequencies)
    acc = compute_dtype(q)
    flat_q, flat_k = q.to(acc).reshape(b * t, h, d), k.to(acc).reshape(b * t, h, d)
    flat_pos, freq, ph, g = pos.to(acc).reshape(b * t, pos.shape[-1]), frequencies.to(acc), phases.to(acc), gains.to(acc)
    if not fourier_kernel.usable(flat_q, flat_k, flat_pos, freq, ph, g):
        return (pooled_fourier_features(q, pos, frequencies, phases, gains),
                pooled_fourier_features(k, pos, frequencies, None, gains))
    qt, kt = fourier_kernel.fused_fourier_features(flat_q, flat_k, flat_pos, freq, ph, g)
    return qt.view(b, t, h, qt.shape[-1]).to(q.dtype), kt.view(b, t, h, kt.shape[-1]).to(k.dtype)


def _check_shapes(x, pos, frequencies):
    b, t, h, d = x.shape
    if frequencies.dim() != 4 or frequencies.shape[:2] != (h, d) or pos.shape != (b, t, frequencies.shape[3]):
        raise ValueError(f"stripes/pe/fstripe.py: x {tuple(x.shape)}, pos {tuple(pos.shape)} and "
                         f"frequencies {tuple(frequencies.shape)} do not fit (B,T,H,D), (B,T,P), (H,D,Nf,P)")


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
        """(B,T,H,D), (B,T,P) → (B,T,H,2Nf): [F] eq. 9 pooled, phases on the query side only."""
        pos = self.check(x, pos)
        gains = self.gains / math.sqrt(self.num_frequencies)
        return pooled_fourier_features(x, pos, self.frequencies, self.phases if query else None, gains)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Key-side transform (no phase)."""
        return self.transform(x, pos, query=False)

    def forward_qk(self, q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor):
        """(q̃, k̃): both sides at once (one set of oscillators with the native kernel)."""
        pos = self.check(q, pos)
        self.check(k, pos)
        gains = self.gains / math.sqrt(self.num_frequencies)
        return pooled_fourier_features_qk(q, k, pos, self.frequencies, self.phases, gains)


@register_pe("fstripe")
def build_fstripe(num_heads, head_dim, pos_dim, num_frequencies: int = 8,
                  init_scale: float = 0.05) -> FStripe:
    return FStripe(num_heads, head_dim, pos_dim, num_frequencies=num_frequencies,
                   init_scale=init_scale)
