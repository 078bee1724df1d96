"""The native SPE kernel (stripes/kernels/spe.c via stripes/pe/spe_native.py) against float64 references.

The reference is the PyTorch path of ``sine_codes`` run in float64 on the same noise (a seeded
``SineSPE`` and its float64 copy draw the same Z and ε; float64 never takes the native path);
tests/test_pe.py pins that path to the term-by-term formula of [L] eq. 6–7. Tolerances: the kernel
works in float32 like the float32 PyTorch path: the angle a = pos·ω is rounded to float32
(|error| ≲ P·2^-24·|a|max), the sincos adds a few ulp, the products are float32 GEMMs and the token
sums are float32 over a chunk, then float64. So every value and gradient is compared with its float64
reference as max|err| ≤ δ·max|ref| with δ = 2^-24·(8·P·|a|max + 2^12), and also with the float32
PyTorch path's own error (at most 4× it, plus 2^-20·max|ref|): a wrong term gives errors of order 1.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import stripes.pe.spe as spe_module
from stripes.kernels import native
from stripes.kernels import spe as spe_kernel
from stripes.pe import build_pe, spe_native
from tests.fixtures.native import EPS32, native_on, needs_compiler  # noqa: F401 (autouse fixture)

pytestmark = needs_compiler


def make_case(pos_dim, sines, gated, b=2, t=37, h=3, d=10, r=7, seed=0):
    """A seeded float32 SineSPE, its float64 copy, inputs, positions and upstream weights.

    P = 1: positions up to 4096 with raised frequencies (|a| up to ~10^3 rad); P = 12: sparse
    real position vectors."""
    torch.manual_seed(seed)
    pe = build_pe("spe", h, d, pos_dim, num_realizations=r, num_sines=sines, gated=gated)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        pe.freq_logits.add_(3.0)
        if gated:
            pe.gate_logits.normal_(generator=gen)
    if pos_dim == 1:
        pos = torch.rand(b, t, 1, generator=gen) * 4096
    else:
        pos = torch.randn(b, t, pos_dim, generator=gen) * 4 * (torch.rand(b, t, pos_dim, generator=gen) < 0.4)
    q, k = torch.randn(b, t, h, d, generator=gen), torch.randn(b, t, h, d, generator=gen)
    wq, wk = torch.randn(b, t, h, r, generator=gen), torch.randn(b, t, h, r, generator=gen)
    ref = copy.deepcopy(pe).double()
    a_max = (2 * math.pi * pe.frequencies.detach().double().amax() * torch.cat([pos.abs().sum(-1).flatten(), torch.zeros(1)]).max()).item()
    return pe, ref, pos, q, k, wq, wk, a_max


def codes_and_grads(pe, pos, q, k, wq, wk, dtype, seed=7, query_side=True, key_side=True):
    """forward_qk (or a single side's transform) with noise of ``seed``; values and every gradient."""
    q, k = q.to(dtype).requires_grad_(), k.to(dtype).requires_grad_()
    pe.seed_noise(seed)
    noise = pe.draw_noise()
    sides = ([(q, True)] if query_side else []) + ([(k, False)] if key_side else [])
    outs = pe._codes(pos.to(dtype), noise, sides)
    weights = ([wq] if query_side else []) + ([wk] if key_side else [])
    loss = sum((o * w.to(dtype)).sum() for o, w in zip(outs, weights))
    params = [p for p in (pe.freq_logits, pe.phases, pe.gain_logits, pe.gate_logits) if p is not None]
    leaves = [x for x, _ in sides] + params
    return outs + list(torch.autograd.grad(loss, leaves, allow_unused=True))


def assert_matches(got, ref, py32, a_max, pos_dim, what):
    delta = EPS32 * (8 * pos_dim * a_max + 2 ** 12)
    for i, (g, r, p) in enumerate(zip(got, ref, py32)):
        if r is None:
            assert g is None and p is None, (what, i)
            continue
        err, scale = (g.double() - r).abs().max().item(), r.abs().max().item()
        py_err = (p.double() - r).abs().max().item()
        assert err <= delta * scale, (what, i, err, delta * scale)
        assert err <= 4 * py_err + 2 ** -20 * scale, (what, i, err, py_err)


def calls(monkeypatch):
    """Count the calls of the native path."""
    seen = []
    real = spe_native.native_sine_codes
    monkeypatch.setattr(spe_native, "native_sine_codes", lambda *a: seen.append(1) or real(*a))
    return seen


@pytest.mark.parametrize("chunk", [16, 128])
@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("sines", [1, 2])
@pytest.mark.parametrize("pos_dim", [1, 12])
def test_native_equals_float64_reference_with_every_gradient(pos_dim, sines, gated, chunk, monkeypatch):
    """B = 2, odd T = 37 (74 tokens: chunk 16 leaves a tail of 10; chunk 128 is one partial chunk),
    H = 3, D = 10, R = 7: codes of both sides and the gradients of q, k, frequencies, phases, gains
    and gate."""
    monkeypatch.setattr(spe_module, "CHUNK_TOKENS", chunk)
    pe, ref_pe, pos, q, k, wq, wk, a_max = make_case(pos_dim, sines, gated)
    seen = calls(monkeypatch)
    got = codes_and_grads(pe, pos, q, k, wq, wk, torch.float32)
    assert seen, "the float32 CPU path must take the native kernel"
    ref = codes_and_grads(ref_pe, pos, q, k, wq, wk, torch.float64)
    monkeypatch.setenv("STRIPES_NATIVE", "0")
    py32 = codes_and_grads(pe, pos, q, k, wq, wk, torch.float32)
    assert len(seen) == 1, "STRIPES_NATIVE=0 must take the PyTorch path"
    assert_matches(got, ref, py32, a_max, pos_dim, f"P={pos_dim} K={sines} gated={gated} chunk={chunk}")


@pytest.mark.parametrize("sines", [1, 2])
def test_non_temporal_store_path(sines, monkeypatch):
    """D = 32 (a multiple of 16, 64-byte aligned rows): with AVX-512 dx is written with
    non-temporal stores (spe.c); same checks as above."""
    monkeypatch.setattr(spe_module, "CHUNK_TOKENS", 16)
    pe, ref_pe, pos, q, k, wq, wk, a_max = make_case(1, sines, True, d=32)
    got = codes_and_grads(pe, pos, q, k, wq, wk, torch.float32)
    ref = codes_and_grads(ref_pe, pos, q, k, wq, wk, torch.float64)
    monkeypatch.setenv("STRIPES_NATIVE", "0")
    py32 = codes_and_grads(pe, pos, q, k, wq, wk, torch.float32)
    assert_matches(got, ref, py32, a_max, 1, f"D=32 K={sines}")


@pytest.mark.parametrize("query_side", [True, False])
def test_one_side_only(query_side, monkeypatch):
    """``transform`` of one side (with or without the phases) through the kernel."""
    pe, ref_pe, pos, q, k, wq, wk, a_max = make_case(1, 2, True, t=21)
    seen = calls(monkeypatch)
    sides = dict(query_side=query_side, key_side=not query_side)
    got = codes_and_grads(pe, pos, q, k, wq, wk, torch.float32, **sides)
    assert seen
    ref = codes_and_grads(ref_pe, pos, q, k, wq, wk, torch.float64, **sides)
    monkeypatch.setenv("STRIPES_NATIVE", "0")
    py32 = codes_and_grads(pe, pos, q, k, wq, wk, torch.float32, **sides)
    assert_matches(got, ref, py32, a_max, 1, f"one side, query={query_side}")


def test_native_off_gives_the_pytorch_path_bit_for_bit(monkeypatch):
    """STRIPES_NATIVE=0: no native call, and the numbers are those of the PyTorch Function."""
    pe, _, pos, q, k, wq, wk, _ = make_case(12, 1, True, t=9)
    monkeypatch.setenv("STRIPES_NATIVE", "0")
    native.reset()
    assert not spe_kernel.available()
    seen = calls(monkeypatch)
    monkeypatch.setattr(spe_native, "usable", lambda *a: False)
    want = codes_and_grads(pe, pos, q, k, wq, wk, torch.float32)
    monkeypatch.undo()
    monkeypatch.setenv("STRIPES_NATIVE", "0")
    seen = calls(monkeypatch)
    got = codes_and_grads(pe, pos, q, k, wq, wk, torch.float32)
    assert not seen
    for a, b in zip(got, want):
        assert torch.equal(a, b)


def test_float64_and_three_sides_are_not_native():
    """The kernel takes CPU float32 with 1 or 2 sides only."""
    x = torch.zeros(4, 2, 3)
    args = (torch.zeros(4, 1), torch.zeros(2, 1, 3), torch.zeros(2, 1, 3), None, torch.zeros(2, 6, 5))
    assert spe_native.usable(*args, [(x, None)] * 2)
    assert not spe_native.usable(*args, [(x, None)] * 3)
    assert not spe_native.usable(*args, [(x.double(), None)])


def test_empty_sequence(monkeypatch):
    """T = 0: empty codes, zero parameter gradients, through the kernel."""
    pe, _, pos, q, k, wq, wk, _ = make_case(1, 1, True, t=0)
    seen = calls(monkeypatch)
    outs = codes_and_grads(pe, pos, q, k, wq, wk, torch.float32)
    assert seen
    assert outs[0].shape == (2, 0, 3, 7) and outs[1].shape == (2, 0, 3, 7)
    for g in outs[4:]:
        assert torch.count_nonzero(g) == 0


def test_same_seed_same_numbers():
    """The noise semantics are unchanged: one seed gives the same codes on every call."""
    pe, _, pos, q, k, wq, wk, _ = make_case(1, 1, True, t=11)
    first = codes_and_grads(pe, pos, q, k, wq, wk, torch.float32, seed=5)
    again = codes_and_grads(pe, pos, q, k, wq, wk, torch.float32, seed=5)
    for a, b in zip(first, again):
        assert torch.equal(a, b)


needs_blas = pytest.mark.skipif(native.blas_sgemm() is None,
                                reason="this PyTorch exports no BLAS sgemm_: the chunk loop stays in Python")


def passes_in_c(monkeypatch):
    """Count the whole-pass C calls (forward and backward)."""
    seen = []
    for name in ("forward_chunks", "backward_chunks"):
        real = getattr(spe_kernel, name)
        monkeypatch.setattr(spe_kernel, name, lambda *a, _real=real, _name=name: seen.append(_name) or _real(*a))
    return seen


@needs_blas
@pytest.mark.parametrize("chunk", [16, 128])
@pytest.mark.parametrize("pos_dim, sines, gated", [(1, 1, True), (12, 2, True), (1, 2, False)])
def test_chunk_loop_in_c_equals_the_python_loop_bit_for_bit(pos_dim, sines, gated, chunk, monkeypatch):
    """The C loop (spe.c ``spe_forward_chunks`` / ``spe_backward_chunks``, products by PyTorch's
    own sgemm) and the Python loop over the same chunks with torch.bmm give identical codes and
    gradients (74 tokens: chunk 16 leaves a tail of 10)."""
    monkeypatch.setattr(spe_module, "CHUNK_TOKENS", chunk)
    pe, _, pos, q, k, wq, wk, _ = make_case(pos_dim, sines, gated)
    seen = passes_in_c(monkeypatch)
    got = codes_and_grads(pe, pos, q, k, wq, wk, torch.float32)
    assert seen == ["forward_chunks", "backward_chunks"]
    monkeypatch.setattr(native, "blas_sgemm", lambda: None)
    want = codes_and_grads(pe, pos, q, k, wq, wk, torch.float32)
    assert seen == ["forward_chunks", "backward_chunks"], "without sgemm the loop must stay in Python"
    for i, (a, b) in enumerate(zip(got, want)):
        assert torch.equal(a, b), i


@needs_blas
@pytest.mark.parametrize("query_side", [True, False])
def test_chunk_loop_in_c_one_side_and_no_input_gradient(query_side, monkeypatch):
    """One side through the C loop, with and without a gradient of x: the Python loop's numbers."""
    monkeypatch.setattr(spe_module, "CHUNK_TOKENS", 8)
    pe, _, pos, q, k, wq, wk, _ = make_case(1, 1, True, t=13)
    x, w = (q, wq) if query_side else (k, wk)

    def run(x_grad):
        pe.seed_noise(3)
        xx = x.clone().requires_grad_(x_grad)
        out = pe._codes(pos, pe.draw_noise(), [(xx, query_side)])[0]
        params = [p for p in (pe.freq_logits, pe.phases, pe.gain_logits, pe.gate_logits)]
        grads = torch.autograd.grad((out * w).sum(), ([xx] if x_grad else []) + params, allow_unused=True)
        return [out] + [g for g in grads if g is not None]

    for x_grad in (True, False):
        got = run(x_grad)
        with monkeypatch.context() as patch:
            patch.setattr(native, "blas_sgemm", lambda: None)
            want = run(x_grad)
        assert len(got) == len(want)
        for i, (a, b) in enumerate(zip(got, want)):
            assert torch.equal(a, b), (x_grad, i)
