"""The C causal linear attention (stripes/kernels/causal_attention.c) against the quadratic float64
reference, and when linear_attention uses it.

linear_attention takes the kernel for CPU float32 causal attention at one intra-op thread when the
library builds and PyTorch exports its sgemm; the tests run at one thread (fixture) and spy on the
kernel's entry point so a silent fallback to the PyTorch path cannot pass for the kernel.
Tolerances: float32 sums of a few hundred terms against float64 (rtol 1e-5 on outputs, 1e-4 on
gradients, which are differences of such sums).
"""

from __future__ import annotations

import math

import pytest
import torch

import stripes.nn.attention as attention
from stripes.kernels import causal_attention as causal_kernel
from stripes.kernels import native
from tests.fixtures.native import native_on, needs_compiler, one_thread  # noqa: F401 (fixtures)
from tests.test_attention import quadratic_reference

pytestmark = [needs_compiler, pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(native.blas_sgemm() is None, reason="this PyTorch exports no BLAS sgemm_")]


@pytest.fixture
def kernel_calls(monkeypatch):
    """The number of kernel attention calls made through linear_attention."""
    calls = []
    real = causal_kernel.causal_linear_attention
    monkeypatch.setattr(causal_kernel, "causal_linear_attention", lambda *a: calls.append(1) or real(*a))
    return calls


def phi64(x):
    return torch.nn.functional.elu(x.double()) + 1


def reference(q, k, v, eps, phi, grad):
    """Output and (dq, dk, dv) of the float64 quadratic formula (φ first if ``phi``)."""
    leaves = [x.double().requires_grad_() for x in (q, k, v)]
    fq, fk = (phi64(leaves[0]), phi64(leaves[1])) if phi else (leaves[0], leaves[1])
    out = quadratic_reference(fq, fk, leaves[2], True, eps=eps)
    out.backward(grad.double())
    return out.detach(), [x.grad for x in leaves]


def run(q, k, v, grad, **options):
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out = attention.linear_attention(*leaves, **options)
    out.backward(grad)
    return out.detach(), [x.grad for x in leaves]


def inputs(b=2, t=37, h=3, f=6, dv=5, seed=0, phi=True):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(b, t, h, f, generator=g) for _ in range(2))
    if not phi:  # features given: non-negative
        q, k = q.abs(), k.abs()
    v, grad = torch.randn(b, t, h, dv, generator=g), torch.randn(b, t, h, dv, generator=g)
    return q, k, v, grad


@pytest.mark.parametrize("chunk", [1, 5, 8, 64])  # 5, 8 leave a short last chunk; 64 > T
@pytest.mark.parametrize("phi", [True, False])
@pytest.mark.parametrize("per_query_eps", [False, True])
def test_kernel_matches_the_quadratic_reference(chunk, phi, per_query_eps, kernel_calls):
    q, k, v, grad = inputs(phi=phi)
    eps = 0.1 + torch.rand(2, 37, 3) if per_query_eps else 1e-6
    out, grads = run(q, k, v, grad, chunk_size=chunk, eps=eps, feature_map="elu" if phi else None)
    assert kernel_calls == [1]
    ref, ref_grads = reference(q, k, v, eps, phi, grad)
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), ref, rtol=1e-5, atol=1e-6)
    for mine, theirs in zip(grads, ref_grads):
        assert torch.allclose(mine.double(), theirs, rtol=1e-4, atol=1e-5)


def test_kernel_and_pytorch_path_agree_at_the_benchmark_width(kernel_calls, monkeypatch):
    """F = Dv = 128, several chunks of 64 and a tail, strided (non-contiguous) inputs."""
    q, k, v, grad = inputs(b=1, t=200, h=2, f=128, dv=128, seed=1)
    q = q.transpose(0, 1).contiguous().transpose(0, 1)
    out, grads = run(q, k, v, grad, feature_map="elu")
    assert kernel_calls == [1]
    monkeypatch.setenv("STRIPES_NATIVE", "0")
    torch_out, torch_grads = run(q, k, v, grad, feature_map="elu")
    assert kernel_calls == [1]
    assert torch.allclose(out, torch_out, rtol=1e-5, atol=1e-6)
    for mine, theirs in zip(grads, torch_grads):
        assert torch.allclose(mine, theirs, rtol=1e-4, atol=1e-5)


def test_very_negative_inputs_stay_finite_and_match(kernel_calls):
    """φ(x) for x far below −87 (float32 exp underflow): outputs and gradients stay finite and match."""
    q, k, v, grad = inputs(b=1, t=20, h=1, f=4, dv=3, seed=2)
    q[0, :, 0, 0] = -200.0
    k[0, ::2, 0, 1] = -95.0
    out, grads = run(q, k, v, grad, chunk_size=8, feature_map="elu")
    assert kernel_calls == [1]
    ref, ref_grads = reference(q, k, v, 1e-6, True, grad)
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
    assert torch.allclose(out.double(), ref, rtol=1e-5, atol=1e-6)
    for mine, theirs in zip(grads, ref_grads):
        assert torch.allclose(mine.double(), theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", ["two threads", "no sgemm", "float64", "disabled"])
def test_falls_back_to_the_pytorch_path(case, kernel_calls, monkeypatch):
    q, k, v, grad = inputs(seed=3)
    if case == "two threads":
        torch.set_num_threads(2)
    elif case == "no sgemm":
        monkeypatch.setattr(native, "blas_sgemm", lambda: None)
    elif case == "float64":
        q, k, v, grad = q.double(), k.double(), v.double(), grad.double()
    else:
        monkeypatch.setenv("STRIPES_NATIVE", "0")
    out, grads = run(q, k, v, grad, chunk_size=8, feature_map="elu")
    assert kernel_calls == []
    ref, ref_grads = reference(q, k, v, 1e-6, True, grad)
    assert torch.allclose(out.double(), ref, rtol=1e-5, atol=1e-6)
    for mine, theirs in zip(grads, ref_grads):
        assert torch.allclose(mine.double(), theirs, rtol=1e-4, atol=1e-5)


def test_phi_inside_the_kernel_is_exp_within_a_few_ulp(kernel_calls):
    """φ(q) = exp(q) for q ≤ 0 read back from the attention: with T = 1, F = Dv = 1, k = 0 (φ = 1),
    v = 1 and ε = 1, y = φ(q) / (φ(q) + 1), so φ(q) = y / (1 − y) (float64), within 8 float32 ulp
    of exp(q) down to q = −87 (the kernel's exp range)."""
    q = torch.cat([-torch.logspace(-6, math.log10(87.0), 500), torch.tensor([0.0])]).view(-1, 1, 1, 1)
    k, v = torch.zeros_like(q), torch.ones_like(q)
    y = attention.linear_attention(q, k, v, eps=torch.ones(q.shape[0], 1, 1), feature_map="elu")
    assert kernel_calls == [1]
    phi = y.double() / (1 - y.double())
    exact = torch.exp(q.double())
    assert ((phi - exact).abs() <= 8 * 2.0 ** -24 * exact).all()
