"""The PEs' hand-written autograd Functions (pe/rotation.py, pe/spe_codes.py) against plain autograd.

Every module is compared, values and all gradients (inputs and parameters), with the formula written
out here elementwise in float64 and differentiated by autograd; P = 1 and P = 12, B > 1, odd T.
"""

import math

import pytest
import torch

from stripes.pe import build_pe
from stripes.pe.rotation import pool_dimensions, pool_pairs, rotate_pairs
from stripes.pe.spe_codes import sine_codes

DT = torch.float64
TOL = dict(rtol=1e-11, atol=1e-11)


def inputs(b=2, t=7, h=3, d=8, p=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, t, h, d, generator=g, dtype=DT, requires_grad=True)
    k = torch.randn(b, t, h, d, generator=g, dtype=DT, requires_grad=True)
    pos = torch.randn(b, t, p, generator=g, dtype=DT) * 3
    return q, k, pos


def compare(pe, reference, q, k, pos, seed=1):
    """forward_qk and the reference agree in value and in every gradient (q, k, parameters)."""
    params = [q, k, *(w for w in pe.parameters() if w.requires_grad)]
    got = pe.forward_qk(q, k, pos)
    ref = reference(q, k, pos)
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randn(x.shape, generator=g, dtype=DT) for x in got]
    for a, b in zip(got, ref):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, **TOL)
    loss = lambda outs: sum((o * w).sum() for o, w in zip(outs, weights))  # noqa: E731
    for a, b in zip(torch.autograd.grad(loss(got), params), torch.autograd.grad(loss(ref), params)):
        torch.testing.assert_close(a, b, **TOL)
    assert len(params) >= 2


def angles(pos, freqs):
    """θ[b,t,h,j] = f[h,j]·p[b,t] written as an explicit sum over the position axis."""
    return (pos[:, :, None, None, :] * freqs[None, None]).sum(-1)


def rope_reference(pe):
    def ref(q, k, pos):
        th = angles(pos, pe.frequencies)
        out = []
        for x in (q, k):
            x1, x2 = x[..., 0::2], x[..., 1::2]
            y = torch.stack([x1 * torch.cos(th) - x2 * torch.sin(th), x2 * torch.cos(th) + x1 * torch.sin(th)], -1)
            out.append(y.flatten(-2))
        return out
    return ref


def ropepool_reference(pe):
    def ref(q, k, pos):
        th = angles(pos, pe.frequencies)
        out = []
        for x in (q, k):
            x1, x2 = x[..., 0::2], x[..., 1::2]
            out.append(x1 * torch.cos(th) - x2 * torch.sin(th) + x2 * torch.cos(th) + x1 * torch.sin(th))
        return out
    return ref


def fstripe1_reference(pe):
    def ref(q, k, pos):
        th = angles(pos, pe.frequencies)
        if pe.pooled:
            return [torch.stack([(x * torch.cos(th)).sum(-1), (x * torch.sin(th)).sum(-1)], -1) for x in (q, k)]
        return [torch.stack([x * torch.cos(th), x * torch.sin(th)], -1).flatten(-2) for x in (q, k)]
    return ref


@pytest.mark.parametrize("p", [1, 12])
@pytest.mark.parametrize("name, options, reference", [
    ("rope_a", {}, rope_reference), ("rope_b", {}, rope_reference), ("rope_c", {}, rope_reference),
    ("ropepool", {}, ropepool_reference), ("ropepool", {"learnable": False}, ropepool_reference),
    ("fstripe1", {}, fstripe1_reference), ("fstripe1", {"pooled": False}, fstripe1_reference),
])
def test_rotary_modules_equal_the_elementwise_formula_with_gradients(name, options, reference, p):
    torch.manual_seed(0)
    pe = build_pe(name, 3, 8, p, **options).double()
    with torch.no_grad():  # frequencies of order 1, so that every angle matters
        pe.frequencies.mul_(torch.rand(pe.frequencies.shape, dtype=DT) * 4 + 0.5)
    q, k, pos = inputs(p=p)
    compare(pe, reference(pe), q, k, pos)
    # ``forward`` (one side) is the same transform
    torch.testing.assert_close(pe(k, pos), reference(pe)(q, k, pos)[1], **TOL)


@pytest.mark.parametrize("fn, width", [(rotate_pairs, 2), (pool_pairs, 2), (pool_dimensions, 1)])
def test_rotation_functions_pass_gradcheck(fn, width):
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(2, 3, 2, 3, generator=g, dtype=DT, requires_grad=True)
    xs = [torch.randn(2, 3, 2, 3 * width, generator=g, dtype=DT, requires_grad=True) for _ in range(2)]
    assert torch.autograd.gradcheck(lambda th, a, b: fn(th, a, b), (theta, *xs))
    # one side, and θ without gradient
    assert torch.autograd.gradcheck(lambda a: fn(theta.detach(), a), (xs[0],))


def test_rotate_pairs_broadcasts_shared_angles_with_gradient():
    """θ with one head (RoPE(A)'s shared angles) rotates every head; its gradient sums over heads."""
    g = torch.Generator().manual_seed(1)
    theta = torch.randn(2, 3, 1, 3, generator=g, dtype=DT, requires_grad=True)
    xs = [torch.randn(2, 3, 4, 6, generator=g, dtype=DT, requires_grad=True) for _ in range(2)]
    assert torch.autograd.gradcheck(lambda th, a, b: rotate_pairs(th, a, b), (theta, *xs))
    full = rotate_pairs(theta.expand(2, 3, 4, 3).contiguous(), *xs)
    for a, b in zip(rotate_pairs(theta, *xs), full):
        torch.testing.assert_close(a, b, **TOL)


def test_rotate_pairs_backward_twice_gives_the_same_gradients():
    """The backward conjugates e^{iθ} in place once; a retained graph's second backward agrees."""
    g = torch.Generator().manual_seed(2)
    theta = torch.randn(1, 5, 2, 3, generator=g, dtype=DT, requires_grad=True)
    x = torch.randn(1, 5, 2, 6, generator=g, dtype=DT, requires_grad=True)
    (y,) = rotate_pairs(theta, x)
    w = torch.randn(y.shape, generator=g, dtype=DT)
    first = torch.autograd.grad((y * w).sum(), (theta, x), retain_graph=True)
    second = torch.autograd.grad((y * w).sum(), (theta, x))
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_rotation_functions_reject_mismatched_inputs():
    theta = torch.zeros(1, 4, 2, 3)
    with pytest.raises(ValueError, match="rotation.py"):
        rotate_pairs(theta, torch.zeros(1, 4, 2, 5))
    with pytest.raises(ValueError, match="rotation.py"):
        pool_dimensions(theta, torch.zeros(1, 4, 2, 3, dtype=DT))


def float32_matches_float64(name):
    torch.manual_seed(0)
    pe = build_pe(name, 2, 8, 1)
    q, k, pos = inputs(h=2, t=5)
    out32 = pe.forward_qk(q.detach().float(), k.detach().float(), pos.float())
    out64 = pe.double().forward_qk(q.detach(), k.detach(), pos)
    return all(torch.allclose(a.double(), b, rtol=1e-4, atol=1e-4) and a.dtype == torch.float32
               for a, b in zip(out32, out64))


@pytest.mark.parametrize("name", ["rope_b", "ropepool", "fstripe1"])
def test_rotary_float32_path(name):
    assert float32_matches_float64(name)


# --- SPE -------------------------------------------------------------------------------------------

def old_noise(pe, seed):
    """The noise of ``seed`` as drawn before the Function existed: Z (H, D·2K, R) / √(2K), then ε."""
    g = torch.Generator().manual_seed(seed)
    h, d, k, r = pe.num_heads, pe.head_dim, pe.num_sines, pe.num_realizations
    z = torch.randn(h, d * 2 * k, r, generator=g, dtype=torch.float32) / math.sqrt(2 * k)
    eps = torch.randn(h, d, r, generator=g, dtype=torch.float32)
    return z.to(DT), eps.to(DT)


def spe_old_formula(pe, x, pos, noise, query):
    """The codes as the module computed them before (Z rows (d, k, cos/sin), sin = cos(· − π/2))."""
    z, eps = noise
    h, d, k, r = pe.num_heads, pe.head_dim, pe.num_sines, pe.num_realizations
    angle = 2 * math.pi * (pos[:, :, None, None, None, :] * pe.frequencies[None, None]).sum(-1)  # (B,T,H,D,K)
    if query:
        angle = angle + pe.phases
    slots = torch.stack([angle, angle - math.pi / 2], -1)  # (B,T,H,D,K,2)
    scale = (r * d) ** -0.25
    gains = torch.nn.functional.softplus(pe.gain_logits)
    if pe.gated:
        gate = torch.sigmoid(pe.gate_logits)
        gains = gains * torch.sqrt(1 - gate).unsqueeze(-1)
    coded = x[..., None, None] * torch.cos(slots) * gains[..., None] * scale
    out = torch.einsum("bthj,hjr->bthr", coded.flatten(3), z)
    if pe.gated:
        out = out + torch.einsum("bthd,hdr->bthr", x * torch.sqrt(gate) * scale, eps)
    return out


@pytest.mark.parametrize("p, sines, gated, chunk", [(1, 1, True, 3), (12, 2, True, 4), (1, 3, False, 1000),
                                                    (2, 1, False, 2)])
def test_spe_equals_the_old_formula_with_gradients(p, sines, gated, chunk, monkeypatch):
    import stripes.pe.spe as spe

    monkeypatch.setattr(spe, "CHUNK_TOKENS", chunk)
    torch.manual_seed(0)
    pe = build_pe("spe", 3, 4, p, num_realizations=5, num_sines=sines, gated=gated).double()
    with torch.no_grad():
        pe.freq_logits.add_(4.0)  # frequencies well away from 0
        if gated:
            pe.gate_logits.normal_()
    q, k, pos = inputs(b=2, t=7, h=3, d=4, p=p)
    noise = old_noise(pe, 11)
    pe.seed_noise(11)
    params = [q, k, *pe.parameters()]
    got = pe.forward_qk(q, k, pos)
    ref = [spe_old_formula(pe, q, pos, noise, True), spe_old_formula(pe, k, pos, noise, False)]
    weights = [torch.randn_like(x) for x in got]
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, **TOL)
    loss = lambda outs: sum((o * w).sum() for o, w in zip(outs, weights))  # noqa: E731
    assert len(params) == 2 + 3 + gated  # q, k, frequency/phase/gain logits (and the gate's)
    for a, b in zip(torch.autograd.grad(loss(got), params), torch.autograd.grad(loss(ref), params)):
        torch.testing.assert_close(a, b, **TOL)


def test_spe_seed_gives_the_same_numbers_as_before_in_float32():
    """Decision 12: a seeded SPE reproduces the codes of the pre-Function implementation."""
    torch.manual_seed(0)
    pe = build_pe("spe", 2, 8, 1, num_realizations=6)
    q, k, pos = (x.detach().float() for x in inputs(b=1, t=9, h=2, d=8))
    pe.seed_noise(5)
    first = pe.forward_qk(q, k, pos)
    pe.seed_noise(5)
    again = pe.forward_qk(q, k, pos)
    noise = old_noise(pe, 5)
    with torch.no_grad():
        pe64 = pe.double()
        ref = (spe_old_formula(pe64, q.double(), pos.double(), noise, True),
               spe_old_formula(pe64, k.double(), pos.double(), noise, False))
    for a, b, c in zip(first, again, ref):
        assert torch.equal(a, b)
        torch.testing.assert_close(a.double(), c, rtol=1e-4, atol=1e-5)


def test_sine_codes_passes_gradcheck_and_checks_shapes():
    g = torch.Generator().manual_seed(0)
    h, k, d, r, n, p = 2, 2, 3, 4, 5, 2
    pos = torch.randn(n, p, generator=g, dtype=DT)
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=DT, requires_grad=True)  # noqa: E731
    omega, s, t = rand(h, p, k * d), rand(h, k, d), rand(h, d)
    z = torch.randn(h, (2 * k + 1) * d, r, generator=g, dtype=DT)
    xq, xk, phase = rand(n, h, d), rand(n, h, d), rand(h, k, d)
    fn = lambda om, s_, t_, a, ph, b: sine_codes(pos, om, s_, t_, z, [(a, ph), (b, None)], 2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (omega, s, t, xq, phase, xk))
    with pytest.raises(ValueError, match="spe_codes.py"):
        sine_codes(pos, omega, s, t, z[:, :-1], [(xq, None)], 2)
    with pytest.raises(ValueError, match="spe_codes.py"):
        sine_codes(pos, omega, s, t, z, [(xq[:, :1], None)], 2)
