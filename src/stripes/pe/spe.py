"""Stochastic positional encoding, sineSPE with gating ([L] Liutkus et al. 2021; [S] eq. 5–7).

Per head h and dimension d, K sines with frequency vectors f_k = σ(w_k)/2 ∈ [0, 0.5]^P (cycles per
label unit; w initialised at N(0,1) − 4, i.e. low), phases θ_k on the query side only, gains
softplus(λ_k):
    Ω_q(p)_{2k} = cos(2π f_k·p + θ_k), Ω_q(p)_{2k+1} = sin(2π f_k·p + θ_k); Ω_k without θ   (eq. 6)
    q̄_d(p) = Ω_q(p) diag(gains_d) Z_d,   k̄_d(p) = Ω_k(p) diag(gains_d) Z_d,   Z_d ~ N(0, 1/(2K))^{2K×R}
Gate g_d = σ(γ_d) mixes in positionless noise ε_d ~ N(0,1)^R shared by both sides:
    q̄_d ← √(1−g_d) q̄_d + √g_d ε_d (same for k̄_d),
and the pooled features (eq. 7) are q̃ = (R·D)^{−1/4} Σ_d q_d q̄_d ∈ R^R (likewise k̃). Hence
    E[q̃_m·k̃_n] = √(R/D) Σ_d q_md k_nd [(1−g_d) (1/2K) Σ_k gains_dk² cos(2π f_dk·(p_m−p_n) + θ_dk) + g_d].
Z and ε are drawn afresh at every call of ``forward_qk`` (one draw shared by queries, keys, batch
and time, so causality holds within a call), from the global RNG during training and from the
module's own generator once ``seed_noise(seed)`` was called (evaluation, spec decision 12: the same
checkpoint then gives the same numbers on every evaluation). ``forward`` alone is the key-side transform with its
own fresh draw; the attention layer always uses ``forward_qk``. Gate logits start at −1 (g ≈ 0.27),
gains logits at N(0,1) (our choices; [L]'s code is not copied). ``.frequencies``: (H, D, K, P).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import PositionalEncoding, compute_dtype, register_pe


#: Tokens per chunk of ``_ProjectedSinusoids``: (H, C, 2K·D) oscillators live at once (256 ×
#: 4 × 256 float32 = 1 MiB at H = 4, D = 128, K = 1), cache-resident and allocated once per call.
CHUNK_TOKENS = 256


class _ProjectedSinusoids(torch.autograd.Function):
    """out[h,n,:] = Σ_j x[h,n,d(j)] cos(angle[h,n,j]) Z[h,j,:], angle = offset[h,j] + pos[n]·freq[h,:,j].

    Inputs: x (H,N,D), pos (N,P), freq (H,P,J), offset (H,1,J), z (H,J,R) with J = (2K, D) in that
    order (slot s of sine k at angle − s·π/2, so the sines are cosines). Chunked over tokens with
    buffers allocated once; the backward recomputes the cosines and takes d cos/dangle from the
    other slot (−sin(a) = −cos(a − π/2), −sin(a − π/2) = cos(a)), so no sine is ever evaluated."""

    @staticmethod
    def forward(ctx, x, pos, freq, offset, z, chunk):
        h, n, d = x.shape
        j, r = z.shape[1], z.shape[2]
        out = x.new_empty(h, n, r)
        bank = x.new_empty(h, min(chunk, n), j)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            c = stop - start
            codes = torch.baddbmm(offset, pos[start:stop].expand(h, -1, -1), freq, out=bank[:, :c]).cos_()
            codes.view(h, c, j // d, d).mul_(x[:, start:stop].unsqueeze(2))
            out[:, start:stop] = torch.bmm(codes, z)
        ctx.save_for_backward(x, pos, freq, offset, z)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad):
        x, pos, freq, offset, z = ctx.saved_tensors
        h, n, d = x.shape
        j = z.shape[1]
        m = j // (2 * d)  # sines K
        need_x, _, need_f, need_o, need_z = ctx.needs_input_grad[:5]
        need_angle = need_f or need_o
        dx = torch.empty_like(x) if need_x else None
        dz = torch.zeros_like(z) if need_z else None
        d_angle_sum = x.new_zeros(h, pos.shape[1] + 1, j) if need_angle else None
        pos_one = torch.cat([pos, pos.new_ones(n, 1)], dim=1)
        cos_buf = x.new_empty(h, min(ctx.chunk, n), j)
        dcode_buf = torch.empty_like(cos_buf)
        work_buf = torch.empty_like(cos_buf)
        for start in range(0, n, ctx.chunk):
            stop = min(start + ctx.chunk, n)
            c = stop - start
            cosines = torch.baddbmm(offset, pos[start:stop].expand(h, -1, -1), freq, out=cos_buf[:, :c]).cos_()
            g = grad[:, start:stop]
            x_c = x[:, start:stop].unsqueeze(2)  # (H, C, 1, D)
            dcode = torch.bmm(g, z.transpose(1, 2), out=dcode_buf[:, :c])  # dL/dcodes (H, C, J)
            work = work_buf[:, :c]
            if need_x:
                slots = torch.mul(dcode, cosines, out=work).view(h, c, 2 * m, d)
                dx_c = torch.add(slots[:, :, 0], slots[:, :, 1], out=dx[:, start:stop])
                for s in range(2, 2 * m):  # (a sum over the size-2K axis into a slice was 10x slower)
                    dx_c.add_(slots[:, :, s])
            if need_z:
                torch.mul(cosines.view(h, c, 2 * m, d), x_c, out=work.view(h, c, 2 * m, d))
                dz.baddbmm_(work.transpose(1, 2), g)
            if need_angle:
                dcode.view(h, c, 2 * m, d).mul_(x_c)
                dc = dcode.view(h, c, m, 2, d)
                cs = cosines.view(h, c, m, 2, d)
                wk = work.view(h, c, m, 2, d)
                torch.mul(dc[:, :, :, 0], cs[:, :, :, 1], out=wk[:, :, :, 0])
                wk[:, :, :, 0].neg_()
                torch.mul(dc[:, :, :, 1], cs[:, :, :, 0], out=wk[:, :, :, 1])
                d_angle_sum.baddbmm_(pos_one[start:stop].T.expand(h, -1, -1), work)
        dfreq = d_angle_sum[:, :-1] if need_f else None
        doffset = d_angle_sum[:, -1:] if need_o else None
        return dx, None, dfreq, doffset, dz, None


class SineSPE(PositionalEncoding):
    def __init__(self, num_heads: int, head_dim: int, pos_dim: int, num_realizations: int = 64,
                 num_sines: int = 1, gated: bool = True, gate_init: float = -1.0):
        super().__init__(num_heads, head_dim, pos_dim)
        shape = (num_heads, head_dim, num_sines)
        self.num_realizations, self.num_sines, self.gated = num_realizations, num_sines, gated
        self.freq_logits = nn.Parameter(torch.randn(*shape, pos_dim) - 4.0)
        self.phases = nn.Parameter(torch.randn(shape))
        self.gain_logits = nn.Parameter(torch.randn(shape))
        self.gate_logits = nn.Parameter(torch.full((num_heads, head_dim), gate_init)) if gated else None
        self.out_dim = num_realizations
        self.noise_generator: torch.Generator | None = None

    def seed_noise(self, seed: int | None) -> None:
        """Draw Z and ε from a CPU generator seeded with ``seed`` (None: back to the global RNG).

        Spec decision 12: evaluation seeds every stochastic PE with the run's seed, so two
        evaluations of one checkpoint draw the same noise sequence. Not saved in checkpoints.
        """
        self.noise_generator = None if seed is None else torch.Generator().manual_seed(int(seed))

    @property
    def frequencies(self) -> torch.Tensor:
        """Frequency vectors σ(w)/2 in cycles per unit, (H, D, K, P)."""
        return torch.sigmoid(self.freq_logits) / 2

    def draw_noise(self, device=None, dtype=torch.float32, generator=None):
        """Z (H, D·2K, R) with variance 1/(2K) and the gate noise ε (H, D, R) with variance 1.

        ``generator`` defaults to the seeded one of ``seed_noise`` (drawn on the CPU, then moved to
        ``device``, so a seed gives the same noise on every device); else the global RNG on ``device``.
        """
        generator = self.noise_generator if generator is None else generator
        h, d, k, r = self.num_heads, self.head_dim, self.num_sines, self.num_realizations
        where = generator.device if generator is not None else device
        z = torch.randn(h, d * 2 * k, r, device=where, dtype=dtype, generator=generator)
        eps = torch.randn(h, d, r, device=where, dtype=dtype, generator=generator)
        return (z / math.sqrt(2 * k)).to(device), eps.to(device)

    def transform(self, x: torch.Tensor, pos: torch.Tensor, noise, query: bool) -> torch.Tensor:
        """(B,T,H,D), (B,T,P), noise (Z, ε) → (B,T,H,R) codes of eq. (6)–(7) (see the module doc).

        Computed per head as two matmuls: gains, gate and the (R·D)^{-1/4} scale are folded into
        the rows of Z and ε (small), the sines are cosines at angle − π/2, and the angles of both
        come from one batched matmul, so the per-token work is one cosine and one product over
        (D, 2K) (no stack/reshape copies of the (B,T,H,D,2K) codes)."""
        pos = self.check(x, pos)
        acc = compute_dtype(x)
        b, t, h, d = x.shape
        k, r = self.num_sines, self.num_realizations
        z, eps = (n.to(acc) for n in noise)
        scale = (r * d) ** -0.25
        rows = nn.functional.softplus(self.gain_logits.to(acc)) * scale  # (H, D, K)
        if self.gated:
            gate = torch.sigmoid(self.gate_logits.to(acc))  # (H, D)
            rows = rows * torch.sqrt(1 - gate).unsqueeze(-1)
        # layout (k, slot, d) with d innermost: the product with x broadcasts over a middle axis and
        # its gradient sums contiguous rows (a sum over a trailing axis of 2K was 3x slower)
        z_rows = (z.view(h, d, k, 2, r) * rows[..., None, None]).permute(0, 2, 3, 1, 4)  # (H,K,2,D,R)
        slots = torch.tensor([0.0, -math.pi / 2], dtype=acc, device=x.device).view(1, 1, 2, 1)
        offset = slots.expand(h, k, 2, d)
        if query:
            offset = offset + self.phases.to(acc).transpose(1, 2).unsqueeze(2)
        freq = (2 * math.pi * self.frequencies.to(acc)).permute(0, 3, 2, 1).unsqueeze(3)  # (H,P,K,1,D)
        freq = freq.expand(h, self.pos_dim, k, 2, d).reshape(h, self.pos_dim, -1)  # (H, P, 2K·D)
        xh = x.to(acc).reshape(b * t, h, d).transpose(0, 1).contiguous()  # (H, BT, D)
        out = _ProjectedSinusoids.apply(xh, pos.reshape(b * t, -1).contiguous(), freq,
                                        offset.reshape(h, 1, -1), z_rows.reshape(h, -1, r), CHUNK_TOKENS)
        if self.gated:
            out = torch.baddbmm(out, xh, eps * (torch.sqrt(gate) * scale).unsqueeze(-1))
        return out.transpose(0, 1).reshape(b, t, h, r).to(x.dtype)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Key-side transform with a fresh noise draw (use ``forward_qk`` for attention)."""
        return self.transform(x, pos, self.draw_noise(x.device), query=False)

    def forward_qk(self, q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor):
        noise = self.draw_noise(q.device)
        return self.transform(q, pos, noise, query=True), self.transform(k, pos, noise, query=False)


@register_pe("spe")
def build_spe(num_heads, head_dim, pos_dim, num_realizations: int = 64, num_sines: int = 1,
              gated: bool = True, gate_init: float = -1.0) -> SineSPE:
    return SineSPE(num_heads, head_dim, pos_dim, num_realizations=num_realizations,
                   num_sines=num_sines, gated=gated, gate_init=gate_init)
