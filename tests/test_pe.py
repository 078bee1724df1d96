"""Positional encodings against the paper's closed forms ([S] eq. 14, 15, 23–26; [F] eq. 9, 11)."""

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from stripes.nn.attention import MultiHeadAttention
from stripes.pe import build_pe, pe_names
from stripes.pe.fstripe1 import FStripe1
from stripes.pe.ropepool import RoPEPool

CONF = Path(__file__).resolve().parents[1] / "conf" / "pe"
DT = torch.float64


def rand_qk(t=6, h=2, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, t, h, d, generator=g, dtype=DT), torch.randn(1, t, h, d, generator=g, dtype=DT))


def rand_pos(t=6, p=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, t, p, generator=g, dtype=DT) * 3


def dots(a, b):
    """(1,T,H,F) × (1,T,H,F) → (H, T, T) matrix of feature dot products."""
    return torch.einsum("mhf,nhf->hmn", a[0], b[0])


def test_rope_equals_eq14_and_depends_only_on_lag():
    q, k = rand_qk()
    pos = rand_pos()
    for name in ("rope_a", "rope_b", "rope_c"):
        pe = build_pe(name, 2, 8, 3).double()
        got = dots(pe(q, pos), pe(k, pos))
        f = pe.frequencies.detach().double()  # (H, D/2, P)
        expected = torch.zeros_like(got)
        for h in range(2):
            for m in range(6):
                for n in range(6):
                    s = 0.0
                    for j in range(4):
                        delta = f[h, j] @ (pos[0, m] - pos[0, n])
                        q1, q2 = q[0, m, h, 2 * j], q[0, m, h, 2 * j + 1]
                        k1, k2 = k[0, n, h, 2 * j], k[0, n, h, 2 * j + 1]
                        s += (q1 * k1 + q2 * k2) * torch.cos(delta) + (q1 * k2 - q2 * k1) * torch.sin(delta)
                    expected[h, m, n] = s
        assert torch.allclose(got, expected, atol=1e-10)
        shifted = dots(pe(q, pos + 7.3), pe(k, pos + 7.3))
        assert torch.allclose(got, shifted, atol=1e-9)


def test_fstripe1_unpooled_equals_eq15_and_pooled_equals_double_sum():
    q, k = rand_qk()
    pos = rand_pos()
    unpooled = FStripe1(2, 8, 3, pooled=False).double()
    pooled = FStripe1(2, 8, 3, pooled=True).double()
    pooled.load_state_dict(unpooled.state_dict())
    f = unpooled.frequencies.detach()
    theta = torch.einsum("tp,hdp->thd", pos[0], f)  # (T,H,D)
    # eq. (15): Σ_d q_md k_nd cos(f_d·(p_m − p_n))
    eq15 = torch.einsum("mhd,nhd,mnhd->hmn", q[0], k[0], torch.cos(theta[:, None] - theta[None, :]))
    assert torch.allclose(dots(unpooled(q, pos), unpooled(k, pos)), eq15, atol=1e-10)
    # pooled: Σ_{d,d'} q_md k_nd' cos(θ_d(m) − θ_d'(n)) (cross-dimension terms included)
    cross = torch.cos(theta[:, None, :, :, None] - theta[None, :, :, None, :])  # (M,N,H,D,D')
    pooled_ref = torch.einsum("mhd,nhe,mnhde->hmn", q[0], k[0], cross)
    assert torch.allclose(dots(pooled(q, pos), pooled(k, pos)), pooled_ref, atol=1e-10)
    assert pooled.out_dim == 2 and unpooled.out_dim == 16
    assert tuple(unpooled.frequencies.shape) == (2, 8, 3)


def test_ropepool_equals_eq23_and_sees_the_sum_of_positions():
    q, k = rand_qk()
    pos = rand_pos()
    pe = build_pe("ropepool", 2, 8, 3).double()
    got = dots(pe(q, pos), pe(k, pos))
    f = pe.frequencies.detach()
    th = torch.einsum("tp,hjp->thj", pos[0], f)  # (T,H,D/2)
    dm = th[:, None] - th[None, :]
    dp = th[:, None] + th[None, :]
    q1, q2, k1, k2 = q[0, ..., 0::2], q[0, ..., 1::2], k[0, ..., 0::2], k[0, ..., 1::2]
    e = lambda a, b: torch.einsum("mhj,nhj->mnhj", a, b)
    eq23 = (
        (e(q1, k1) + e(q2, k2)) * torch.cos(dm) + (e(q1, k2) - e(q2, k1)) * torch.sin(dm)
        + (e(q1, k1) - e(q2, k2)) * torch.sin(dp) + (e(q1, k2) + e(q2, k1)) * torch.cos(dp)
    ).sum(-1).permute(2, 0, 1)
    assert torch.allclose(got, eq23, atol=1e-10)
    shifted = dots(pe(q, pos + 0.7), pe(k, pos + 0.7))
    assert (got - shifted).abs().max() > 1e-2
    assert pe.out_dim == 4 and tuple(pe.frequencies.shape) == (2, 4, 3)


def unit_pairs(psi):
    """Unit 2-vectors at angles psi, shaped (1, T, 1, 2)."""
    return torch.stack([torch.cos(psi), torch.sin(psi)], -1).view(1, -1, 1, 2)


@pytest.mark.parametrize("f", [0.0, 0.3, 1.0])
def test_unit_two_vectors_eq24_25_26(f):
    g = torch.Generator().manual_seed(3)
    psi = torch.rand(7, generator=g, dtype=DT) * math.pi
    xi = torch.rand(7, generator=g, dtype=DT) * math.pi
    x, pos = unit_pairs(psi), xi.view(1, -1, 1)
    dpsi = psi[:, None] - psi[None, :]
    dxi = xi[:, None] - xi[None, :]
    rope = build_pe("rope_c", 1, 2, 1).double()
    with torch.no_grad():
        rope.frequencies.fill_(f)
    assert torch.allclose(dots(rope(x, pos), rope(x, pos))[0], torch.cos(dpsi + f * dxi), atol=1e-12)  # (24)
    fs1 = FStripe1(1, 2, 1, pooled=False).double()
    with torch.no_grad():
        fs1.frequencies.fill_(f)  # one shared frequency for the pair, as eq. (25) assumes
    eq25 = torch.cos(dpsi) * torch.cos(f * dxi)
    assert torch.allclose(dots(fs1(x, pos), fs1(x, pos))[0], eq25, atol=1e-12)
    pool = RoPEPool(1, 2, 1).double()
    with torch.no_grad():
        pool.frequencies.fill_(f)
    a = psi + f * xi - math.pi / 4
    eq26 = 2 * torch.cos(a)[:, None] * torch.cos(a)[None, :]
    assert torch.allclose(dots(pool(x, pos), pool(x, pos))[0], eq26, atol=1e-12)


def test_rope_a_frequencies_follow_10000_power():
    pe = build_pe("rope_a", 4, 16, 12)
    assert tuple(pe.frequencies.shape) == (4, 8, 12)
    expected = torch.tensor([10000.0 ** (-2 * j / 16) for j in range(8)])
    for h in range(4):
        for p in range(12):  # vector positions: the scalar frequency times the all-ones vector
            assert torch.allclose(pe.frequencies[h, :, p], expected)
    assert not any(True for _ in pe.parameters())


def test_rope_b_heads_differ_and_follow_decision_9_4():
    pe = build_pe("rope_b", 4, 16, 1)
    f = pe.frequencies[..., 0]
    for a in range(4):
        for b in range(a + 1, 4):
            assert not torch.allclose(f[a], f[b])
    grid = torch.tensor([10000.0 ** (-k / 32) for k in range(32)])
    for h in range(4):
        assert torch.allclose(f[h], grid[h::4])
    c = build_pe("rope_c", 4, 16, 1)
    assert torch.allclose(c.frequencies.detach(), pe.frequencies)
    assert not any(True for _ in pe.parameters())


@pytest.mark.parametrize("name", ["rope_c", "ropepool", "fstripe1", "fstripe", "spe"])
def test_learnable_frequencies_receive_gradients(name):
    torch.manual_seed(0)
    pe = build_pe(name, 2, 8, 12)
    layer = MultiHeadAttention(16, 2, pe)
    x = torch.randn(2, 10, 16)
    pos = torch.randint(0, 2, (2, 10, 12)).float()
    layer(x, pos).pow(2).sum().backward()
    param = pe.freq_logits if name == "spe" else pe.frequencies
    assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0


def test_spe_mean_over_draws_approaches_kernel():
    torch.manual_seed(0)
    h, d, r, ksin = 1, 4, 4096, 2  # the R columns are independent draws too
    pe = build_pe("spe", h, d, 1, num_realizations=r, num_sines=ksin).double()
    q, k = rand_qk(t=5, h=h, d=d)
    pos = torch.arange(5, dtype=DT).view(1, 5, 1) * 3.0
    draws = 40
    acc = torch.zeros(5, 5, dtype=DT)
    with torch.no_grad():
        for _ in range(draws):
            qt, kt = pe.forward_qk(q, k, pos)
            acc += dots(qt, kt)[0]
        mean = acc / draws
        f = pe.frequencies[0, :, :, 0]  # (D, K)
        gains2 = torch.nn.functional.softplus(pe.gain_logits[0]) ** 2  # (D, K)
        gate = torch.sigmoid(pe.gate_logits[0])  # (D,)
        lag = pos[0, :, 0][:, None] - pos[0, :, 0][None, :]  # (M, N)
        cosines = torch.cos(2 * math.pi * f * lag[..., None, None] + pe.phases[0])  # (M,N,D,K)
        p_d = (gains2 * cosines).sum(-1) / (2 * ksin)  # (M,N,D)
        kernel = math.sqrt(r / d) * torch.einsum(
            "md,nd,mnd->mn", q[0, :, 0], k[0, :, 0], (1 - gate) * p_d + gate)
    err = (mean - kernel).abs().max() / kernel.abs().max()
    assert err < 0.05, err


def test_fstripe_single_dimension_equals_eq11():
    torch.manual_seed(0)
    pe = build_pe("fstripe", 1, 1, 2, num_frequencies=5).double()
    with torch.no_grad():
        pe.phases.normal_()
        pe.gains.uniform_(0.5, 2.0)
    q, k = rand_qk(t=6, h=1, d=1)
    pos = rand_pos(t=6, p=2)
    qt, kt = pe.forward_qk(q, k, pos)
    f = pe.frequencies[0, 0].detach()  # (Nf, P)
    lag = pos[0][:, None] - pos[0][None, :]  # (M,N,P)
    cos = torch.cos(2 * math.pi * lag @ f.T + pe.phases[0, 0].detach())  # (M,N,Nf)
    eq11 = q[0, :, 0, 0][:, None] * k[0, :, 0, 0][None, :] * (pe.gains[0, 0].detach() ** 2 * cos).mean(-1)
    assert torch.allclose(dots(qt, kt)[0], eq11, atol=1e-10)
    assert tuple(pe.frequencies.shape) == (1, 1, 5, 2) and pe.out_dim == 10


@pytest.mark.parametrize("name", pe_names())
def test_every_pe_is_causal_per_position(name):
    torch.manual_seed(0)
    pe = build_pe(name, 2, 8, 12).double()
    q, k = rand_qk(t=9)
    pos = torch.randint(0, 2, (1, 9, 12)).double()
    q2, k2, pos2 = q.clone(), k.clone(), pos.clone()
    q2[:, 5:] += 1.0
    k2[:, 5:] -= 2.0
    pos2[:, 5:] = 1 - pos2[:, 5:]
    torch.manual_seed(1)
    a = pe.forward_qk(q, k, pos)
    torch.manual_seed(1)
    b = pe.forward_qk(q2, k2, pos2)
    for x, y in zip(a, b):
        assert torch.equal(x[:, :5], y[:, :5])
        assert x.shape[-1] == pe.out_dim


def test_registry_and_shape_errors():
    with pytest.raises(ValueError, match="unknown PE"):
        build_pe("alibi", 2, 8, 1)
    with pytest.raises(TypeError, match="bad options"):
        build_pe("nope", 2, 8, 1, pooled=True)
    pe = build_pe("rope_a", 2, 8, 12)
    with pytest.raises(ValueError, match="pe/base.py"):
        pe(torch.randn(1, 4, 2, 8), torch.randn(1, 4, 1))
    with pytest.raises(ValueError, match="even head_dim"):
        build_pe("rope_a", 2, 7, 1)
    # (B, T) positions are accepted as P = 1
    assert build_pe("rope_b", 2, 8, 1)(torch.randn(1, 4, 2, 8), torch.arange(4.0).view(1, 4)).shape == (1, 4, 2, 8)


LABELS = {"nope": "NoPE", "spe": "SPE", "fstripe": "F-StrIPE", "fstripe1": "F-StrIPE1",
          "rope_a": "RoPE(A)", "rope_b": "RoPE(B)", "rope_c": "RoPE(C)", "ropepool": "RoPEPool"}


def test_configs_build_and_carry_the_paper_labels():
    files = sorted(CONF.glob("*.yaml"))
    assert {f.stem for f in files} == set(LABELS) == set(pe_names())
    for path in files:
        cfg = OmegaConf.load(path)
        assert cfg.name == path.stem and cfg.label == LABELS[path.stem]
        pe = build_pe(cfg.name, 4, 16, 12, **OmegaConf.to_container(cfg.options))
        assert pe(torch.randn(1, 3, 4, 16), torch.randn(1, 3, 12)).shape[-1] == pe.out_dim


def fstripe_direct(x, pos, frequencies, phases, gains):
    """The direct formula ([F] eq. 6, 9 pooled), materialising (B,T,H,D,Nf): the slow reference."""
    angle = 2 * math.pi * torch.einsum("btp,hdwp->bthdw", pos, frequencies) + phases
    weighted = x.unsqueeze(-1) * gains / math.sqrt(frequencies.shape[2])
    out = torch.stack([(weighted * torch.cos(angle)).sum(3), (weighted * torch.sin(angle)).sum(3)], -1)
    return out.flatten(-2)


@pytest.mark.parametrize("pos_dim, chunk", [(1, 5), (12, 3), (2, 1000)])
def test_fstripe_chunked_equals_the_direct_formula_with_gradients(pos_dim, chunk, monkeypatch):
    """Values and gradients (x, f, θ, λ) equal the (B,T,H,D,Nf) formula in float64, any chunking."""
    import stripes.pe.fstripe as fstripe

    monkeypatch.setattr(fstripe, "CHUNK_TOKENS", chunk)
    torch.manual_seed(0)
    pe = build_pe("fstripe", 3, 4, pos_dim, num_frequencies=5).double()
    with torch.no_grad():
        pe.frequencies.mul_(8.0)
        pe.phases.normal_()
        pe.gains.uniform_(0.5, 2.0)
    q = torch.randn(2, 7, 3, 4, dtype=DT, requires_grad=True)
    k = torch.randn(2, 7, 3, 4, dtype=DT, requires_grad=True)
    pos = torch.randn(2, 7, pos_dim, dtype=DT) * 3
    w_q, w_k = torch.randn(2, 7, 3, 10, dtype=DT), torch.randn(2, 7, 3, 10, dtype=DT)
    params = [q, k, pe.frequencies, pe.phases, pe.gains]

    def grads(qt, kt):
        return torch.autograd.grad((qt * w_q).sum() + (kt * w_k).sum(), params)

    qt, kt = pe.forward_qk(q, k, pos)
    got = grads(qt, kt)
    zero = torch.zeros_like(pe.phases)
    ref_q = fstripe_direct(q, pos, pe.frequencies, pe.phases, pe.gains)
    ref_k = fstripe_direct(k, pos, pe.frequencies, zero, pe.gains)
    torch.testing.assert_close(qt, ref_q, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kt, ref_k, rtol=1e-12, atol=1e-12)
    for a, b in zip(got, grads(ref_q, ref_k)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # the key side alone (forward) and a float32 input give the same numbers
    torch.testing.assert_close(pe(k, pos), ref_k, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pe.float()(k.float(), pos.float()), ref_k.float(), rtol=1e-4, atol=1e-4)


def test_fstripe_never_builds_the_btHDNf_tensor():
    """Peak autograd memory: no saved or temporary tensor of B·T·H·D·Nf elements (injected size)."""
    from torch.autograd.graph import saved_tensors_hooks

    torch.manual_seed(0)
    b, t, h, d, nf = 1, 512, 2, 16, 8
    pe = build_pe("fstripe", h, d, 1, num_frequencies=nf)
    q = torch.randn(b, t, h, d, requires_grad=True)
    k = torch.randn(b, t, h, d, requires_grad=True)
    pos = torch.arange(t, dtype=torch.float32).view(1, t, 1)
    sizes = []
    with saved_tensors_hooks(lambda x: sizes.append(x.numel()) or x, lambda x: x):
        qt, kt = pe.forward_qk(q, k, pos)
    assert max(sizes) <= b * t * h * max(d, 2 * nf), sizes
    (qt.sum() + kt.sum()).backward()
    assert q.grad.shape == q.shape and pe.frequencies.grad.abs().sum() > 0


def spe_direct(pe, x, pos, noise, query):
    """sineSPE codes written out term by term ([L] eq. 6–7 with the gate; the module doc)."""
    z, eps = noise
    h, d, k, r = pe.num_heads, pe.head_dim, pe.num_sines, pe.num_realizations
    angle = 2 * math.pi * torch.einsum("btp,hdkp->bthdk", pos, pe.frequencies)
    if query:
        angle = angle + pe.phases
    gate = torch.sigmoid(pe.gate_logits)
    weighted = (x * torch.sqrt(1 - gate)).unsqueeze(-1) * torch.nn.functional.softplus(pe.gain_logits)
    coded = torch.stack([weighted * torch.cos(angle), weighted * torch.sin(angle)], -1)
    out = torch.einsum("bthj,hjr->bthr", coded.flatten(3), z)
    out = out + torch.einsum("bthd,hdr->bthr", x * torch.sqrt(gate), eps)
    return out * (r * d) ** -0.25


@pytest.mark.parametrize("chunk", [3, 1000])
def test_spe_equals_the_term_by_term_formula_with_gradients(chunk, monkeypatch):
    """Values and gradients of every parameter equal the direct formula (float64), any chunking."""
    import stripes.pe.spe as spe

    monkeypatch.setattr(spe, "CHUNK_TOKENS", chunk)
    torch.manual_seed(0)
    pe = build_pe("spe", 3, 4, 12, num_realizations=6, num_sines=2).double()
    with torch.no_grad():
        pe.freq_logits.add_(4.0)  # frequencies well away from 0
        pe.gate_logits.normal_()
    q = torch.randn(2, 5, 3, 4, dtype=DT, requires_grad=True)
    k = torch.randn(2, 5, 3, 4, dtype=DT, requires_grad=True)
    pos = torch.randint(0, 2, (2, 5, 12)).double()
    noise = pe.draw_noise(dtype=DT, generator=torch.Generator().manual_seed(3))
    params = [q, k, pe.freq_logits, pe.phases, pe.gain_logits, pe.gate_logits]
    got = (pe.transform(q, pos, noise, query=True), pe.transform(k, pos, noise, query=False))
    ref = (spe_direct(pe, q, pos, noise, True), spe_direct(pe, k, pos, noise, False))
    w = [torch.randn_like(g) for g in got]
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(sum((g * v).sum() for g, v in zip(got, w)), params)
    grads_ref = torch.autograd.grad(sum((g * v).sum() for g, v in zip(ref, w)), params)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
