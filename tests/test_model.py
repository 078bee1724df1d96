"""HarmonizationTransformer and the pure training helpers of stripes.lit (no data needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from stripes.lit import curriculum_length, lr_factor, masked_bce_with_logits
from stripes.nn.transformer import HarmonizationTransformer

CONF = str(Path(__file__).resolve().parents[1] / "conf")
PES = ["nope", "spe", "fstripe", "fstripe1", "rope_a", "rope_b", "rope_c", "ropepool"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def smoke_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("train", overrides=["profile=smoke", *overrides])


def positions(batch: int, length: int, pos_dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if pos_dim == 1:
        return torch.arange(length, dtype=torch.float32).view(1, length, 1).repeat(batch, 1, 1)
    return (torch.rand(batch, length, pos_dim, generator=g) < 0.3).float()


@pytest.mark.parametrize("attention", ["linear", "softmax"])
@pytest.mark.parametrize("pe", PES)
def test_causal_through_the_whole_model(pe, attention):
    """Changing inputs (and positions) after tick t leaves the logits up to t unchanged."""
    context = "bin" if pe in ("fstripe", "ropepool") else "time"
    cfg = smoke_cfg(f"pe={pe}", f"context={context}", f"model.attention={attention}")
    torch.manual_seed(0)
    model = HarmonizationTransformer.from_config(cfg).eval()
    length, t = 24, 11
    x = (torch.rand(2, length, 256) < 0.2).float()
    pos = positions(2, length, int(cfg.context.pos_dim))
    x2, pos2 = x.clone(), pos.clone()
    x2[:, t + 1:] = (torch.rand(2, length - t - 1, 256) < 0.5).float()
    pos2[:, t + 1:] = pos2[:, t + 1:] + 3.0
    torch.manual_seed(1)  # SPE draws fresh noise per forward: same draw for both calls
    y = model(x, pos)
    torch.manual_seed(1)
    y2 = model(x2, pos2)
    assert y.shape == (2, length, 384)
    torch.testing.assert_close(y[:, : t + 1], y2[:, : t + 1], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(y[:, t + 1:], y2[:, t + 1:])


@pytest.mark.parametrize("pe", ["spe", "fstripe", "fstripe1", "rope_c", "ropepool"])
def test_gradients_reach_learnable_frequencies(pe):
    cfg = smoke_cfg(f"pe={pe}", "context=bin")
    model = HarmonizationTransformer.from_config(cfg)
    x = (torch.rand(2, 16, 256) < 0.2).float()
    model(x, positions(2, 16, 12)).pow(2).mean().backward()
    grads = [p.grad for n, p in model.named_parameters() if "freq" in n]
    assert grads, f"{pe}: no learnable frequency parameter found"
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_pe_shared_by_layers_by_default_and_separate_when_asked():
    cfg = smoke_cfg("pe=rope_c")
    shared = HarmonizationTransformer.from_config(cfg)
    assert len(shared.layers) == 2 and len(shared.positional_encodings()) == 1
    cfg.model.share_pe = False
    separate = HarmonizationTransformer.from_config(cfg)
    assert len(separate.positional_encodings()) == 2


def test_post_ln_layer_matches_hand_composition():
    """One layer = LN(h + FFN(h)), h = LN(x + Attn(x)) (post-LN, dropout off)."""
    cfg = smoke_cfg("pe=nope")
    model = HarmonizationTransformer.from_config(cfg).eval()
    layer = model.layers[0]
    x, pos = torch.randn(1, 8, 16), positions(1, 8, 1)
    h = layer.norm_attention(x + layer.attention(x, pos))
    expected = layer.norm_feedforward(h + layer.feedforward_out(torch.relu(layer.feedforward_in(h))))
    torch.testing.assert_close(layer(x, pos), expected)


def test_bad_shapes_are_reported():
    model = HarmonizationTransformer.from_config(smoke_cfg("pe=nope"))
    with pytest.raises(ValueError, match="inputs must be"):
        model(torch.zeros(1, 4, 128), torch.zeros(1, 4, 1))
    with pytest.raises(ValueError, match="positions must be"):
        model(torch.zeros(1, 4, 256), torch.zeros(1, 4, 12))


def test_masked_bce_ignores_padding():
    logits, target = torch.randn(2, 5, 384), (torch.rand(2, 5, 384) < 0.5).float()
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    expected = torch.cat([
        F.binary_cross_entropy_with_logits(logits[0, :3], target[0, :3], reduction="none").flatten(),
        F.binary_cross_entropy_with_logits(logits[1], target[1], reduction="none").flatten(),
    ]).mean()
    torch.testing.assert_close(masked_bce_with_logits(logits, target, mask), expected)
    logits2 = logits.clone()
    logits2[0, 3:] = 100.0
    torch.testing.assert_close(masked_bce_with_logits(logits2, target, mask), expected)


def test_curriculum_length_is_the_authors_ramp():
    # 16 + (1024 - 16) * step / 2875 (authors' code), then the full window
    assert curriculum_length(0, 1024, 16, 2875) == 16
    assert curriculum_length(1000, 1024, 16, 2875) == int(16 + 1008 * 1000 / 2875)
    assert curriculum_length(2875, 1024, 16, 2875) == 1024
    assert curriculum_length(10**6, 1024, 16, 2875) == 1024
    assert curriculum_length(5, 64, 16, 0) == 64  # ramp off


def test_lr_factor_at_the_paper_profile_step_counts():
    # Spec decision 11 at the paper profile: 452 steps per epoch (3610 windows / batch 8), warm-up
    # 3 epochs = 1356 steps, gamma 0.85 per epoch counted from the end of the warm-up. Hand-computed:
    spe, warm, gamma = 452, 3 * 452, 0.85
    expected = {
        0: 1 / 1356,                  # first step of the ramp
        677: 678 / 1356,              # = 0.5, mid-ramp (no decay mixed in)
        1355: 1.0,                    # last warm-up step: the peak, exactly the grid value
        1356: 1.0, 1807: 1.0,         # the first epoch after the warm-up is not decayed
        1808: 0.85,                   # one epoch after the warm-up
        1356 + 5 * 452: 0.85**5,
        15 * 452 - 1: 0.85**11,       # last step of epoch 15 (11 decays, 0.167)
    }
    for step, value in expected.items():
        assert lr_factor(step, spe, warm, gamma, 1) == pytest.approx(value, rel=1e-12), step
    assert lr_factor(1355, spe, warm, gamma, 1) == 1.0
    # the defect this replaces: warm-up times a decay already running since epoch 0 gave 0.85^2 here
    assert max(lr_factor(s, spe, warm, gamma, 1) for s in range(15 * spe)) == 1.0
    # decay every 2 epochs, and no warm-up at all
    assert lr_factor(1356 + 3 * 452, spe, warm, gamma, 2) == pytest.approx(0.85)
    assert lr_factor(0, 10, 0, 0.5, 1) == 1.0 and lr_factor(25, 10, 0, 0.5, 1) == 0.25
    with pytest.raises(ValueError, match="steps_per_epoch"):
        lr_factor(0, 0, 10, 0.85, 1)