"""The native passes of the chunked linear attention (stripes/kernels/head_chunks.c) against float64
formulas, and the float32 attention that uses them against the quadratic float64 reference.

Layout under test: heads h0 … h0+G−1 of a (B, Tp, H, X) tensor as (G·B·N, C, X) chunks, with H = 3
heads, a group of the last two (h0 = 1), so a wrong head offset or group stride shows.
"""

from __future__ import annotations

import math

import pytest
import torch

import stripes.nn.attention as attention
from stripes.kernels import head_chunks
from tests.fixtures.native import EPS32, native_on, needs_compiler, one_thread  # noqa: F401 (fixtures)
from tests.test_attention import quadratic_reference

pytestmark = [needs_compiler, pytest.mark.usefixtures("one_thread")]

B, N, C, H, X = 2, 3, 5, 3, 16
HEADS = slice(1, 3)
G = 2


def group_of(full: torch.Tensor) -> torch.Tensor:
    """Heads HEADS of (B, N·C, H, X) as (G·B·N, C, X), by indexing (the layout's definition)."""
    return full[:, :, HEADS].permute(2, 0, 1, 3).reshape(G * B * N, C, full.shape[-1])


def phi64(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.elu(x.double()) + 1


def test_gather_copies_and_maps_phi_within_two_ulp():
    g = torch.Generator().manual_seed(0)
    full = torch.randn(B, N * C, H, X, generator=g) * 6
    full.view(-1)[:8] = torch.tensor([-87.0, -80.0, -30.0, -1e-3, 0.0, 1e-3, 50.0, -0.5])
    plain = head_chunks.gather_heads(full, HEADS, C, phi=False)
    assert plain.shape == (G * B * N, C, X) and torch.equal(plain, group_of(full))
    mapped = head_chunks.gather_heads(full, HEADS, C, phi=True)
    ref = phi64(group_of(full))
    assert ((mapped.double() - ref).abs() <= 4 * EPS32 * ref).all()


def test_gather_phi_at_the_range_ends_and_nan():
    full = torch.zeros(1, 1, 1, 16)
    full[0, 0, 0, :6] = torch.tensor([-87.3, -100.0, -float("inf"), float("inf"), float("nan"), 88.0])
    out = head_chunks.gather_heads(full, slice(0, 1), 1, phi=True).view(-1)
    assert all(0 <= out[i] <= 1.3e-38 for i in range(3))  # exp(x) < 1.3e-38
    assert out[3] == float("inf") and math.isnan(out[4]) and out[5] == 89.0
    assert torch.equal(out[6:], torch.ones(10))  # φ(0) = 1


@pytest.mark.parametrize("with_weight,with_vec,with_phi", [
    (False, False, False), (False, True, False), (True, True, False), (False, False, True),
    (True, True, True), (False, True, True),
])
def test_scatter_adds_the_chunk_term_and_applies_phi_slope(with_weight, with_vec, with_phi):
    g = torch.Generator().manual_seed(1)
    group = torch.randn(G * B * N, C, X, generator=g)
    weight = torch.randn(G * B * N, C, 1, generator=g) if with_weight else None
    vec = torch.randn(G * B * N, X, generator=g) if with_vec else None
    phi_out = torch.rand(G * B * N, C, X, generator=g) * 2 if with_phi else None  # slope 1 above 1
    full = torch.full((B, N * C, H, X), 7.0)
    head_chunks.scatter_heads(group, full, HEADS, weight, vec, phi_out)
    expected = group.double()
    if vec is not None:
        expected = expected + (weight.double() if weight is not None else 1.0) * vec.double().unsqueeze(1)
    if phi_out is not None:
        expected = expected * phi_out.double().clamp(max=1.0)
    assert torch.allclose(group_of(full).double(), expected, rtol=4 * EPS32, atol=8 * EPS32)
    assert (full[:, :, 0] == 7.0).all()  # the other head is left alone


def test_divide_and_output_gradients_match_the_formulas():
    g = torch.Generator().manual_seed(2)
    num = torch.randn(G * B * N, C, X, generator=g)
    den = 0.5 + torch.rand(G * B * N, C, 1, generator=g)
    out = torch.zeros(B, N * C, H, X)
    head_chunks.divide_heads(num, den, out, HEADS)
    assert torch.equal(group_of(out), num / den)  # IEEE division, exactly torch's
    grad = torch.randn(B, N * C, H, X, generator=g)
    g_num, g_den = head_chunks.output_grads(grad, out, den, HEADS)
    ref_num = group_of(grad).double() / den.double()
    ref_den = -(ref_num * group_of(out).double()).sum(-1, keepdim=True)
    assert g_num.shape == (G * B * N, C, X) and g_den.shape == (G * B * N, C, 1)
    assert torch.allclose(g_num.double(), ref_num, rtol=2 * EPS32, atol=0)
    scale = (ref_num.abs() * group_of(out).double().abs()).sum(-1, keepdim=True)
    assert ((g_den.double() - ref_den).abs() <= 32 * EPS32 * scale).all()


@pytest.mark.parametrize("group", [1, 2, 4])
def test_float32_attention_with_the_kernel_matches_the_quadratic_reference(group, monkeypatch):
    """linear_attention on float32 CPU inputs, φ inside, a per-query ε, T = 37 padded to chunks of 8,
    heads 1, 2 or 4 at a time: outputs and gradients against the float64 quadratic reference and
    the PyTorch path (STRIPES_NATIVE=0); the kernel's four passes must all have run."""
    b, t, h, f, dv = 2, 37, 4, 6, 5
    monkeypatch.setattr(attention, "GROUP_STATE_BYTES", group * b * 5 * f * dv * 4)
    calls = {}
    for name in ("gather_heads", "scatter_heads", "divide_heads", "output_grads"):
        real = getattr(head_chunks, name)
        monkeypatch.setattr(head_chunks, name,
                            lambda *a, _r=real, _n=name, **k: calls.__setitem__(_n, 1) or _r(*a, **k))
    g = torch.Generator().manual_seed(3)
    q, k = (torch.randn(b, t, h, f, generator=g) for _ in range(2))
    v, grad = torch.randn(b, t, h, dv, generator=g), torch.randn(b, t, h, dv, generator=g)
    eps = 0.1 + torch.rand(b, t, h, generator=g)

    def run():
        leaves = [x.clone().requires_grad_() for x in (q, k, v)]
        out = attention.linear_attention(*leaves, chunk_size=8, eps=eps, feature_map="elu")
        out.backward(grad)
        return out, [x.grad for x in leaves]

    out, grads = run()
    assert sorted(calls) == ["divide_heads", "gather_heads", "output_grads", "scatter_heads"]
    refs = [x.double().requires_grad_() for x in (q, k, v)]
    fq, fk = phi64(refs[0]), phi64(refs[1])
    a = (fq.transpose(1, 2) @ fk.transpose(1, 2).transpose(-1, -2)) * torch.ones(t, t).double().tril()
    ref = ((a @ refs[2].transpose(1, 2)) / (a.sum(-1, keepdim=True) + eps.double().transpose(1, 2).unsqueeze(-1)))
    ref = ref.transpose(1, 2)
    ref.backward(grad.double())
    assert torch.allclose(out.double(), ref, rtol=1e-5, atol=1e-6)
    for mine, theirs in zip(grads, refs):
        assert torch.allclose(mine.double(), theirs.grad, rtol=1e-4, atol=1e-5)
    calls.clear()
    torch.set_num_threads(2)  # several threads: PyTorch's parallel ops, the same results
    two_out, _ = run()
    assert not calls and torch.allclose(out, two_out, rtol=1e-5, atol=1e-6)
    torch.set_num_threads(1)
    monkeypatch.setenv("STRIPES_NATIVE", "0")
    torch_out, torch_grads = run()
    assert torch.allclose(out, torch_out, rtol=1e-5, atol=1e-6)
    for mine, theirs in zip(grads, torch_grads):
        assert torch.allclose(mine, theirs, rtol=1e-4, atol=1e-5)


def test_unnormalised_phi_free_inputs_take_the_plain_passes():
    """feature_map=None (features given): the kernel gathers without φ and writes gradients without
    a slope; compared with the quadratic reference on non-negative inputs."""
    g = torch.Generator().manual_seed(4)
    q, k = (torch.rand(1, 20, 2, 4, generator=g) for _ in range(2))
    v, grad = torch.randn(1, 20, 2, 3, generator=g), torch.randn(1, 20, 2, 3, generator=g)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out = attention.linear_attention(*leaves, chunk_size=6)
    out.backward(grad)
    refs = [x.double().requires_grad_() for x in (q, k, v)]
    ref = quadratic_reference(*refs, True)
    ref.backward(grad.double())
    assert torch.allclose(out.double(), ref, rtol=1e-5, atol=1e-6)
    for mine, theirs in zip(leaves, refs):
        assert torch.allclose(mine.grad.double(), theirs.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rows,n,m", [(1, 1, 7), (1, 130, 20), (3, 5, 1500)])
def test_in_place_scan_matches_cumulative_sums(rows, n, m):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(rows, n, m, generator=g)
    ref = x.double()
    prefix = torch.cumsum(ref, 1) - ref
    suffix = torch.flip(torch.cumsum(torch.flip(ref, [1]), 1), [1]) - ref
    bound = 2 * n * EPS32 * torch.cumsum(ref.abs(), 1)[:, -1:]  # float32 running sums of n terms
    for reverse, expected in ((False, prefix), (True, suffix)):
        y = x.clone()
        assert head_chunks.exclusive_scan_(y, reverse) is y  # in place
        assert ((y.double() - expected).abs() <= bound).all()
    states = attention._state_scan(x.view(rows * n, 1, m), torch.ones(rows * n, 1, 1), rows, False, True)
    assert torch.equal(states, head_chunks.exclusive_scan_(x.clone(), False).view(rows * n, m, 1))
