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
        n, p = pos.shape
        h, _, kd = omega.shape
        d = s.shape[-1]
        k = kd // d
        j, r = z.shape[1], z.shape[2]
        c_max = min(chunk, n)
        angle = pos.new_empty(h, c_max, k, d)
        codes = pos.new_empty(h, c_max, j)
        outs = []
        for x, phase in zip(sides[0::2], sides[1::2]):
            out = x.new_empty(n, h, r)
            for start in range(0, n, chunk):
                stop = min(start + chunk, n)
                c = stop - start
                xc = x[start:stop].transpose(0, 1).unsqueeze(2)  # (H, C, 1, D)
                a = _angles(pos[start:stop], omega, phase, angle[:, :c])
                slots = codes[:, :c].view(h, c, -1, d)
                xs = torch.mul(xc, s.unsqueeze(1), out=slots[:, :, 1:2 * k:2])  # x·s, sin slots
                torch.mul(xs, torch.cos(a), out=slots[:, :, 0:2 * k:2])
                xs.mul_(a.sin_())
                if t is not None:
                    torch.mul(xc[:, :, 0], t.unsqueeze(1), out=slots[:, :, 2 * k])
                torch.bmm(codes[:, :c], z, out=out[start:stop].transpose(0, 1))
            outs.append(out)
        ctx.save_for_backward(pos, omega, s, t, z, *sides)
        ctx.chunk = chunk
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        pos, omega, s, t, z, *sides = ctx.saved_tensors
        chunk = ctx.chunk
        n, p = pos.shape
        h, _, kd = omega.shape
        d = s.shape[-1]
        k = kd // d
        j = z.shape[1]
        gated = t is not None
        c_max = min(chunk, n)
        angle = pos.new_empty(h, c_max, k, d)
        cos_v = torch.empty_like(angle)
        w_buf = torch.empty_like(angle)
        dcodes = pos.new_empty(h, c_max, j)
        # token sums: [x s v (K·D) | x w (K·D) | x dE (D)] against [pos, 1]
        terms = pos.new_empty(h, c_max, 2 * k + int(gated), d)
        pos_one = torch.cat([pos, pos.new_ones(n, 1)], dim=1)
        need = ctx.needs_input_grad
        zt = z.transpose(1, 2)
        total = pos.new_zeros(h, p + 1, terms[0, 0].numel())
        grads_out = []
        for side, (x, phase) in enumerate(zip(sides[0::2], sides[1::2])):
            g = grads[side]
            if g is None:
                grads_out += [None, None]
                continue
            g = g.contiguous()
            dx = torch.empty_like(x) if need[6 + 2 * side] else None
            sums = torch.zeros_like(total)
            for start in range(0, n, chunk):
                stop = min(start + chunk, n)
                c = stop - start
                xc = x[start:stop].transpose(0, 1).unsqueeze(2)  # (H, C, 1, D)
                a = _angles(pos[start:stop], omega, phase, angle[:, :c])
                cos = torch.cos(a, out=cos_v[:, :c])
                sin = a.sin_()
                dc = torch.bmm(g[start:stop].transpose(0, 1), zt, out=dcodes[:, :c]).view(h, c, -1, d)
                d_cos, d_sin = dc[:, :, 0:2 * k:2], dc[:, :, 1:2 * k:2]
                w = torch.mul(d_cos, cos, out=w_buf[:, :c]).addcmul_(d_sin, sin)
                v = cos.mul_(d_sin).addcmul_(d_cos, sin, value=-1)
                if dx is not None:
                    dxc = dx[start:stop].transpose(0, 1)
                    if k == 1:
                        torch.mul(w[:, :, 0], s, out=dxc)
                    else:
                        torch.sum(w * s.unsqueeze(1), dim=2, out=dxc)
                    if gated:
                        dxc.addcmul_(dc[:, :, 2 * k], t.unsqueeze(1))
                tm = terms[:, :c]
                torch.mul(v, xc, out=tm[:, :, :k]).mul_(s.unsqueeze(1))
                torch.mul(w, xc, out=tm[:, :, k:2 * k])
                if gated:
                    torch.mul(dc[:, :, 2 * k], xc[:, :, 0], out=tm[:, :, 2 * k])
                sums.baddbmm_(pos_one[start:stop].T.expand(h, -1, -1), tm.view(h, c, -1))
            total += sums
            d_phase = sums[:, p, :kd].reshape(phase.shape) if phase is not None and need[7 + 2 * side] else None
            grads_out += [dx, d_phase]
        d_omega = total[:, :p, :kd] if need[1] else None
        d_s = total[:, p, kd:2 * kd].reshape(s.shape) if need[2] else None
        d_t = total[:, p, 2 * kd:].reshape(t.shape) if gated and need[3] else None
        return (None, d_omega, d_s, d_t, None, None, *grads_out)


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
