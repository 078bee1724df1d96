"""The native F-StrIPE kernel (stripes/kernels/fourier.c) against float64 references, and its loader.

Tolerances: the kernel works in float32 like the PyTorch path. The angle 2π f·p is rounded to float32
(|error| ≤ P ulp of the largest partial sum, i.e. ≲ P·2^-24·|a|max, a few 1e-4 rad at |a| ~ 2500) and
every sum over d, ω or tokens adds float32 rounding (≤ 2^-24 per term times the terms' magnitudes,
the token sums in blocks of 64). So each value or gradient is compared with its float64 direct
formula within δ·S, where S is the same sum with every term replaced by its absolute value and
δ = 2^-24·(4·P·|a|max + 256) (a margin of ~4 over the estimate above).
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from stripes.kernels import fourier as fourier_kernel
from stripes.kernels import native
from stripes.pe import build_pe
from tests.fixtures.native import EPS32, native_on, needs_compiler  # noqa: F401 (autouse fixture)

pytestmark = needs_compiler


def direct(x, pos, frequencies, phases, gains):
    """float64 [F] eq. 6, 9 pooled (no 1/√Nf): (N,H,D), (N,P), (H,D,Nf,P) → (N,H,2Nf) and |a|max."""
    angle = 2 * math.pi * torch.einsum("np,hdwp->nhdw", pos, frequencies)
    weighted = x.unsqueeze(-1) * gains
    shifted = angle + phases
    out = torch.stack([(weighted * torch.cos(shifted)).sum(2), (weighted * torch.sin(shifted)).sum(2)], -1)
    return out.flatten(-2), angle.abs().max().item()


def magnitudes(q, k, pos, frequencies, gains, wq, wk):
    """S for every checked quantity: the direct sums with each term replaced by its absolute value."""
    q, k, pos, g, wq, wk = q.abs(), k.abs(), pos.abs(), gains.abs(), wq.abs(), wk.abs()
    n, h, _ = q.shape
    wq_sum, wk_sum = wq.view(n, h, -1, 2).sum(-1), wk.view(n, h, -1, 2).sum(-1)  # (N,H,Nf)
    per_side = lambda x: torch.einsum("nhd,hdw->nhw", x, g).repeat_interleave(2, -1)  # noqa: E731
    both = torch.einsum("nhd,nhw->hdw", q, wq_sum) + torch.einsum("nhd,nhw->hdw", k, wk_sum)
    df = torch.einsum("np,nhd,hdw,nhw->hdwp", pos, q, g, wq_sum) + \
        torch.einsum("np,nhd,hdw,nhw->hdwp", pos, k, g, wk_sum)
    return {
        "qt": per_side(q), "kt": per_side(k),
        "q": torch.einsum("hdw,nhw->nhd", g, wq_sum), "k": torch.einsum("hdw,nhw->nhd", g, wk_sum),
        "frequencies": 2 * math.pi * df, "phases": torch.einsum("nhd,hdw,nhw->hdw", q, g, wq_sum),
        "gains": both,
    }


def make_inputs(pos_dim, max_pos=8192.0, n=2 * 37, h=3, d=20, nf=5, seed=0):
    """Float32 inputs; P = 1: positions up to max_pos (8192: |angle| ~ 10^3 rad), P = 12: sparse."""
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(n, h, d, generator=gen), torch.randn(n, h, d, generator=gen)
    if pos_dim == 1:
        pos = torch.rand(n, 1, generator=gen) * max_pos
        freq = torch.randn(h, d, nf, 1, generator=gen) * 0.05
    else:
        pos = torch.randn(n, pos_dim, generator=gen) * 3 * (torch.rand(n, pos_dim, generator=gen) < 0.4)
        freq = torch.randn(h, d, nf, pos_dim, generator=gen) * 2
    phases = torch.randn(h, d, nf, generator=gen)
    gains = torch.rand(h, d, nf, generator=gen) + 0.5
    wq, wk = torch.randn(n, h, 2 * nf, generator=gen), torch.randn(n, h, 2 * nf, generator=gen)
    return q, k, pos, freq, phases, gains, wq, wk


@pytest.mark.parametrize("pos_dim, max_pos", [(1, 8192.0), (1, 40.0), (12, None)])
def test_native_equals_the_float64_direct_formula_with_every_gradient(pos_dim, max_pos):
    """B·T = 2·37 tokens, H = 3, D = 20 (not a multiple of the vector width), Nf = 5, phases ≠ 0."""
    q, k, pos, freq, phases, gains, wq, wk = make_inputs(pos_dim, max_pos)
    leaves = [t.clone().requires_grad_() for t in (q, k, freq, phases, gains)]
    qt, kt = fourier_kernel.fused_fourier_features(leaves[0], leaves[1], pos, *leaves[2:])
    got = dict(zip(["q", "k", "frequencies", "phases", "gains"],
                   torch.autograd.grad((qt * wq).sum() + (kt * wk).sum(), leaves)))
    got.update(qt=qt.detach(), kt=kt.detach())

    ref_leaves = [t.double().requires_grad_() for t in (q, k, freq, phases, gains)]
    rq, amax = direct(ref_leaves[0], pos.double(), ref_leaves[2], ref_leaves[3], ref_leaves[4])
    rk, _ = direct(ref_leaves[1], pos.double(), ref_leaves[2], torch.zeros_like(phases).double(), ref_leaves[4])
    ref = dict(zip(["q", "k", "frequencies", "phases", "gains"],
                   torch.autograd.grad((rq * wq.double()).sum() + (rk * wk.double()).sum(), ref_leaves)))
    ref.update(qt=rq.detach(), kt=rk.detach())

    assert amax > (500 if max_pos == 8192 else 5)  # the large-angle regime is exercised
    delta = EPS32 * (4 * pos_dim * amax + 256)
    scale = magnitudes(q.double(), k.double(), pos.double(), freq.double(), gains.double(),
                       wq.double(), wk.double())
    for name, value in got.items():
        err = (value.double() - ref[name]).abs()
        bound = delta * scale[name]
        assert value.shape == ref[name].shape, name
        assert bool((err <= bound).all()), f"{name}: worst error/bound {(err / bound).max().item():.3g}"
        # the references are not vacuous: the bound is far below the values' size
        assert (delta * scale[name]).max() < 0.05 * ref[name].abs().max(), name


def test_sincos_is_accurate_to_a_few_ulp_up_to_ten_thousand_radians():
    """D = Nf = 1, x = g = 1: q̃ = (cos a, sin a) of the float32 angle a = p·(2πf) the kernel forms."""
    pos = torch.linspace(-8192, 8192, 20001).view(-1, 1)
    freq = torch.tensor(0.19).view(1, 1, 1, 1)
    one = torch.ones(pos.shape[0], 1, 1)
    _, kt = fourier_kernel.fused_fourier_features(None, one, pos, freq, torch.zeros(1, 1, 1),
                                                  torch.ones(1, 1, 1))
    angle = (pos * (2 * math.pi * freq).view(1)).double().view(-1)  # the same float32 rounding
    assert angle.abs().max() > 9000
    assert (kt[:, 0, 0].double() - torch.cos(angle)).abs().max() < 4e-7
    assert (kt[:, 0, 1].double() - torch.sin(angle)).abs().max() < 4e-7


@pytest.mark.parametrize("pos_dim", [1, 12])
def test_native_and_pytorch_fallback_agree_through_the_module(pos_dim, monkeypatch):
    """FStripe.forward_qk / forward (B > 1, odd T, Nf ≠ 8) give the same values and gradients both ways."""
    torch.manual_seed(1)
    pe = build_pe("fstripe", 2, 24, pos_dim, num_frequencies=6)
    with torch.no_grad():
        pe.phases.normal_()
        pe.gains.uniform_(0.5, 1.5)
    q, k = torch.randn(3, 2, 29, 24).transpose(1, 2), torch.randn(3, 29, 2, 24)  # q not contiguous
    pos = torch.arange(29.0).view(1, 29, 1).expand(3, 29, pos_dim) * (torch.rand(3, 29, pos_dim) < 0.5)
    wq, wk, wf = (torch.randn(3, 29, 2, 12) for _ in range(3))

    def run():
        leaves = [q.clone().requires_grad_(), k.clone().requires_grad_()]
        qt, kt = pe.forward_qk(*leaves, pos)
        key_only = pe(leaves[1], pos)
        loss = (qt * wq).sum() + (kt * wk).sum() + (key_only * wf).sum()
        grads = torch.autograd.grad(loss, leaves + list(pe.parameters()))
        return [qt, kt, key_only, *grads]

    assert fourier_kernel.available()
    native_out = run()
    monkeypatch.setenv("STRIPES_NATIVE", "0")
    fallback_out = run()
    for a, b in zip(native_out, fallback_out):
        torch.testing.assert_close(a, b, rtol=2e-4, atol=2e-4 * b.abs().max().item())


@pytest.mark.parametrize("native_flag", ["1", "0"])
def test_an_empty_sequence_gives_empty_features_and_zero_gradients(native_flag, monkeypatch):
    monkeypatch.setenv("STRIPES_NATIVE", native_flag)
    pe = build_pe("fstripe", 2, 8, 3, num_frequencies=4)
    q, k = torch.randn(2, 0, 2, 8, requires_grad=True), torch.randn(2, 0, 2, 8, requires_grad=True)
    qt, kt = pe.forward_qk(q, k, torch.zeros(2, 0, 3))
    assert qt.shape == kt.shape == (2, 0, 2, 8)
    (qt.sum() + kt.sum()).backward()
    assert q.grad.shape == q.shape and pe.frequencies.grad.abs().sum() == 0 and pe.gains.grad.abs().sum() == 0


def test_stripes_native_0_takes_the_pytorch_path(monkeypatch):
    calls = []
    real = fourier_kernel.fused_fourier_features
    monkeypatch.setattr(fourier_kernel, "fused_fourier_features",
                        lambda *a: calls.append(1) or real(*a))
    pe = build_pe("fstripe", 2, 8, 1)
    q, k, pos = torch.randn(1, 5, 2, 8), torch.randn(1, 5, 2, 8), torch.arange(5.0).view(1, 5, 1)
    pe.forward_qk(q, k, pos)
    pe(k, pos)
    assert len(calls) == 2
    monkeypatch.setenv("STRIPES_NATIVE", "0")
    assert native.load("fourier") is None and not fourier_kernel.available()
    pe.forward_qk(q, k, pos)
    pe(k, pos)
    pe.double().forward_qk(q.double(), k.double(), pos.double())  # float64 always takes PyTorch
    assert len(calls) == 2


@pytest.mark.parametrize("cc, problem", [("/bin/false", "/bin/false"),
                                         ("/nonexistent/cc", "no C compiler")])
def test_a_broken_compiler_falls_back_with_one_warning(cc, problem, monkeypatch, tmp_path):
    monkeypatch.setenv("CC", cc)
    monkeypatch.setenv("STRIPES_KERNEL_CACHE", str(tmp_path))
    native.reset()
    pe = build_pe("fstripe", 2, 8, 1)
    q, k, pos = torch.randn(1, 5, 2, 8), torch.randn(1, 5, 2, 8), torch.arange(5.0).view(1, 5, 1)
    with pytest.warns(RuntimeWarning, match=problem) as caught:
        qt, kt = pe.forward_qk(q, k, pos)
        pe(k, pos)
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    assert native.load("fourier") is None
    monkeypatch.setenv("STRIPES_NATIVE", "0")
    ref_q, ref_k = pe.forward_qk(q, k, pos)
    torch.testing.assert_close(qt, ref_q, rtol=0, atol=0)
    torch.testing.assert_close(kt, ref_k, rtol=0, atol=0)


def test_the_library_is_compiled_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("STRIPES_KERNEL_CACHE", str(tmp_path / "cache"))
    compiles = []
    real = native._compile
    monkeypatch.setattr(native, "_compile", lambda *a: compiles.append(a) or real(*a))
    native.reset()
    assert native.load("fourier") is not None
    files = sorted(os.listdir(tmp_path / "cache"))
    assert len(compiles) == 1 and len(files) == 1 and files[0].startswith("fourier-") \
        and files[0].endswith(".so"), files  # no temporary file left behind
    native.reset()  # a new process: finds the cached library
    assert native.load("fourier") is not None
    assert len(compiles) == 1 and sorted(os.listdir(tmp_path / "cache")) == files
    # another CPU or compiler gets its own file name
    cc = native.compiler()
    monkeypatch.setattr(native, "_cpu_flags", lambda: "flags: another cpu")
    assert native.library_path("fourier", cc).name != files[0]
