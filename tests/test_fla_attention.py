"""The CUDA attention path on the CPU: dispatch, the float32 denominator and the dtype policy.

fla's Triton kernel needs a GPU; here a slow exact stand-in with the same signature, layout and
output dtype (``fake_chunk_linear_attn``) replaces it, and is strict about what fla requires
(one dtype for q, k, v; widths that are multiples of 16). The GPU itself is checked by
``make gpu-check`` (``stripes.gpu.check``, section 1) against the same float64 reference.
"""

from types import SimpleNamespace

import pytest
import torch

from stripes.nn import attention as attention_mod
from stripes.nn import fla_attention as fla
from stripes.nn.attention import MultiHeadAttention, linear_attention
from stripes.pe import build_pe
from tests.test_attention import quadratic_reference

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fake_chunk_linear_attn(q, k, v, scale=None, initial_state=None, output_final_state=False,
                           normalize=True, cu_seqlens=None):
    """fla's ``chunk_linear_attn`` contract with ``normalize=False``: o = scale · Σ_{n≤m}(q_m·k_n) v_n,
    float32 accumulation, returned in q's dtype; (o, None)."""
    assert not normalize and initial_state is None and cu_seqlens is None
    assert q.dtype == k.dtype == v.dtype and q.dtype in (torch.float32, torch.bfloat16)
    assert q.shape[-1] % 16 == 0 and v.shape[-1] % 16 == 0, "fla tiles are 16 wide"
    qf, kf, vf = (x.float().transpose(1, 2) for x in (q, k, v))
    t = q.shape[1]
    scores = (qf @ kf.transpose(-1, -2)) * torch.ones(t, t).tril()
    o = (scale * scores @ vf).transpose(1, 2)
    return o.to(q.dtype), None


def features(b=2, t=37, h=3, f=16, dv=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(b, t, h, f, generator=g)
    k = torch.rand(b, t, h, f, generator=g)
    v = torch.randn(b, t, h, dv, generator=g)
    return q, k, v


@pytest.fixture
def fake_fla(monkeypatch):
    """Pretend fla-core is installed, with the stand-in kernel."""
    monkeypatch.setattr(fla, "fla_available", lambda: True)
    monkeypatch.setattr(fla, "load_kernel", lambda: fake_chunk_linear_attn)


# ---- dispatch -------------------------------------------------------------------------------

def test_select_impl_rules(monkeypatch):
    cpu = torch.zeros(1)
    # stand-ins for CUDA tensors: select_impl reads only .device and .dtype
    cuda = SimpleNamespace(device=torch.device("cuda", 0), dtype=torch.float32)
    cuda64 = SimpleNamespace(device=torch.device("cuda", 0), dtype=torch.float64)
    assert fla.select_impl("auto", cpu) == "torch"
    assert fla.select_impl("torch", cuda) == "torch"
    monkeypatch.setattr(fla, "fla_available", lambda: True)
    assert fla.select_impl("auto", cuda) == "fla"
    assert fla.select_impl("fla", cuda) == "fla"
    assert fla.select_impl("auto", cuda64) == "torch"
    with pytest.raises(ValueError, match="float64"):
        fla.select_impl("fla", cuda64)
    with pytest.raises(RuntimeError, match="CUDA"):
        fla.select_impl("fla", cpu)
    with pytest.raises(ValueError, match="attention_impl"):
        fla.select_impl("triton", cpu)
    monkeypatch.setattr(fla, "fla_available", lambda: False)
    fla._warn_fallback.cache_clear()
    with pytest.warns(UserWarning, match="gpu"):
        assert fla.select_impl("auto", cuda) == "torch"
    with pytest.raises(ImportError, match=r"\.\[gpu\]"):
        fla.select_impl("fla", cuda)


def test_fla_is_not_importable_here_and_load_kernel_says_how_to_install():
    fla.fla_available.cache_clear()
    if fla.fla_available():
        pytest.skip("fla-core is installed in this environment")
    with pytest.raises(ImportError, match="fla-core"):
        fla.load_kernel()


def test_linear_attention_routes_causal_cuda_calls_to_the_fused_path(monkeypatch):
    calls = []
    monkeypatch.setattr(attention_mod, "select_impl", lambda impl, x: "fla")
    monkeypatch.setattr(attention_mod, "fused_causal_linear_attention",
                        lambda q, k, v, eps, dtype: calls.append(dtype) or torch.zeros_like(v))
    q, k, v = features()
    assert linear_attention(q, k, v, impl="auto", dtype=torch.bfloat16).abs().sum() == 0
    assert calls == [torch.bfloat16]
    # non-causal attention always takes the PyTorch path (no kernel needed: two matmuls)
    assert torch.allclose(linear_attention(q, k, v, causal=False, impl="auto"),
                          linear_attention(q, k, v, causal=False, impl="torch"))


# ---- the fused path against the float64 reference ------------------------------------------

@pytest.mark.parametrize("f,dv", [(2, 128), (16, 16), (64, 128), (128, 128), (128, 64), (5, 7)])
def test_fused_matches_float64_reference_forward_and_backward(fake_fla, f, dv):
    q, k, v = features(t=29, h=2, f=f, dv=dv)
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    y = fla.fused_causal_linear_attention(q, k, v, eps=1e-6)
    assert y.shape == v.shape and y.dtype == torch.float32
    ref = quadratic_reference(q, k, v, causal=True)
    assert torch.allclose(y.double(), ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(v)
    got = torch.autograd.grad(y, (q, k, v), grad)
    want = torch.autograd.grad(ref, (q, k, v), grad.double())
    for g, w in zip(got, want):
        assert torch.allclose(g.double(), w.double(), rtol=1e-4, atol=1e-5 * w.abs().max().item())


def test_bf16_kernel_keeps_the_denominator_float32(fake_fla):
    q, k, v = features(t=64, f=64, dv=32)
    y = fla.fused_causal_linear_attention(q, k, v.bfloat16(), eps=1e-6, dtype=torch.bfloat16)
    assert y.dtype == torch.bfloat16
    # reference on the bf16-rounded features (what the kernel sees): only the numerator's bf16
    # output rounding (2^-9 relative) and the final cast remain
    ref = quadratic_reference(q.bfloat16(), k.bfloat16(), v.bfloat16(), causal=True)
    assert torch.allclose(y.double(), ref, rtol=2e-2, atol=2e-2)


def test_float32_denominator_against_float64_and_why_not_bf16():
    """fla's normalize=True stores the running key sum in the input dtype: in bfloat16 each stored
    sum is off by up to 2^-9 relative (measured here: > 1e-3 at T = 4096); the project's float32 sum
    of the same bf16 features matches float64 to 1e-6."""
    torch.manual_seed(0)
    t, f = 4096, 16
    q = (torch.rand(1, t, 1, f) + 0.5).bfloat16()
    k = (torch.rand(1, t, 1, f) + 0.5).bfloat16()
    den = fla.causal_denominator(q, k, eps=1e-6)
    assert den.dtype == torch.float32 and den.shape == (1, t, 1, 1)
    exact = (q.double() * k.double().cumsum(1)).sum(-1, keepdim=True) + 1e-6
    assert ((den.double() - exact).abs() / exact).max() < 1e-6
    in_bf16 = (q * k.cumsum(1)).sum(-1, keepdim=True).double()  # the injected fault
    assert ((in_bf16 - exact).abs() / exact).max() > 1e-3


def test_fp16_and_fp64_kernels_are_refused(fake_fla):
    q, k, v = features()
    with pytest.raises(ValueError, match="65504"):
        fla.fused_causal_linear_attention(q, k, v, dtype=torch.float16)
    with pytest.raises(ValueError, match="float64"):
        fla.fused_causal_linear_attention(q.double(), k.double(), v.double())
    with pytest.raises(ValueError, match="fla_attention.py"):
        fla.fused_causal_linear_attention(q, k[:, :3], v)


# ---- the layer: dtype policy under autocast ---------------------------------------------------

def _layer(pe_name="ropepool", impl="auto", d=32, h=2):
    torch.manual_seed(0)
    pe = build_pe(pe_name, h, d // h, 1)
    return MultiHeadAttention(d, h, pe, chunk_size=8, attention_impl=impl).eval()


@pytest.mark.parametrize("pe_name", ["nope", "ropepool", "fstripe1", "rope_c"])
def test_layer_fused_equals_torch_path(fake_fla, monkeypatch, pe_name):
    monkeypatch.setattr(attention_mod, "select_impl", lambda impl, x: impl if impl == "torch" else "fla")
    layer = _layer(pe_name)
    x = torch.randn(2, 40, 32)
    pos = torch.arange(40, dtype=torch.float32).view(1, 40, 1).expand(2, -1, -1)
    fused = layer(x, pos)
    layer.attention_impl = "torch"
    assert torch.allclose(fused, layer(x, pos), rtol=1e-5, atol=1e-5)


def test_layer_with_impl_fla_on_cpu_says_it_needs_cuda():
    layer = _layer(impl="fla")
    x = torch.randn(1, 8, 32)
    with pytest.raises(RuntimeError, match="CUDA"):
        layer(x, torch.zeros(1, 8, 1))


def test_autocast_keeps_phi_and_sums_in_float32(monkeypatch):
    """Under bf16 autocast the projections run in bf16, but φ and linear attention see autocast
    off: the result equals the float32 computation from the same bf16 projections."""
    layer = _layer("rope_c")
    seen = {}
    real = attention_mod.linear_attention

    def spy(q, k, v, **kw):
        seen.update(q=q.dtype, autocast=torch.is_autocast_enabled("cpu"))
        return real(q, k, v, **kw)

    monkeypatch.setattr(attention_mod, "linear_attention", spy)
    x = torch.randn(2, 300, 32)
    pos = torch.arange(300, dtype=torch.float32).view(1, 300, 1).expand(2, -1, -1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x, pos)
    assert seen == {"q": torch.float32, "autocast": False}
    assert y.dtype == torch.bfloat16


def test_fused_path_under_autocast_gets_the_bf16_kernel_dtype(fake_fla, monkeypatch):
    monkeypatch.setattr(attention_mod, "select_impl", lambda impl, x: "fla")
    dtypes = []
    real = fla.fused_causal_linear_attention
    monkeypatch.setattr(attention_mod, "fused_causal_linear_attention",
                        lambda q, k, v, eps, dtype: dtypes.append((q.dtype, dtype)) or real(q, k, v, eps, dtype))
    layer = _layer()
    x = torch.randn(1, 24, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x, torch.zeros(1, 24, 1))
    assert dtypes == [(torch.float32, torch.bfloat16)] and torch.isfinite(y).all()
    layer(x, torch.zeros(1, 24, 1))
    assert dtypes[-1] == (torch.float32, None)


def test_no_nan_or_inf_at_16384_under_bf16_autocast():
    torch.manual_seed(0)
    t = 16384
    layer = _layer("ropepool", d=16, h=2)
    layer.chunk_size = 64
    x = 10 * torch.randn(1, t, 16)
    pos = torch.arange(t, dtype=torch.float32).view(1, t, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x, pos)
    assert torch.isfinite(y).all()


def test_loss_is_float32_for_bf16_logits():
    from stripes.lit import masked_bce_with_logits

    logits = torch.randn(2, 5, 6).bfloat16()
    target = (torch.rand(2, 5, 6) > 0.5).float()
    loss = masked_bce_with_logits(logits, target, torch.ones(2, 5, dtype=torch.bool))
    assert loss.dtype == torch.float32
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits.double(), target.double())
    assert abs(loss.item() - want.item()) < 1e-6


# ---- on a CUDA machine with the gpu extra (skipped elsewhere) --------------------------------

needs_cuda_fla = pytest.mark.skipif(not (torch.cuda.is_available() and fla.fla_available()),
                                    reason="needs CUDA and fla-core (pip install -e '.[gpu]')")


@needs_cuda_fla
@pytest.mark.parametrize("amp", [None, torch.bfloat16])
@pytest.mark.parametrize("f", [2, 16, 64, 128])
def test_fla_kernel_on_cuda_matches_float64(f, amp):
    from stripes.gpu.correctness import compare

    row = compare("fla", f, 128, amp, "cuda", t=300)
    assert row["ok"] and row["finite"], row


@needs_cuda_fla
def test_auto_picks_fla_on_cuda():
    assert fla.select_impl("auto", torch.zeros(1, device="cuda")) == "fla"
