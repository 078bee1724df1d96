"""Causal linear attention against a quadratic float64 reference; causality; numerical safety."""

import math

import pytest
import torch

from stripes.nn.attention import (
    FavorFeatureMap, MultiHeadAttention, causal_linear_attention_loop, chunked_attention_flops,
    linear_attention,
)
from stripes.pe import build_pe, pe_names


def quadratic_reference(q, k, v, causal, eps=1e-6):
    """y_m = Σ_n a_mn v_n / (Σ_n a_mn + ε_m), a_mn = q_m·k_n (n ≤ m if causal): builds the T×T
    matrix, in float64; ε a float or a (B, T, H) tensor of per-query values."""
    q, k, v = (x.double().transpose(1, 2) for x in (q, k, v))
    a = q @ k.transpose(-1, -2)
    if causal:
        t = a.shape[-1]
        a = a * torch.ones(t, t, dtype=torch.float64).tril()
    if torch.is_tensor(eps):
        eps = eps.double().transpose(1, 2).unsqueeze(-1)  # (B, H, T, 1)
    return ((a @ v) / (a.sum(-1, keepdim=True) + eps)).transpose(1, 2)


def positive_inputs(b=2, t=23, h=3, f=5, dv=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(b, t, h, f, generator=g, dtype=dtype)
    k = torch.rand(b, t, h, f, generator=g, dtype=dtype)
    v = torch.randn(b, t, h, dv, generator=g, dtype=dtype)
    return q, k, v


def assert_matches_reference(q, k, v, grad, **options):
    """linear_attention(q, k, v, **options) and its gradients for ``grad`` against the quadratic
    float64 reference (causal)."""
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out = linear_attention(*leaves, **options)
    out.backward(grad)
    refs = [x.clone().requires_grad_() for x in (q, k, v)]
    ref = quadratic_reference(*refs, True)
    ref.backward(grad)
    assert torch.allclose(out, ref, rtol=1e-9, atol=1e-10)
    for a, b in zip(leaves, refs):
        assert torch.allclose(a.grad, b.grad, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("chunk", [1, 4, 7, 23, 64])  # 1 and 23 divide T = 23; 4, 7 do not; 64 > T
def test_matches_quadratic_reference(causal, chunk):
    q, k, v = positive_inputs()
    out = linear_attention(q, k, v, causal=causal, chunk_size=chunk)
    ref = quadratic_reference(q, k, v, causal)
    assert out.dtype == torch.float64
    rel = (out - ref).abs().max() / ref.abs().max()
    assert rel < 1e-6


@pytest.mark.parametrize("chunk", [8, 5])
def test_float32_and_loop_form(chunk):
    q, k, v = positive_inputs(t=40)
    ref = quadratic_reference(q, k, v, True)
    out32 = linear_attention(q.float(), k.float(), v.float(), chunk_size=chunk)
    assert out32.dtype == torch.float32
    assert torch.allclose(out32.double(), ref, rtol=1e-5, atol=1e-6)
    loop = causal_linear_attention_loop(q, k, v, chunk_size=chunk)
    assert torch.allclose(loop, ref, rtol=1e-10, atol=1e-12)


def test_causal_perturbation_after_t_leaves_prefix_unchanged():
    q, k, v = positive_inputs(t=30)
    t = 12
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    q2[:, t + 1:] += 5.0
    k2[:, t + 1:] *= 3.0
    v2[:, t + 1:] = torch.randn_like(v2[:, t + 1:]) * 100
    for chunk in (4, 7, 64):
        a = linear_attention(q, k, v, chunk_size=chunk)
        b = linear_attention(q2, k2, v2, chunk_size=chunk)
        assert torch.allclose(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-12)
        assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])


def test_bf16_inputs_accumulate_in_float32():
    q, k, v = positive_inputs(t=64, f=16, dv=8)
    ref = quadratic_reference(q.bfloat16(), k.bfloat16(), v.bfloat16(), True)
    out = linear_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), chunk_size=16)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.double(), ref, rtol=2e-2, atol=2e-2)


def test_zero_features_give_zero_not_nan():
    q, k, v = positive_inputs(t=10)
    out = linear_attention(torch.zeros_like(q), k, v)
    assert torch.isfinite(out).all() and (out == 0).all()


def test_shape_errors_name_the_file():
    q, k, v = positive_inputs()
    with pytest.raises(ValueError, match="attention.py"):
        linear_attention(q, k[:, :5], v)
    with pytest.raises(ValueError, match="attention.py"):
        linear_attention(q[0], k[0], v[0])


def test_flop_count_by_hand():
    # T = 4, C = 2 (N = 2 chunks, scans (N − 1)·width additions), F = Dv = 1. Forward: states and
    # inter 2·4·1·1 each = 16; scores 2·4·2·1 = 16; A·v 16; scans 1·1 twice = 2; normaliser
    # A·1 4·2 = 8 and q·z, Σk 3·4 = 12; division 4.
    assert chunked_attention_flops(4, 1, 1, chunk_size=2) == 16 + 16 + 16 + 2 + 8 + 12 + 4
    fwd = chunked_attention_flops(8192, 128, 128, chunk_size=64)
    both = chunked_attention_flops(8192, 128, 128, chunk_size=64, backward=True)
    assert 2.5 * fwd < both < 3.5 * fwd  # backward ≈ 2 × forward


@pytest.mark.parametrize("width", [4, 1500])  # the narrow (cumsum) and wide (slice-loop) scans
@pytest.mark.parametrize("n", [1, 2, 5, 64, 65, 130])
def test_exclusive_scan_matches_cumsum(n, width):
    from stripes.nn.attention import _exclusive_scan

    x = torch.randn(3, n, width, dtype=torch.float64)
    prefix = torch.cumsum(x, 1) - x
    suffix = torch.flip(torch.cumsum(torch.flip(x, [1]), 1), [1]) - x
    assert torch.allclose(_exclusive_scan(x), prefix, atol=1e-12)
    assert torch.allclose(_exclusive_scan(x, reverse=True), suffix, atol=1e-12)


@pytest.mark.parametrize("rows,n", [(1, 1), (1, 6), (3, 4)])
def test_state_scan_sums_earlier_or_later_chunk_products(rows, n):
    """_state_scan (bmm + _exclusive_scan) against cumulative sums of the chunk products aᵢᵀbᵢ."""
    from stripes.nn.attention import _state_scan

    a = torch.randn(rows * n, 4, 3, dtype=torch.float64)
    b = torch.randn(rows * n, 4, 5, dtype=torch.float64)
    products = torch.einsum("ncf,ncx->nfx", a, b).view(rows, n, 3, 5)
    prefix = (torch.cumsum(products, 1) - products).view(-1, 3, 5)
    suffix = (torch.flip(torch.cumsum(torch.flip(products, [1]), 1), [1]) - products).view(-1, 3, 5)
    assert torch.allclose(_state_scan(a, b, rows), prefix, atol=1e-12)
    assert torch.allclose(_state_scan(a, b, rows, reverse=True), suffix, atol=1e-12)


@pytest.mark.parametrize("chunk", [1, 4, 7, 64])
def test_gradients_match_quadratic_reference(chunk):
    q, k, v = positive_inputs(t=19)
    assert_matches_reference(q, k, v, torch.randn(2, 19, 3, 4, dtype=torch.float64), chunk_size=chunk)


@pytest.mark.parametrize("heads", [1, 2])
def test_wide_states_one_head_and_strided_inputs_match_reference(heads):
    """F·Dv > 1024 takes the slice-loop scan; H = 1 makes every head view the input itself; the
    inputs are non-contiguous views; the incoming gradient must come back unmodified."""
    q, k, v = positive_inputs(b=2, t=37, h=heads, f=40, dv=32, seed=3)
    q, k = (x.transpose(0, 1).contiguous().transpose(0, 1) for x in (q, k))  # strided, same values
    grad = torch.randn(2, 37, heads, 32, dtype=torch.float64)
    kept = grad.clone()
    assert_matches_reference(q, k, v, grad, chunk_size=8)
    assert torch.equal(grad, kept)


def test_gradcheck_small():
    q, k, v = positive_inputs(b=1, t=7, h=2, f=3, dv=2)
    leaves = [x.requires_grad_() for x in (q, k, v)]
    assert torch.autograd.gradcheck(lambda a, b, c: linear_attention(a, b, c, chunk_size=3), leaves)


def test_favor_features_approximate_softmax_kernel():
    torch.manual_seed(0)
    f = 8
    fmap = FavorFeatureMap(f, num_features=8192).double()
    q = 0.5 * torch.randn(1, 1, 1, f, dtype=torch.float64)
    k = 0.5 * torch.randn(1, 1, 1, f, dtype=torch.float64)
    phi_q, phi_k = fmap.forward_qk(q, k)
    # Undo the stabilisation factors (both are scalars for one query / the whole key set).
    w = fmap.directions.double()
    qx, kx = q * f ** -0.25, k * f ** -0.25
    q_shift = (qx @ w.T - 0.5 * (qx * qx).sum(-1, keepdim=True)).amax()
    k_shift = (kx @ w.T - 0.5 * (kx * kx).sum(-1, keepdim=True)).amax()
    estimate = (phi_q * phi_k).sum() * torch.exp(q_shift + k_shift)
    exact = torch.exp((q * k).sum() / math.sqrt(f))
    assert abs(estimate / exact - 1) < 0.05


def test_favor_attention_matches_unstabilised_reference_and_is_causal():
    torch.manual_seed(1)
    f, t = 6, 17
    fmap = FavorFeatureMap(f, num_features=32).double()
    q = torch.randn(1, t, 2, f, dtype=torch.float64)
    k = torch.randn(1, t, 2, f, dtype=torch.float64)
    v = torch.randn(1, t, 2, 3, dtype=torch.float64)
    phi_q, phi_k = fmap.forward_qk(q, k)
    w = fmap.directions
    raw = lambda x: torch.exp((x * f ** -0.25) @ w.T - 0.5 * ((x * f ** -0.25) ** 2).sum(-1, keepdim=True))
    ref = quadratic_reference(raw(q), raw(k), v, True, eps=0.0)
    out = linear_attention(phi_q, phi_k, v, chunk_size=5, eps=0.0)
    assert torch.allclose(out, ref, rtol=1e-9, atol=1e-10)


def test_per_query_eps_tensor_matches_reference_and_gradcheck():
    q, k, v = positive_inputs(b=1, t=7, h=2, f=3, dv=2)
    eps = torch.rand(1, 7, 2, dtype=torch.float64) + 0.1  # (B, T, H)
    for causal in (True, False):
        out = linear_attention(q, k, v, causal=causal, chunk_size=3, eps=eps)
        ref = quadratic_reference(q, k, v, causal, eps=eps)
        assert torch.allclose(out, ref, rtol=1e-10, atol=1e-12)
    leaves = [x.requires_grad_() for x in (q, k, v)]
    assert torch.autograd.gradcheck(lambda a, b, c: linear_attention(a, b, c, chunk_size=3, eps=eps), leaves)
    with pytest.raises(ValueError, match="eps must be"):
        linear_attention(q, k, v, eps=eps[:, :3])


def _favor_vs_softmax_error(f, m, seeds=3, t=64):
    """Mean relative L1 error of causal FAVOR+ linear attention (default ε, float32) against exact
    causal softmax attention with scale 1/√F (SDPA), over ``seeds`` draws of the directions."""
    g = torch.Generator().manual_seed(0)
    q, k = (0.5 * torch.randn(1, t, 2, f, generator=g) for _ in range(2))
    v = torch.randn(1, t, 2, f, generator=g)
    exact = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True).transpose(1, 2)
    errors, magnitudes = [], []
    for seed in range(seeds):
        torch.manual_seed(seed)
        fmap = FavorFeatureMap(f, num_features=m)
        phi_q, phi_k, log_scale = fmap.features(q, k)
        y = linear_attention(phi_q, phi_k, v, eps=fmap.scaled_eps(1e-6, log_scale))  # default ε
        errors.append(((y - exact).abs().mean() / exact.abs().mean()).item())
        magnitudes.append((y.abs().mean() / exact.abs().mean()).item())
    return sum(errors) / seeds, sum(magnitudes) / seeds


@pytest.mark.parametrize("f", [16, 128])
def test_favor_with_default_eps_approaches_softmax_attention_as_m_grows(f):
    # issue 11: with the old constant key shift (−max|w|²/2) φ(k) underflowed and the output was ≈ 0
    # at F = 128 (relative error 1.0 at every M); the error must fall with M (≈ 1/√M)
    results = {m: _favor_vs_softmax_error(f, m) for m in (64, 512, 4096)}
    errors = [results[m][0] for m in (64, 512, 4096)]
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.25 and errors[2] < 0.4 * errors[0], errors
    assert results[4096][1] == pytest.approx(1.0, abs=0.1)  # output magnitude of exact attention


def test_favor_is_causal_with_default_eps_and_its_options_come_from_the_config():
    torch.manual_seed(2)
    f, t, cut = 128, 40, 19
    fmap = FavorFeatureMap(f, num_features=256)
    q, k, v = (0.5 * torch.randn(1, t, 2, f) for _ in range(3))
    k2, v2 = k.clone(), v.clone()
    k2[:, cut + 1:] *= 2.0  # larger future keys move the per-sequence key maximum
    v2[:, cut + 1:] += 1.0
    outs = []
    for keys, values in ((k, v), (k2, v2)):
        phi_q, phi_k, log_scale = fmap.features(q, keys)
        outs.append(linear_attention(phi_q, phi_k, values, eps=fmap.scaled_eps(1e-6, log_scale)))
    y, y2 = outs
    assert torch.allclose(y[:, : cut + 1], y2[:, : cut + 1], rtol=1e-4, atol=1e-6)
    # the unscaled ε is the fault: against the shifted features it is large and the past moves
    y_bad = [linear_attention(*fmap.forward_qk(q, keys), v) for keys in (k, k2)]
    assert not torch.allclose(y_bad[0][:, : cut + 1], y_bad[1][:, : cut + 1], rtol=1e-4, atol=1e-6)
    # equal to the unstabilised float64 formula with ε = 1e-6 (a per-query ε tensor, chunked kernel)
    w = fmap.directions.double()
    raw = lambda x: torch.exp((x.double() * f ** -0.25) @ w.T
                              - 0.5 * ((x.double() * f ** -0.25) ** 2).sum(-1, keepdim=True))
    ref = quadratic_reference(raw(q) / 16, raw(k) / 16, v, True, eps=1e-6)
    assert torch.allclose(y.double(), ref, rtol=1e-3, atol=1e-5)
    assert not torch.allclose(y[:, cut + 1:], y2[:, cut + 1:])
    from omegaconf import OmegaConf

    from stripes.nn.transformer import HarmonizationTransformer

    cfg = OmegaConf.load("conf/model/transformer.yaml")
    cfg.feature_map, cfg.favor.num_features, cfg.favor.redraw = "favor", 48, True
    model = HarmonizationTransformer.from_config(OmegaConf.create(
        {"model": cfg, "pe": {"name": "rope_a"}, "context": {"pos_dim": 1}}))
    fmaps = [layer.attention.feature_map for layer in model.layers]
    assert all(fm.out_dim == 48 and fm.redraw for fm in fmaps)
    before = fmaps[0].directions.clone()
    model.train()(torch.zeros(1, 8, 256), torch.zeros(1, 8, 1))
    assert not torch.equal(before, fmaps[0].directions)  # redrawn in training mode
    before = fmaps[0].directions.clone()
    model.eval()(torch.zeros(1, 8, 256), torch.zeros(1, 8, 1))
    assert torch.equal(before, fmaps[0].directions)  # fixed at evaluation


def _layer_inputs(t, pos_dim, d_model=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, t, d_model, generator=g, dtype=torch.float64)
    pos = torch.randint(0, 5, (2, t, pos_dim), generator=g).double()
    return x, pos


@pytest.mark.parametrize("kind", ["linear", "softmax"])
@pytest.mark.parametrize("name", pe_names())
@pytest.mark.parametrize("pos_dim", [1, 12])
def test_layer_is_causal_for_every_pe(name, kind, pos_dim):
    torch.manual_seed(0)
    pe = build_pe(name, num_heads=2, head_dim=8, pos_dim=pos_dim)
    layer = MultiHeadAttention(16, 2, pe, kind=kind, chunk_size=4).double()
    t, cut = 11, 6
    x, pos = _layer_inputs(t, pos_dim)
    x2, pos2 = x.clone(), pos.clone()
    x2[:, cut + 1:] = torch.randn_like(x2[:, cut + 1:]) * 10
    pos2[:, cut + 1:] += 3.0
    torch.manual_seed(5)  # SPE draws its noise per call: use the same draw for both calls
    y = layer(x, pos)
    torch.manual_seed(5)
    y2 = layer(x2, pos2)
    assert y.shape == (2, t, 16)
    assert torch.allclose(y[:, : cut + 1], y2[:, : cut + 1], rtol=0, atol=1e-10)
    assert not torch.allclose(y[:, cut + 1:], y2[:, cut + 1:])


def test_layer_favor_and_dropout_options_run():
    pe = build_pe("rope_c", 2, 8, 1)
    layer = MultiHeadAttention(16, 2, pe, feature_map="favor", dropout=0.1,
                               feature_map_options={"num_features": 16, "redraw": True})
    x, pos = _layer_inputs(9, 1)
    y = layer(x.float(), pos.float())
    assert torch.isfinite(y).all()
    with pytest.raises(ValueError, match="attention.py"):
        MultiHeadAttention(15, 2, pe)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_no_nan_or_inf_at_8192_with_large_inputs(dtype):
    torch.manual_seed(0)
    t, h, d = 8192, 2, 32
    q = (100 * torch.randn(1, t, h, d)).to(dtype)
    k = (100 * torch.randn(1, t, h, d)).to(dtype)
    v = (100 * torch.randn(1, t, h, d)).to(dtype)
    for pos_dim, pos in ((1, torch.arange(t, dtype=torch.float32).view(1, t, 1)),
                         (12, torch.randint(0, 2, (1, t, 12)).float())):
        for name in pe_names():
            pe = build_pe(name, h, d, pos_dim).to(dtype)
            qt, kt = pe.forward_qk(q, k, pos)
            for fmap in ("elu", "favor"):
                phi = (FavorFeatureMap(pe.out_dim, 32) if fmap == "favor"
                       else None)
                if phi is None:
                    fq, fk = torch.nn.functional.elu(qt.float()) + 1, torch.nn.functional.elu(kt.float()) + 1
                else:
                    fq, fk = phi.forward_qk(qt, kt)
                y = linear_attention(fq.to(dtype), fk.to(dtype), v)
                assert y.dtype == dtype
                assert torch.isfinite(y).all(), (name, pos_dim, fmap, dtype)


def test_elu_plus_one_matches_elu_values_and_gradient():
    """Against the closed form φ = x + 1 (x > 0) or exp(x), slope 1 or exp(x), and F.elu + 1 (whose
    expm1(x) + 1 loses relative precision for very negative x, hence its absolute tolerance)."""
    from stripes.nn.attention import elu_plus_one

    x = torch.cat([torch.linspace(-30, 30, 601, dtype=torch.float64), torch.tensor([0.0, -0.0, 1e-300])])
    leaf = x.clone().requires_grad_()
    y = elu_plus_one(leaf)
    exact = torch.where(x > 0, x + 1, torch.exp(x))
    assert torch.allclose(y, exact, rtol=1e-15, atol=0)
    assert torch.allclose(y, torch.nn.functional.elu(x) + 1, rtol=0, atol=1e-15)
    grad = torch.randn_like(x)
    y.backward(grad)
    assert torch.allclose(leaf.grad, grad * torch.where(x > 0, torch.ones_like(x), torch.exp(x)), rtol=1e-15, atol=0)
    assert torch.autograd.gradcheck(elu_plus_one, (torch.randn(20, dtype=torch.float64, requires_grad=True),))


@pytest.mark.parametrize("heads,chunk", [(1, 8), (3, 5), (2, 64)])  # 5 and 64 pad T = 37
def test_elu_feature_map_inside_matches_phi_then_attention(heads, chunk):
    """feature_map="elu" (φ fused into the chunk gathering and the gradient write-back) against
    φ = elu + 1 applied first and the quadratic float64 reference: outputs and raw-input gradients."""
    g = torch.Generator().manual_seed(5)
    q, k = (torch.randn(2, 37, heads, 6, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(2, 37, heads, 4, generator=g, dtype=torch.float64)
    grad = torch.randn(2, 37, heads, 4, generator=g, dtype=torch.float64)
    fused = [x.clone().requires_grad_() for x in (q, k, v)]
    out = linear_attention(*fused, chunk_size=chunk, feature_map="elu")
    out.backward(grad)
    refs = [x.clone().requires_grad_() for x in (q, k, v)]
    phi = lambda x: torch.nn.functional.elu(x) + 1  # noqa: E731
    ref = quadratic_reference(phi(refs[0]), phi(refs[1]), refs[2], True)
    ref.backward(grad)
    assert torch.allclose(out, ref, rtol=1e-9, atol=1e-10)
    for a, b in zip(fused, refs):
        assert torch.allclose(a.grad, b.grad, rtol=1e-9, atol=1e-10)
    # the non-causal path applies φ first
    assert torch.allclose(linear_attention(q, k, v, causal=False, feature_map="elu"),
                          quadratic_reference(phi(q), phi(k), v, False), rtol=1e-9, atol=1e-10)
    with pytest.raises(ValueError, match="feature_map"):
        linear_attention(q, k, v, feature_map="relu")


@pytest.mark.parametrize("group", [1, 2, 4])
def test_head_groups_give_the_same_result(group, monkeypatch):
    """Heads gathered 1, 2 or 4 at a time (GROUP_STATE_BYTES): outputs and gradients against the
    quadratic reference, with φ inside and a per-query ε tensor."""
    import stripes.nn.attention as attention

    b, t, h, f, dv = 2, 29, 4, 3, 5
    per_head = b * 4 * f * dv * 8  # float64, N = 4 chunks of 8
    monkeypatch.setattr(attention, "GROUP_STATE_BYTES", group * per_head)
    assert [s.stop - s.start for s in attention._head_groups(h, per_head)] == [group] * (h // group)
    g = torch.Generator().manual_seed(11)
    q, k = (torch.randn(b, t, h, f, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(b, t, h, dv, generator=g, dtype=torch.float64)
    eps = 0.1 + torch.rand(b, t, h, generator=g, dtype=torch.float64)
    grad = torch.randn(b, t, h, dv, generator=g, dtype=torch.float64)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out = linear_attention(*leaves, chunk_size=8, eps=eps, feature_map="elu")
    out.backward(grad)
    refs = [x.clone().requires_grad_() for x in (q, k, v)]
    phi = lambda x: torch.nn.functional.elu(x) + 1  # noqa: E731
    ref = quadratic_reference(phi(refs[0]), phi(refs[1]), refs[2], True, eps=eps)
    ref.backward(grad)
    assert torch.allclose(out, ref, rtol=1e-9, atol=1e-10)
    for x, y in zip(leaves, refs):
        assert torch.allclose(x.grad, y.grad, rtol=1e-9, atol=1e-10)


def test_head_groups_divide_the_heads():
    from stripes.nn.attention import GROUP_STATE_BYTES, _head_groups

    assert _head_groups(4, GROUP_STATE_BYTES // 2) == [slice(0, 2), slice(2, 4)]
    assert _head_groups(6, GROUP_STATE_BYTES // 4) == [slice(0, 3), slice(3, 6)]  # 4 does not divide 6
    assert _head_groups(4, 2 * GROUP_STATE_BYTES) == [slice(i, i + 1) for i in range(4)]
    assert _head_groups(8, 1) == [slice(0, 8)]
