"""Rotations by token angles as autograd Functions: the shared core of RoPE, RoPEPool and F-StrIPE1.

Each Function takes the angles θ (…, J) once and any number of same-shaped inputs (the query and
key sides), so cos θ and sin θ are evaluated once per call and shared by both sides; its backward is
written out (below), so autograd saves no per-op intermediates (RoPE's backward conjugates the saved
e^{iθ} in place instead of allocating e^{−iθ}; RoPE(A)'s θ has one head, broadcast to all).

  * ``rotate_pairs(θ, *xs)``: RoPE ([S] eq. 21–22). x (…, 2J) seen as J pairs, i.e. complex numbers
    x̂_j = x_{2j} + i x_{2j+1}; ŷ_j = x̂_j e^{iθ_j}. Backward: dx̂ = ĝ e^{−iθ} (the inverse rotation)
    and ∂L/∂θ_j = Im(conj(x̂_j) dx̂_j) = x_{2j} dx_{2j+1} − x_{2j+1} dx_{2j}, summed over the inputs.
  * ``pool_pairs(θ, *xs)``: RoPEPool ([S] eq. 23): z_j = Re ŷ_j + Im ŷ_j
    = x_{2j} u_j + x_{2j+1} w_j with u = cos θ + sin θ, w = cos θ − sin θ. Backward:
    dx_{2j} = g_j u_j, dx_{2j+1} = g_j w_j, ∂L/∂θ_j = g_j (x_{2j} w_j − x_{2j+1} u_j).
  * ``pool_dimensions(θ, *xs)``: pooled F-StrIPE1 ([S] eq. 19–20): x (…, D), θ (…, D) →
    (…, 2) = [Σ_d x_d cos θ_d, Σ_d x_d sin θ_d]. Backward: dx_d = g_0 cos θ_d + g_1 sin θ_d,
    ∂L/∂θ_d = x_d (g_1 cos θ_d − g_0 sin θ_d).

RoPE's CPU float32 path does not come here: ``stripes.kernels.rotary`` (rotary.c) fuses θ = f·p,
the sincos, the rotation and the frequency gradient (pe/rope.py); ``rotate_pairs`` is its reference
and the fallback (float64, CUDA, ``STRIPES_NATIVE=0``, no C compiler).

The angle gradient is computed only when θ requires one (learnable frequencies: RoPE(C), RoPEPool,
F-StrIPE1); the reduction to the frequencies (Σ over tokens of p·∂L/∂θ) is the matmul of the
``angles`` einsum's own backward. Inputs must be float32/float64 with θ in the same dtype (callers
cast to the compute dtype first); outputs are fresh contiguous tensors in that dtype.
"""

from __future__ import annotations

import torch


def unit_phasors(theta: torch.Tensor) -> torch.Tensor:
    """e^{iθ} = cos θ + i sin θ, complex with θ's shape (cos/sin written into the real view).

    ``torch.polar`` computes the same but was ~6× slower on the CPU (25 ms vs 4 ms for 2M angles).
    """
    dtype = torch.complex128 if theta.dtype == torch.float64 else torch.complex64
    rot = torch.empty(theta.shape, dtype=dtype, device=theta.device)
    parts = torch.view_as_real(rot)
    torch.cos(theta, out=parts[..., 0])
    torch.sin(theta, out=parts[..., 1])
    return rot


def as_complex_pairs(x: torch.Tensor) -> torch.Tensor:
    """View x (…, 2J) as J complex numbers x_{2j} + i x_{2j+1} (copies only if the layout needs it)."""
    pairs = x.reshape(*x.shape[:-1], x.shape[-1] // 2, 2)  # not −1: T = 0 must work
    if pairs.stride(-1) != 1 or any(s % 2 for s in pairs.stride()[:-1]):
        pairs = pairs.contiguous()
    return torch.view_as_complex(pairs)


def _check(theta: torch.Tensor, xs, width: int, broadcast: bool = False) -> None:
    for x in xs:
        lead = x.shape[:-1]
        fits = lead == theta.shape[:-1] or (
            broadcast and theta.dim() == x.dim()
            and all(a in (1, b) for a, b in zip(theta.shape[:-1], lead)))
        if x.dtype != theta.dtype or not fits or x.shape[-1] != width:
            raise ValueError(
                f"stripes/pe/rotation.py: inputs must be {tuple(theta.shape[:-1])} + ({width},) in "
                f"θ's dtype {theta.dtype}; got {tuple(x.shape)} {x.dtype}"
            )


class _RotatePairs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, theta, *xs):
        rot = unit_phasors(theta)
        ctx.save_for_backward(*xs)
        # kept as an attribute, not saved: the backward conjugates it in place (no second 16 MiB
        # buffer at T = 8192), and a flag records that, should the graph be run backward again
        ctx.rot, ctx.conjugated = rot, False
        return tuple(torch.view_as_real(as_complex_pairs(x) * rot).flatten(-2) for x in xs)

    @staticmethod
    def backward(ctx, *grads):
        xs = ctx.saved_tensors
        inverse = ctx.rot  # e^{−iθ} after the in-place conjugation
        if not ctx.conjugated:
            torch.view_as_real(inverse)[..., 1].neg_()
            ctx.conjugated = True
        dxs, dtheta = [], None
        for x, g in zip(xs, grads):
            dx = as_complex_pairs(g) * inverse
            dxs.append(torch.view_as_real(dx).flatten(-2))
            if ctx.needs_input_grad[0]:
                xr, dr = torch.view_as_real(as_complex_pairs(x)), torch.view_as_real(dx)
                if dtheta is None:
                    dtheta = xr[..., 0] * dr[..., 1]
                else:
                    dtheta.addcmul_(xr[..., 0], dr[..., 1])
                dtheta.addcmul_(xr[..., 1], dr[..., 0], value=-1)
        if dtheta is not None and dtheta.shape != inverse.shape:  # θ broadcast over some axes
            dtheta = dtheta.sum_to_size(inverse.shape)
        return (dtheta, *dxs)


class _PoolPairs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, theta, *xs):
        cos, sin = torch.cos(theta), torch.sin(theta)
        u, w = cos + sin, cos.sub_(sin)
        ctx.save_for_backward(u, w, *xs)
        outs = []
        for x in xs:
            xr = x.reshape(*x.shape[:-1], -1, 2)
            out = xr[..., 0] * u
            outs.append(out.addcmul_(xr[..., 1], w))
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        u, w, *xs = ctx.saved_tensors
        dxs, dtheta = [], None
        for x, g in zip(xs, grads):
            dx = torch.empty_like(x)
            dr = dx.view(*x.shape[:-1], -1, 2)
            torch.mul(g, u, out=dr[..., 0])
            torch.mul(g, w, out=dr[..., 1])
            dxs.append(dx)
            if ctx.needs_input_grad[0]:
                xr = x.reshape(*x.shape[:-1], -1, 2)
                part = xr[..., 0] * w
                part.addcmul_(xr[..., 1], u, value=-1).mul_(g)
                dtheta = part if dtheta is None else dtheta.add_(part)
        return (dtheta, *dxs)


class _PoolDimensions(torch.autograd.Function):
    @staticmethod
    def forward(ctx, theta, *xs):
        cos, sin = torch.cos(theta), torch.sin(theta)
        ctx.save_for_backward(cos, sin, *xs)
        outs = []
        for x in xs:
            dot = lambda y: torch.einsum("...d,...d->...", x, y)  # noqa: E731 (no product buffer)
            outs.append(torch.stack([dot(cos), dot(sin)], dim=-1))
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        cos, sin, *xs = ctx.saved_tensors
        dxs, dtheta = [], None
        for x, g in zip(xs, grads):
            g0, g1 = g[..., :1], g[..., 1:]
            dx = cos * g0
            dxs.append(dx.addcmul_(sin, g1))
            if ctx.needs_input_grad[0]:
                part = cos * g1
                part.addcmul_(sin, g0, value=-1).mul_(x)
                dtheta = part if dtheta is None else dtheta.add_(part)
        return (dtheta, *dxs)


def rotate_pairs(theta: torch.Tensor, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """RoPE rotation (eq. 22) of each x (…, 2J) by θ (…, J): pairs (x_{2j}, x_{2j+1}) stay adjacent.

    θ may have size 1 on leading axes where x does not (e.g. one head's angles shared by all heads:
    cos/sin are then evaluated once for all of them). Returns one (…, 2J) tensor per input.
    Raises ValueError on mismatched shapes or dtypes.
    """
    _check(theta, xs, 2 * theta.shape[-1], broadcast=True)
    with torch.autocast(theta.device.type, enabled=False):  # float32 products under AMP
        return _RotatePairs.apply(theta, *xs)


def pool_pairs(theta: torch.Tensor, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """RoPEPool (eq. 23): (…, 2J) inputs, angles (…, J) → (…, J) sums of the rotated coordinates."""
    _check(theta, xs, 2 * theta.shape[-1])
    with torch.autocast(theta.device.type, enabled=False):  # float32 products under AMP
        return _PoolPairs.apply(theta, *xs)


def pool_dimensions(theta: torch.Tensor, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Pooled F-StrIPE1 (eq. 19–20): (…, D) inputs, angles (…, D) → (…, 2) = Σ_d x_d e^{iθ_d}."""
    _check(theta, xs, theta.shape[-1])
    with torch.autocast(theta.device.type, enabled=False):  # float32 products under AMP
        return _PoolDimensions.apply(theta, *xs)
