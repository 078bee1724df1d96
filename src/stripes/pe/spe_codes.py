"""sineSPE codes of queries and keys in one autograd Function ([L] eq. 6–7 with the gate; spe.py).

For every side (queries, keys), token n, head h, with angles a[n,k,d] = φ[k,d] + pos[n]·ω[:,k,d]
(φ: the query phases, or none for keys):
    out[n,h,:] = Σ_{k,d} x_d s_kd (cos a_kd Zc[k,d,:] + sin a_kd Zs[k,d,:]) + Σ_d x_d t_d E[d,:],
with the per-row scales s (gains × (R·D)^{−1/4} × √(1−g)) and t (√g × (R·D)^{−1/4}) applied to the
codes, so the noise matrix z = [Zc, Zs interleaved per k; E] (J' = (2K+1)·D rows, or 2K·D without the
gate) enters as drawn and needs no gradient. Per chunk of tokens the codes
[x s cos a, x s sin a, x t] (H, C, J') are built in one buffer and multiplied by z in one bmm that
writes into the (N, H, R) output (no transposed copies).

Backward, per chunk, with dc = g zᵀ split as (dC, dS, dE) and (c, s̃) = (cos a, sin a) recomputed:
    w = dC c + dS s̃,  v = dS c − dC s̃,
    dx = Σ_k s w + t dE,  ∂L/∂a = x s v,  ∂L/∂s = Σ_n x w,  ∂L/∂t = Σ_n x dE,
    ∂L/∂ω = Σ_n pos[n] ∂L/∂a,  ∂L/∂φ = Σ_n ∂L/∂a,
where the four token sums come from one small bmm of [pos, 1]ᵀ with a buffer holding
[x s v | x w | x dE]. No matmul for a gradient of z (the noise has none), so the backward costs one
(C, R)·(R, J') product per side and chunk, like the forward. Memory: the inputs plus (H, C, J')
buffers; nothing of size N·J' is kept.
"""

from __future__ import annotations

import torch


class _SineCodes(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pos, omega, s, t, z, chunk, *sides):
        n = pos.shape[0]
        h, k, d = s.shape
        cs, j, r = 2 * k * d, z.shape[1], z.shape[2]
        scaled = z * _row_scales(s, t).unsqueeze(-1)  # (H, J', R): s and t folded into the rows
        c_max = min(chunk, n)
        angle = pos.new_empty(h, c_max, k, d)
        codes = pos.new_empty(h, c_max, j + j % 2)  # even row stride (complex views in backward)
        outs = []
        for x, phase in zip(sides[0::2], sides[1::2]):
            out = x.new_empty(n, h, r)
            for start in range(0, n, chunk):
                stop = min(start + chunk, n)
                c = stop - start
                xc = x[start:stop].transpose(0, 1)  # (H, C, D)
                a = _angles(pos[start:stop], omega, phase, angle[:, :c])
                trig = codes[:, :c, :cs].view(h, c, k, d, 2)
                torch.cos(a, out=trig[..., 0])
                torch.sin(a, out=trig[..., 1])
                trig.mul_(xc[:, :, None, :, None])
                if t is not None:
                    codes[:, :c, cs:j].copy_(xc)
                torch.bmm(codes[:, :c, :j], scaled, out=out[start:stop].transpose(0, 1))
            outs.append(out)
        ctx.save_for_backward(pos, omega, s, t, z, *sides)
        ctx.chunk = chunk
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        pos, omega, s, t, z, *sides = ctx.saved_tensors
        chunk, need = ctx.chunk, ctx.needs_input_grad
        n, p = pos.shape
        h, k, d = s.shape
        cs, j = 2 * k * d, z.shape[1]
        gated = t is not None
        c_max = min(chunk, n)
        angle = pos.new_empty(h, c_max, k, d)
        inverse = torch.view_as_complex(pos.new_empty(h, c_max, k, d, 2))  # e^{−ia}
        dcodes = pos.new_empty(h, c_max, j + j % 2)
        terms = pos.new_empty(h, c_max, j)  # [x w, x v interleaved per (k, d) | x dE]
        pos_one = torch.cat([pos, pos.new_ones(n, 1)], dim=1)
        zt, neg_omega = z.transpose(1, 2), -omega
        total = pos.new_zeros(h, p + 1, j)
        grads_out = []
        for side, (x, phase) in enumerate(zip(sides[0::2], sides[1::2])):
            g = grads[side]
            if g is None:
                grads_out += [None, None]
                continue
            g = g.contiguous()
            dx = torch.empty_like(x) if need[6 + 2 * side] else None
            sums = torch.zeros_like(total)
            neg_phase = None if phase is None else -phase
            for start in range(0, n, chunk):
                stop = min(start + chunk, n)
                c = stop - start
                xc = x[start:stop].transpose(0, 1)  # (H, C, D)
                a = _angles(pos[start:stop], neg_omega, neg_phase, angle[:, :c])
                rot = torch.view_as_real(inverse[:, :c])
                torch.cos(a, out=rot[..., 0])
                torch.sin(a, out=rot[..., 1])
                dc = torch.bmm(g[start:stop].transpose(0, 1), zt, out=dcodes[:, :c, :j])
                # (dC + i dS) e^{−ia} = w + i v
                wv = torch.view_as_complex(dcodes[:, :c, :cs].view(h, c, k, d, 2)).mul_(inverse[:, :c])
                wv = torch.view_as_real(wv)
                if dx is not None:
                    dxc = dx[start:stop].transpose(0, 1)
                    if k == 1:
                        torch.mul(wv[:, :, 0, :, 0], s[:, 0].unsqueeze(1), out=dxc)
                    else:
                        torch.sum(wv[..., 0] * s.unsqueeze(1), dim=2, out=dxc)
                    if gated:
                        dxc.addcmul_(dc[:, :, cs:], t.unsqueeze(1))
                tm = terms[:, :c]
                torch.mul(wv, xc[:, :, None, :, None], out=tm[:, :, :cs].view(h, c, k, d, 2))
                if gated:
                    torch.mul(dc[:, :, cs:], xc, out=tm[:, :, cs:])
                sums.baddbmm_(pos_one[start:stop].T.expand(h, -1, -1), tm)
            total += sums
            d_phase = None
            if phase is not None and need[7 + 2 * side]:
                d_phase = sums[:, p, :cs].view(h, k, d, 2)[..., 1] * s
            grads_out += [dx, d_phase]
        pairs = total[:, :, :cs].view(h, p + 1, k, d, 2)
        d_omega = (pairs[:, :p, :, :, 1] * s.unsqueeze(1)).reshape(h, p, k * d) if need[1] else None
        d_s = pairs[:, p, :, :, 0].contiguous() if need[2] else None
        d_t = total[:, p, cs:].contiguous() if gated and need[3] else None
        return (None, d_omega, d_s, d_t, None, None, *grads_out)


def _row_scales(s: torch.Tensor, t) -> torch.Tensor:
    """(H, J') scale of each noise row: s_kd for both rows of (k, d), then t_d for the gate rows."""
    h = s.shape[0]
    rows = s.unsqueeze(-1).expand(*s.shape, 2).reshape(h, -1)
    return rows if t is None else torch.cat([rows, t], dim=1)


def _angles(pos: torch.Tensor, omega: torch.Tensor, phase, out: torch.Tensor) -> torch.Tensor:
    """a = φ + pos·ω into ``out`` (H, C, K, D): pos (C, P), ω (H, P, K·D), φ (H, K, D) or None."""
    h, c = out.shape[:2]
    flat = out.view(h, c, -1)
    lhs = pos.expand(h, -1, -1)
    if phase is None:
        torch.bmm(lhs, omega, out=flat)
    else:
        torch.baddbmm(phase.reshape(h, 1, -1), lhs, omega, out=flat)
    return out


def sine_codes(pos: torch.Tensor, omega: torch.Tensor, s: torch.Tensor, t: torch.Tensor | None,
               z: torch.Tensor, sides, chunk: int) -> tuple[torch.Tensor, ...]:
    """SPE codes of each side (module doc) in one Function; one (N, H, R) output per side.

    Args:
        pos: (N, P) positions (N = B·T tokens), compute dtype.
        omega: (H, P, K·D) angular frequencies 2π f, laid out (k, d) with d fastest.
        s: (H, K, D) sine-row scales; t: (H, D) gate-row scales, or None without the gate.
        z: (H, J', R) noise rows in the order (k, [cos, sin], d), then the D gate rows (if gated).
        sides: pairs (x (N, H, D), phase (H, K, D) or None).
        chunk: tokens per chunk (≥ 1).
    Raises:
        ValueError: mismatched shapes.
    """
    n, p = pos.shape
    h, d = s.shape[0], s.shape[-1]
    k = s.shape[1]
    rows = (2 * k + (t is not None)) * d
    if omega.shape != (h, p, k * d) or z.shape[:2] != (h, rows) or chunk < 1:
        raise ValueError(f"stripes/pe/spe_codes.py: bad shapes pos {tuple(pos.shape)}, omega "
                         f"{tuple(omega.shape)}, s {tuple(s.shape)}, z {tuple(z.shape)}, chunk {chunk}")
    flat = []
    for x, phase in sides:
        if x.shape != (n, h, d) or (phase is not None and phase.shape != s.shape):
            raise ValueError(f"stripes/pe/spe_codes.py: side x {tuple(x.shape)} / phase must be "
                             f"({n}, {h}, {d}) / {tuple(s.shape)}")
        flat += [x, phase]
    return _SineCodes.apply(pos, omega, s, t, z, chunk, *flat)
