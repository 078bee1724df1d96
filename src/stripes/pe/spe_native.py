"""sineSPE codes through the fused C kernel (``stripes.kernels.spe``): CPU float32, 1 or 2 sides.

Same mathematics, arguments and results as ``spe_codes.sine_codes`` (whose module doc writes out
the forward and backward): per chunk of tokens, the kernel writes the codes [x cos a | x sin a | x]
of both sides straight into the bmm input buffers with one sincos per (head, token, k, d), and the
(C, W) × (W, R) products stay torch.bmm calls (MKL). Backward, per chunk: dcodes = g z'ᵀ (bmm),
then the kernel gives dx and the token sums (float32 over the chunk, added into float64) from which
the gradients of ω, s, t and φ follow as in ``spe_codes``. Nothing of size N·W is kept.
"""

from __future__ import annotations

import torch

from stripes.kernels import spe as spe_kernel

from .spe_codes import _rotate_rows, _row_scales, gradients_from_token_sums


def usable(pos, omega, s, t, z, sides) -> bool:
    """Whether the native path applies: kernel available, 1 or 2 sides, every tensor CPU float32."""
    tensors = [pos, omega, s, t, z] + [v for pair in sides for v in pair]
    return 1 <= len(sides) <= 2 and spe_kernel.usable(*tensors)


class _NativeSineCodes(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pos, omega, s, t, z, chunk, *sides):
        n = pos.shape[0]
        h, k, d = s.shape
        r = z.shape[2]
        gated = t is not None
        width = (2 * k + int(gated)) * d
        xs = [x.contiguous() for x in sides[0::2]]
        pos, omega_c = pos.contiguous(), omega.detach().contiguous()
        scales = _row_scales(s, t).unsqueeze(-1)
        scaled = [_rotate_rows(z, phase, k, d) * scales for phase in sides[1::2]]
        c_max = min(chunk, n)
        codes = [pos.new_empty(h, c_max, width) for _ in xs]
        outs = [x.new_empty(n, h, r) for x in xs]
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            c = stop - start
            bufs = [b[:, :c] if c == c_max else b.view(-1)[:h * c * width].view(h, c, width) for b in codes]
            spe_kernel.chunk_forward(pos[start:stop], omega_c, k, gated, [x[start:stop] for x in xs], bufs)
            for buf, z_side, out in zip(bufs, scaled, outs):
                torch.bmm(buf, z_side, out=out[start:stop].transpose(0, 1))
        ctx.save_for_backward(pos, omega, s, t, z, *[v for x, ph in zip(xs, sides[1::2]) for v in (x, ph)])
        ctx.chunk = chunk
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        pos, omega, s, t, z, *sides = ctx.saved_tensors
        chunk, need = ctx.chunk, ctx.needs_input_grad
        n, p = pos.shape
        h, k, d = s.shape
        gated = t is not None
        width = (2 * k + int(gated)) * d
        xs, phases = sides[0::2], sides[1::2]
        rotated_t = [_rotate_rows(z, phase, k, d).transpose(1, 2) for phase in phases]
        omega_c = omega.detach().contiguous()
        s_c = s.detach().contiguous()
        t_c = t.detach().contiguous() if gated else None
        c_max = min(chunk, n)
        dcodes = [pos.new_empty(h, c_max, width) for _ in xs]
        sums = [torch.zeros(h, p + 1, width, dtype=torch.float64) for _ in xs]
        dxs = [torch.empty_like(x) if need[6 + 2 * i] and g is not None else None
               for i, (x, g) in enumerate(zip(xs, grads))]
        grads = [None if g is None else g.contiguous() for g in grads]
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            c = stop - start
            args = []
            for x, g, z_t, dx, side_sums, buf in zip(xs, grads, rotated_t, dxs, sums, dcodes):
                if g is None:
                    args.append((None, x[start:stop], None, side_sums))
                    continue
                dc = buf[:, :c] if c == c_max else buf.view(-1)[:h * c * width].view(h, c, width)
                torch.bmm(g[start:stop].transpose(0, 1), z_t, out=dc)
                args.append((dc, x[start:stop], None if dx is None else dx[start:stop], side_sums))
            spe_kernel.chunk_backward(pos[start:stop], omega_c, s_c, t_c, args)
        return gradients_from_token_sums(sums, dxs, phases, s, gated, need, p, pos.dtype)


def native_sine_codes(pos, omega, s, t, z, sides, chunk):
    """``spe_codes.sine_codes`` (same arguments, shapes checked there) through the C kernel.

    Call only when ``usable(...)`` is True. Returns one (N, H, R) float32 tensor per side."""
    flat = [v for pair in sides for v in pair]
    return _NativeSineCodes.apply(pos, omega, s, t, z, chunk, *flat)
