"""The native RoPE rotation (stripes/kernels/rotary.c) against float64 references, and its fallback.

Tolerances: the kernel works in float32 like the PyTorch path. The angle θ = f·p is rounded to float32
(|error| ≲ P·2^-24·|θ|max, a few 1e-4 rad at |θ| ~ 4000), the sincos adds a few ulp, and each output
or gradient is a short float32 sum (the frequency gradient sums tokens in float32 blocks of 64). So
each value or gradient is compared with its float64 elementwise formula within δ·S, where S is the
same expression with every term replaced by its absolute value and δ = 2^-24·(4·P·|θ|max + 256).
"""

from __future__ import annotations

import pytest
import torch

from stripes.kernels import native
from stripes.kernels import rotary as rotary_kernel
from stripes.pe import build_pe
from stripes.pe import rope as rope_module
from tests.fixtures.native import EPS32, native_on, needs_compiler  # noqa: F401 (autouse fixture)

pytestmark = needs_compiler


def direct(x, pos, frequencies):
    """float64 eq. 21–22 pair by pair: x (N,H,2J), pos (N,P), f (Hf,J,P) → (N,H,2J) and |θ|max."""
    theta = torch.einsum("np,hjp->nhj", pos, frequencies)  # Hf = 1 broadcasts over the heads
    c, s = torch.cos(theta), torch.sin(theta)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = torch.stack([x0 * c - x1 * s, x1 * c + x0 * s], dim=-1).flatten(-2)
    return out, theta.abs().max().item()


def magnitudes(q, k, pos, hf, wq, wk):
    """S for each checked quantity (module doc), from the absolute values of the inputs."""
    q, k, pos, wq, wk = q.abs(), k.abs(), pos.abs(), wq.abs(), wk.abs()
    pair = lambda x: (x[..., 0::2] + x[..., 1::2]).repeat_interleave(2, -1)  # noqa: E731
    per_angle = lambda x, w: (x[..., 0::2] + x[..., 1::2]) * (w[..., 0::2] + w[..., 1::2])  # noqa: E731
    dtheta = per_angle(q, wq) + per_angle(k, wk)  # (N,H,J)
    df = torch.einsum("np,nhj->hjp", pos, dtheta)
    if hf == 1:
        df = df.sum(0, keepdim=True)
    return {"qt": pair(q), "kt": pair(k), "q": pair(wq), "k": pair(wk), "frequencies": df}


def make_inputs(pos_dim, hf, n=2 * 37, h=3, d=22, seed=0):
    """Float32 inputs; P = 1: positions up to 8192 (|θ| ~ 10^3 rad), P = 12: sparse real vectors."""
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(n, h, d, generator=gen), torch.randn(n, h, d, generator=gen)
    if pos_dim == 1:
        pos = torch.rand(n, 1, generator=gen) * 8192
        freq = torch.rand(hf, d // 2, 1, generator=gen) * 0.5
    else:
        pos = torch.randn(n, pos_dim, generator=gen) * 40 * (torch.rand(n, pos_dim, generator=gen) < 0.4)
        freq = torch.randn(hf, d // 2, pos_dim, generator=gen) * 2
    wq, wk = torch.randn(n, h, d, generator=gen), torch.randn(n, h, d, generator=gen)
    return q, k, pos, freq, wq, wk


@pytest.mark.parametrize("d", [22, 32])
@pytest.mark.parametrize("pos_dim", [1, 12])
@pytest.mark.parametrize("case, hf, learnable", [("RoPE(A): shared", 1, False), ("RoPE(B)", 3, False),
                                                 ("RoPE(C)", 3, True), ("shared, learnable", 1, True)])
def test_native_equals_the_float64_pairwise_formula_with_every_gradient(d, pos_dim, case, hf, learnable):
    """B·T = 2·37 tokens, H = 3; D = 22 (J = 11: the plain C loops) and D = 32 (with AVX-512 the
    non-temporal-store path, rotary.c's header)."""
    q, k, pos, freq, wq, wk = make_inputs(pos_dim, hf, d=d)
    leaves = [q.clone().requires_grad_(), k.clone().requires_grad_(), freq.clone().requires_grad_(learnable)]
    qt, kt = rotary_kernel.fused_rotary(leaves[0], leaves[1], pos, leaves[2])
    wanted = leaves if learnable else leaves[:2]
    names = ["q", "k", "frequencies"][:len(wanted)]
    got = dict(zip(names, torch.autograd.grad((qt * wq).sum() + (kt * wk).sum(), wanted)))
    got.update(qt=qt.detach(), kt=kt.detach())

    ref_leaves = [t.double().requires_grad_() for t in (q, k, freq)]
    rq, amax = direct(ref_leaves[0], pos.double(), ref_leaves[2])
    rk, _ = direct(ref_leaves[1], pos.double(), ref_leaves[2])
    ref = dict(zip(["q", "k", "frequencies"],
                   torch.autograd.grad((rq * wq.double()).sum() + (rk * wk.double()).sum(), ref_leaves)))
    ref.update(qt=rq.detach(), kt=rk.detach())

    assert amax > (1000 if pos_dim == 1 else 100)  # the large-angle regime is exercised
    delta = EPS32 * (4 * pos_dim * amax + 256)
    scale = magnitudes(q.double(), k.double(), pos.double(), hf, wq.double(), wk.double())
    for name, value in got.items():
        err = (value.double() - ref[name]).abs()
        bound = delta * scale[name]
        assert value.shape == ref[name].shape, name
        assert bool((err <= bound).all()), f"{name}: worst error/bound {(err / bound).max().item():.3g}"
        # the references are not vacuous: the bound is far below the values' size
        assert bound.max() < 0.05 * ref[name].abs().max(), name


@pytest.mark.parametrize("d", [22, 32])
def test_one_side_and_fixed_frequencies_keep_nothing_for_the_frequency_gradient(d):
    """k = None rotates q alone; without a frequency gradient q and k are not saved for backward."""
    q, k, pos, freq, wq, _ = make_inputs(1, 3, d=d)
    leaf = q.clone().requires_grad_()
    qt, kt = rotary_kernel.fused_rotary(leaf, None, pos, freq)
    assert kt is None
    ref, _ = direct(q.double(), pos.double(), freq.double())
    torch.testing.assert_close(qt.double(), ref, rtol=0, atol=2e-3)
    saved = qt.grad_fn.saved_tensors  # (pos, frequencies, q, k): no q or k
    assert len(saved) == 4 and saved[2] is None and saved[3] is None
    (grad,) = torch.autograd.grad((qt * wq).sum(), leaf)
    back, _ = direct(wq.double(), pos.double(), -freq.double())  # the inverse rotation
    torch.testing.assert_close(grad.double(), back, rtol=0, atol=2e-3)


@pytest.mark.parametrize("name", ["rope_a", "rope_b", "rope_c"])
@pytest.mark.parametrize("pos_dim", [1, 12])
def test_native_and_pytorch_fallback_agree_through_the_module(name, pos_dim, monkeypatch):
    """RotaryPE.forward_qk / forward (B > 1, odd T, q not contiguous, positions broadcast over B)."""
    torch.manual_seed(1)
    pe = build_pe(name, 2, 32, pos_dim)
    q, k = torch.randn(3, 2, 29, 32).transpose(1, 2), torch.randn(3, 29, 2, 32)
    pos = (torch.arange(29.0).view(1, 29, 1) * 30 * (torch.rand(1, 29, pos_dim) < 0.5)).expand(1, 29, pos_dim)
    wq, wk, wf = (torch.randn(3, 29, 2, 32) for _ in range(3))
    calls = []
    real = rotary_kernel.fused_rotary
    monkeypatch.setattr(rotary_kernel, "fused_rotary", lambda *a: calls.append(1) or real(*a))

    def run():
        leaves = [q.clone().requires_grad_(), k.clone().requires_grad_()]
        qt, kt = pe.forward_qk(*leaves, pos)
        key_only = pe(leaves[1], pos)
        loss = (qt * wq).sum() + (kt * wk).sum() + (key_only * wf).sum()
        grads = torch.autograd.grad(loss, leaves + [w for w in pe.parameters() if w.requires_grad])
        return [qt, kt, key_only, *grads]

    native_out = run()
    assert len(calls) == 2
    monkeypatch.setenv("STRIPES_NATIVE", "0")
    fallback_out = run()
    assert len(calls) == 2
    assert len(native_out) == (6 if name == "rope_c" else 5)
    for a, b in zip(native_out, fallback_out):
        torch.testing.assert_close(a, b, rtol=2e-4, atol=2e-4 * b.abs().max().item())


@pytest.mark.parametrize("native_flag", ["1", "0"])
def test_an_empty_sequence_gives_empty_outputs_and_zero_gradients(native_flag, monkeypatch):
    monkeypatch.setenv("STRIPES_NATIVE", native_flag)
    pe = build_pe("rope_c", 2, 8, 3)
    q, k = torch.randn(2, 0, 2, 8, requires_grad=True), torch.randn(2, 0, 2, 8, requires_grad=True)
    qt, kt = pe.forward_qk(q, k, torch.zeros(2, 0, 3))
    assert qt.shape == kt.shape == (2, 0, 2, 8)
    (qt.sum() + kt.sum()).backward()
    assert q.grad.shape == q.shape and pe.frequencies.grad.abs().sum() == 0


def test_stripes_native_0_float64_and_bfloat16_paths(monkeypatch):
    """STRIPES_NATIVE=0 and float64 take PyTorch; bfloat16 inputs are rotated in float32 natively."""
    calls = []
    real = rotary_kernel.fused_rotary
    monkeypatch.setattr(rotary_kernel, "fused_rotary", lambda *a: calls.append(1) or real(*a))
    pe = build_pe("rope_b", 2, 8, 1)
    q, k, pos = torch.randn(1, 5, 2, 8), torch.randn(1, 5, 2, 8), torch.arange(5.0).view(1, 5, 1)
    ref_q, ref_k = pe.forward_qk(q, k, pos)
    pe(k, pos)
    assert len(calls) == 2
    low_q, _ = pe.forward_qk(q.bfloat16(), k.bfloat16(), pos)
    assert len(calls) == 3 and low_q.dtype == torch.bfloat16
    monkeypatch.setenv("STRIPES_NATIVE", "0")
    assert native.load("rotary") is None and not rotary_kernel.available()
    fb_q, fb_k = pe.forward_qk(q, k, pos)
    pe(k, pos)
    torch.testing.assert_close(fb_q, ref_q, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fb_k, ref_k, rtol=1e-5, atol=1e-5)
    monkeypatch.delenv("STRIPES_NATIVE")
    pe.double().forward_qk(q.double(), k.double(), pos.double())  # float64 always takes PyTorch
    assert len(calls) == 3


def test_inputs_the_kernel_does_not_take_are_rejected():
    q, k, pos, freq, _, _ = make_inputs(1, 3)
    with pytest.raises(ValueError, match="float32 CPU"):
        rotary_kernel.fused_rotary(q.double(), k.double(), pos.double(), freq.double())
    with pytest.raises(ValueError, match="do not fit"):
        rotary_kernel.fused_rotary(q, k, pos, freq[:2])  # Hf must be 1 or H
    with pytest.raises(ValueError, match="do not fit"):
        rotary_kernel.fused_rotary(q, k[:, :, :20], pos, freq)


def test_a_broken_compiler_falls_back_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", "/bin/false")
    monkeypatch.setenv("STRIPES_KERNEL_CACHE", str(tmp_path))
    native.reset()
    pe = build_pe("rope_c", 2, 8, 1)
    q, k, pos = torch.randn(1, 5, 2, 8), torch.randn(1, 5, 2, 8), torch.arange(5.0).view(1, 5, 1)
    with pytest.warns(RuntimeWarning, match="rotary.c failed") as caught:
        qt, kt = pe.forward_qk(q, k, pos)
        pe(k, pos)
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    monkeypatch.setenv("STRIPES_NATIVE", "0")
    ref_q, ref_k = pe.forward_qk(q, k, pos)
    torch.testing.assert_close(qt, ref_q, rtol=0, atol=0)
    torch.testing.assert_close(kt, ref_k, rtol=0, atol=0)


def test_the_cache_key_covers_the_shared_sincos_header(monkeypatch, tmp_path):
    """Editing sincos.h (included by both kernels) gives both libraries new file names."""
    cc = native.compiler()
    before = {name: native.library_path(name, cc).name for name in ("fourier", "rotary")}
    source = native._SOURCE_DIR
    for path in list(source.glob("*.c")) + list(source.glob("*.h")):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(native, "_SOURCE_DIR", tmp_path)
    assert {name: native.library_path(name, cc).name for name in before} == before
    with open(tmp_path / "sincos.h", "a") as header:
        header.write("\n/* edited */\n")
    after = {name: native.library_path(name, cc).name for name in before}
    assert all(after[name] != before[name] for name in before)
    assert native.load("rotary") is not None  # and the edited copy still builds
