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

Computation (``stripes.pe.spe_codes.sine_codes``, one autograd Function for both sides): the query
phases are folded into the query side's noise rows (cos(a+θ)Zc + sin(a+θ)Zs = cos a Zc' + sin a Zs'
with (Zc', Zs') rotated by θ), so cos a and sin a are evaluated once per token for both sides; the
gains/gate scales multiply the noise rows in the forward and are applied to the token sums in the
backward, so no matmul is spent on a gradient of the noise. Per chunk of tokens: one (C, (2K+1)·D)
× ((2K+1)·D, R) product per side forward and one transposed product backward. On the CPU in float32
the elementwise work (angles, one sincos per head, token, k, d shared by both sides, the codes and
the backward's w, v, dx and token sums) runs in the fused C kernel ``stripes/kernels/spe.c``
(``spe_native``; there the chunk loop, products included, is one C call per pass); float64, CUDA and ``STRIPES_NATIVE=0`` use the PyTorch Function (same numbers up
to float32 rounding; the same noise for a seed either way).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import PositionalEncoding, compute_dtype, register_pe
from .spe_codes import sine_codes


#: Tokens per chunk of ``sine_codes``: (H, C, (2K+1)·D) codes live at once (4 × 128 × 384 float32 =
#: 768 KiB at H = 4, D = 128, K = 1), so every elementwise pass runs in L2 (0.21 ns per element and
#: pass vs 0.39 at C = 512 on the 2-core box). Timed at T = 8192, one thread, forward+backward of
#: both sides: C = 64/128/192/256/512 → 139/132/131/136/137 ms (interleaved, best of 8). The native
#: kernel (spe_native) is flat over C = 64/96/128/192: 92/91/90/89 ms (same box, noisy).
CHUNK_TOKENS = 128


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
        """(B,T,H,D), (B,T,P), noise (Z, ε) → (B,T,H,R) codes of eq. (6)–(7) for one side.

        ``query`` adds the phases θ. Raises ValueError on bad shapes (``check``)."""
        return self._codes(pos, noise, [(x, query)])[0]

    def _codes(self, pos: torch.Tensor, noise, sides) -> list[torch.Tensor]:
        """Codes of every (x, query) side with one noise draw, through ``sine_codes``.

        Gains, gate and the (R·D)^{-1/4} scale become the per-row scales s, t of the codes; Z is
        reordered to rows (cos/sin, k, d) and ε appended as the gate rows (a permutation of the same
        numbers: the noise of a seed is unchanged, spec decision 12)."""
        x0 = sides[0][0]
        pos = self.check(x0, pos)
        acc = compute_dtype(x0)
        b, t, h, d = x0.shape
        k, r = self.num_sines, self.num_realizations
        z, eps = (n.to(acc) for n in noise)
        scale = (r * d) ** -0.25
        s = nn.functional.softplus(self.gain_logits.to(acc)) * scale  # (H, D, K)
        rows = z.view(h, d, k, 2, r).permute(0, 3, 2, 1, 4).reshape(h, 2 * k * d, r)  # (cos/sin, k, d)
        gate_scale = None
        if self.gated:
            gate = torch.sigmoid(self.gate_logits.to(acc))  # (H, D)
            s = s * torch.sqrt(1 - gate).unsqueeze(-1)
            gate_scale = torch.sqrt(gate) * scale
            rows = torch.cat([rows, eps], dim=1)
        omega = (2 * math.pi * self.frequencies.to(acc)).permute(0, 3, 2, 1).reshape(h, self.pos_dim, k * d)
        phase = self.phases.to(acc).transpose(1, 2)  # (H, K, D)
        args = []
        for x, query in sides:
            self.check(x, pos)
            args.append((x.to(acc).reshape(b * t, h, d), phase if query else None))
        outs = sine_codes(pos.reshape(b * t, pos.shape[-1]), omega, s.transpose(1, 2), gate_scale, rows, args,
                          CHUNK_TOKENS)
        return [o.view(b, t, h, r).to(x.dtype) for o, (x, _) in zip(outs, sides)]

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Key-side transform with a fresh noise draw (use ``forward_qk`` for attention)."""
        return self.transform(x, pos, self.draw_noise(x.device), query=False)

    def forward_qk(self, q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor):
        """(q̃, k̃), (B,T,H,R) each, from one noise draw: phases on the query side only."""
        noise = self.draw_noise(q.device)
        qt, kt = self._codes(pos, noise, [(q, True), (k, False)])
        return qt, kt


@register_pe("spe")
def build_spe(num_heads, head_dim, pos_dim, num_realizations: int = 64, num_sines: int = 1,
              gated: bool = True, gate_init: float = -1.0) -> SineSPE:
    return SineSPE(num_heads, head_dim, pos_dim, num_realizations=num_realizations,
                   num_sines=num_sines, gated=gated, gate_init=gate_init)
