"""sineSPE codes of queries and keys in one autograd Function ([L] eq. 6–7 with the gate; spe.py).

For every side (queries, keys), token n, head h, with the shared angles a[n,k,d] = pos[n]·ω[:,k,d]:
    out[n,h,:] = Σ_{k,d} x_d s_kd (cos a_kd Zc'[k,d,:] + sin a_kd Zs'[k,d,:]) + Σ_d x_d t_d E[d,:],
where s (gains × (R·D)^{−1/4} × √(1−g)) and t (√g × (R·D)^{−1/4}) are per-row scales and
(Zc', Zs') = (cos φ Zc + sin φ Zs, cos φ Zs − sin φ Zc) are the noise rows rotated by the side's phases
φ (queries; none for keys), so that x cos a·Zc' + x sin a·Zs' = x cos(a+φ)·Zc + x sin(a+φ)·Zs and
cos a, sin a are shared by both sides. z = [Zc; Zs; E] (rows (cos/sin, k, d), then the D gate rows)
enters as drawn and has no gradient. Per chunk of tokens, cos a and sin a are computed once; per side
the codes [x cos a, x sin a, x] (H, C, (2K+1)·D) are built in one buffer and multiplied by the
scaled, rotated rows in one bmm that writes into the (N, H, R) output (no transposed copies).

Backward, per chunk and side, with dc = g z'ᵀ (z' the rotated, unscaled rows) split as (dC, dS, dE)
and (cos a, sin a) recomputed:
    w = dC cos a + dS sin a,  v = dS cos a − dC sin a,
    dx = Σ_k s w + t dE,  ∂L/∂a = x s v,  ∂L/∂s = Σ_n x w,  ∂L/∂t = Σ_n x dE,
    ∂L/∂ω = s Σ_n pos[n] x v,  ∂L/∂φ = s Σ_n x v  (the phases enter as a + φ),
the token sums coming from one small bmm of [pos, 1]ᵀ with a buffer [x w | x v | x dE]. No matmul is
spent on a gradient of z, so the backward costs one (C, R)·(R, J') product per side and chunk, like
the forward. Memory: the inputs plus (H, C, J') buffers; nothing of size N·J' is kept.

``sine_codes`` runs this in the fused C kernel (``spe_native``, ``stripes/kernels/spe.c``) for CPU
float32 inputs with 1 or 2 sides: the same chunks and products (sgemm), with the angles, the one sincos per
(head, token, k, d) shared by both sides, the codes, w, v, dx and the token sums in C (float32 sums
per chunk, added into float64). ``_SineCodes`` here is the reference and the fallback (float64,
CUDA, ``STRIPES_NATIVE=0``, no compiler, more than two sides).
"""

from __future__ import annotations

import torch


class _SineCodes(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pos, omega, s, t, z, chunk, *sides):
        n = pos.shape[0]
        h, k, d = s.shape
        j, r = z.shape[1], z.shape[2]
        gated = t is not None
        rotated = [_rotate_rows(z, phase, k, d) for phase in sides[1::2]]
        scales = _row_scales(s, t).unsqueeze(-1)
        scaled = [rows * scales for rows in rotated]  # (H, J', R): φ, s and t folded into the noise
        c_max = min(chunk, n)
        angle = pos.new_empty(h, c_max, k, d)
        trig = pos.new_empty(h, c_max, 2 * k, d)  # cos a_k, sin a_k for k = 1…K
        codes = pos.new_empty(h, c_max, 2 * k + 1, d)  # [x cos, x sin (per k) | x]
        outs = [x.new_empty(n, h, r) for x in sides[0::2]]
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            c = stop - start
            _trig(pos[start:stop], omega, angle[:, :c], trig[:, :c])
            for x, z_side, out in zip(sides[0::2], scaled, outs):
                cd = codes[:, :c]
                xc = cd[:, :, 2 * k:].copy_(x[start:stop].transpose(0, 1).unsqueeze(2))
                torch.mul(trig[:, :c], xc, out=cd[:, :, :2 * k])
                flat = cd.view(h, c, -1)[:, :, :j]  # without the x slot when there is no gate
                torch.bmm(flat, z_side, out=out[start:stop].transpose(0, 1))
        ctx.save_for_backward(pos, omega, s, t, z, *sides)
        ctx.chunk, ctx.gated = chunk, gated
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        pos, omega, s, t, z, *sides = ctx.saved_tensors
        chunk, need, gated = ctx.chunk, ctx.needs_input_grad, ctx.gated
        n, p = pos.shape
        h, k, d = s.shape
        xs, phases = sides[0::2], sides[1::2]
        rotated_t = [_rotate_rows(z, phase, k, d).transpose(1, 2) for phase in phases]
        c_max = min(chunk, n)
        angle = pos.new_empty(h, c_max, k, d)
        trig = pos.new_empty(h, c_max, 2 * k, d)
        dcodes = pos.new_empty(h, c_max, 2 * k + 1, d)
        terms = pos.new_empty(h, c_max, 2 * k + 1, d)  # [w (per k) | v (per k) | dE], then × x
        pos_one = torch.cat([pos, pos.new_ones(n, 1)], dim=1)
        width = (2 * k + int(gated)) * d
        sums = [pos.new_zeros(h, p + 1, width) for _ in xs]
        dxs = [torch.empty_like(x) if need[6 + 2 * i] and g is not None else None
               for i, (x, g) in enumerate(zip(xs, grads))]
        grads = [None if g is None else g.contiguous() for g in grads]
        s_row, t_row = s.unsqueeze(1), None if t is None else t.unsqueeze(1)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            c = stop - start
            cos, sin = _trig(pos[start:stop], omega, angle[:, :c], trig[:, :c]).split(k, dim=2)
            for x, g, z_t, dx, side_sums in zip(xs, grads, rotated_t, dxs, sums):
                if g is None:
                    continue
                dc = dcodes[:, :c].view(h, c, -1)[:, :, :width]
                torch.bmm(g[start:stop].transpose(0, 1), z_t, out=dc)
                d_cos, d_sin, d_gate = dcodes[:, :c].split([k, k, 1], dim=2)
                tm = terms[:, :c]
                w = torch.mul(d_cos, cos, out=tm[:, :, :k]).addcmul_(d_sin, sin)  # ∂L/∂(x s)
                torch.mul(d_sin, cos, out=tm[:, :, k:2 * k]).addcmul_(d_cos, sin, value=-1)  # v
                xc = x[start:stop].transpose(0, 1).unsqueeze(2)  # (H, C, 1, D)
                if dx is not None:
                    dxc = dx[start:stop].transpose(0, 1)
                    if k == 1:
                        torch.mul(w[:, :, 0], s_row[:, :, 0], out=dxc)
                    else:
                        torch.sum(w * s_row, dim=2, out=dxc)
                    if gated:
                        dxc.addcmul_(d_gate[:, :, 0], t_row)
                if gated:
                    torch.mul(d_gate, xc, out=tm[:, :, 2 * k:])
                tm[:, :, :2 * k].mul_(xc)
                side_sums.baddbmm_(pos_one[start:stop].T.expand(h, -1, -1), tm.view(h, c, -1)[:, :, :width])
        return gradients_from_token_sums(sums, dxs, phases, s, gated, need, p, s.dtype)


def gradients_from_token_sums(sums, dxs, phases, s, gated, need, p, dtype):
    """The backward's return tuple from the per-side token sums (H, P + 1, W') of [x w | x v | x dE]
    against [pos, 1] (module doc): ∂L/∂ω = s Σ pos·x v, ∂L/∂s = Σ x w, ∂L/∂t = Σ x dE and, per side
    with phases, ∂L/∂φ = s Σ x v; ``need`` is ``ctx.needs_input_grad``, sums are cast to ``dtype``."""
    h, k, d = s.shape
    kd = k * d
    total = (sums[0] if len(sums) == 1 else torch.stack(sums).sum(0)).to(dtype)
    d_omega = (total[:, :p, kd:2 * kd].view(h, p, k, d) * s.unsqueeze(1)).reshape(h, p, kd) if need[1] else None
    d_s = total[:, p, :kd].reshape(h, k, d) if need[2] else None
    d_t = total[:, p, 2 * kd:].contiguous() if gated and need[3] else None
    grads_out = []
    for i, (dx, phase, side_sums) in enumerate(zip(dxs, phases, sums)):
        d_phase = None
        if phase is not None and need[7 + 2 * i]:
            d_phase = side_sums[:, p, kd:2 * kd].to(dtype).reshape(h, k, d) * s
        grads_out += [dx, d_phase]
    return (None, d_omega, d_s, d_t, None, None, *grads_out)


def _trig(pos, omega, angle, out):
    """[cos a | sin a] (H, C, 2K, D) of a = pos·ω into ``out`` (``angle``: (H, C, K, D) scratch)."""
    h, c, k, d = angle.shape
    torch.bmm(pos.expand(h, -1, -1), omega, out=angle.view(h, c, -1))
    torch.cos(angle, out=out[:, :, :k])
    torch.sin(angle, out=out[:, :, k:])
    return out


def _rotate_rows(z, phase, k, d):
    """Noise rows for a side with phases φ: (Zc, Zs) → (cos φ Zc + sin φ Zs, −sin φ Zc + cos φ Zs).

    Then x cos a·Zc' + x sin a·Zs' = x cos(a+φ)·Zc + x sin(a+φ)·Zs, so both sides share cos a, sin a.
    z: (H, J', R) rows (cos/sin, k, d) then the gate rows; φ: (H, K, D) or None (z returned)."""
    if phase is None:
        return z
    h, r = z.shape[0], z.shape[2]
    zc, zs = z[:, :2 * k * d].view(h, 2, k, d, r).unbind(1)
    cos, sin = torch.cos(phase).unsqueeze(-1), torch.sin(phase).unsqueeze(-1)
    rows = torch.stack([cos * zc + sin * zs, cos * zs - sin * zc], dim=1).view(h, 2 * k * d, r)
    return torch.cat([rows, z[:, 2 * k * d:]], dim=1)


def _row_scales(s: torch.Tensor, t) -> torch.Tensor:
    """(H, J') scale of each noise row: s_kd for the rows (cos, k, d) and (sin, k, d), then t_d."""
    h = s.shape[0]
    rows = s.unsqueeze(1).expand(h, 2, *s.shape[1:]).reshape(h, -1)
    return rows if t is None else torch.cat([rows, t], dim=1)


def sine_codes(pos: torch.Tensor, omega: torch.Tensor, s: torch.Tensor, t: torch.Tensor | None,
               z: torch.Tensor, sides, chunk: int) -> tuple[torch.Tensor, ...]:
    """SPE codes of each side (module doc) in one Function; one (N, H, R) output per side.

    Args:
        pos: (N, P) positions (N = B·T tokens), compute dtype.
        omega: (H, P, K·D) angular frequencies 2π f, laid out (k, d) with d fastest.
        s: (H, K, D) sine-row scales; t: (H, D) gate-row scales, or None without the gate.
        z: (H, J', R) noise rows in the order (cos/sin, k, d), then the D gate rows (if gated);
            no gradient flows into it.
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
    from . import spe_native  # imports this module's helpers
    with torch.autocast(pos.device.type, enabled=False):  # float32 matmuls under AMP
        pairs = list(zip(flat[0::2], flat[1::2]))
        if spe_native.usable(pos, omega, s, t, z, pairs):
            return spe_native.native_sine_codes(pos, omega, s, t, z, pairs, chunk)
        return _SineCodes.apply(pos, omega, s, t, z, chunk, *flat)
