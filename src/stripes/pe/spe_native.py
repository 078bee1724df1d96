"""sineSPE codes through the fused C kernel (``stripes.kernels.spe``): CPU float32, 1 or 2 sides.

Same mathematics, arguments and results as ``spe_codes.sine_codes`` (whose module doc writes out
the forward and backward): per chunk of tokens, the kernel writes the codes [x cos a | x sin a | x]
of both sides straight into the product's input buffers with one sincos per (head, token, k, d),
and the (C, W) × (W, R) products are MKL's sgemm. Backward, per chunk: dcodes = g z'ᵀ (sgemm), then
the kernel gives dx and the token sums (float32 over the chunk, added into float64) from which the
gradients of ω, s, t and φ follow as in ``spe_codes``. Nothing of size N·W is kept.

Where PyTorch exports its BLAS ``sgemm_`` (``native.blas_sgemm``: the MKL inside the x86
wheels) the whole chunk loop, products included, is one C call per pass (``forward_chunks``,
``backward_chunks``); otherwise the loop stays here with one torch.bmm per chunk and side. Both
run the same sgemm per head (torch.bmm's CPU float32 path), so their numbers are equal bit for bit
(tests/test_spe_kernel.py). The C loop removes ~64 Python iterations of ~10 tensor ops and calls
per pass at T = 8192: SPE's forward + backward 76–83 → 65–70 ms there (one thread, interleaved,
best of 30).
"""

from __future__ import annotations

import torch

from stripes.kernels import native
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
        scaled = [(_rotate_rows(z, phase, k, d) * scales).contiguous() for phase in sides[1::2]]
        codes = [pos.new_empty(h, min(chunk, n), width) for _ in xs]
        outs = [x.new_empty(n, h, r) for x in xs]
        sgemm = native.blas_sgemm()
        if sgemm is not None:
            spe_kernel.forward_chunks(pos, omega_c, k, gated, xs, scaled, outs, codes, chunk, sgemm)
        else:
            _forward_loop(pos, omega_c, k, gated, xs, scaled, outs, codes, chunk)
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
        rotated = [_rotate_rows(z, phase, k, d).contiguous() for phase in phases]  # z' (H, W, R)
        omega_c = omega.detach().contiguous()
        s_c = s.detach().contiguous()
        t_c = t.detach().contiguous() if gated else None
        dcodes = [pos.new_empty(h, min(chunk, n), width) for _ in xs]
        sums = [torch.zeros(h, p + 1, width, dtype=torch.float64) for _ in xs]
        dxs = [torch.empty_like(x) if need[6 + 2 * i] and g is not None else None
               for i, (x, g) in enumerate(zip(xs, grads))]
        grads = [None if g is None else g.contiguous() for g in grads]
        per_side = list(zip(grads, rotated, xs, dxs, sums, dcodes))
        sgemm = native.blas_sgemm()
        if sgemm is not None:
            spe_kernel.backward_chunks(pos, omega_c, s_c, t_c, per_side, chunk, sgemm)
        else:
            _backward_loop(pos, omega_c, s_c, t_c, per_side, chunk)
        return gradients_from_token_sums(sums, dxs, phases, s, gated, need, p, pos.dtype)


def _chunk_view(buffer: torch.Tensor, c: int) -> torch.Tensor:
    """The first (H, c, W) elements of an (H, C, W) scratch buffer as a contiguous tensor (the
    layout the kernel writes and reads for a chunk of c ≤ C tokens)."""
    h, c_max, width = buffer.shape
    return buffer if c == c_max else buffer.view(-1)[:h * c * width].view(h, c, width)


def _forward_loop(pos, omega, k, gated, xs, scaled, outs, codes, chunk) -> None:
    """``spe_kernel.forward_chunks`` with the chunk loop in Python and torch.bmm for the products."""
    n = pos.shape[0]
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        bufs = [_chunk_view(b, stop - start) for b in codes]
        spe_kernel.chunk_forward(pos[start:stop], omega, k, gated, [x[start:stop] for x in xs], bufs)
        for buf, z_side, out in zip(bufs, scaled, outs):
            torch.bmm(buf, z_side, out=out[start:stop].transpose(0, 1))


def _backward_loop(pos, omega, s, t, per_side, chunk) -> None:
    """``spe_kernel.backward_chunks`` with the chunk loop in Python and torch.bmm for the products."""
    n = pos.shape[0]
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        args = []
        for g, rows, x, dx, side_sums, buf in per_side:
            if g is None:
                args.append((None, x[start:stop], None, side_sums))
                continue
            dc = _chunk_view(buf, stop - start)
            torch.bmm(g[start:stop].transpose(0, 1), rows.transpose(1, 2), out=dc)
            args.append((dc, x[start:stop], None if dx is None else dx[start:stop], side_sums))
        spe_kernel.chunk_backward(pos[start:stop], omega, s, t, args)


def native_sine_codes(pos, omega, s, t, z, sides, chunk):
    """``spe_codes.sine_codes`` (same arguments, shapes checked there) through the C kernel.

    Call only when ``usable(...)`` is True. Returns one (N, H, R) float32 tensor per side."""
    flat = [v for pair in sides for v in pair]
    return _NativeSineCodes.apply(pos, omega, s, t, z, chunk, *flat)
