"""The `paper` profile end to end on the CPU: what only that profile touches runs in `make test`.

The real conf/profile/paper.yaml (16 ticks per quarter: 1024-tick training windows and 4096-tick
64-bar test windows, d_model 512 / 4 heads / head dim 128 / d_ff 512, the authors' curriculum
16 → T over 2875 steps, the 3-epoch warm-up of `optim.warmup_epochs` and StepLR γ 0.85, gradient
clipping, 4 data-loader workers) composed with `trainer=cpu` on the fixture data root
(tests/fixtures/pop909.py: 6 songs of 72 bars, so every test song holds a 64-bar window). Only the
number of epochs is cut (5 epochs of the fixture's 2 training batches = 10 steps, enough to end
the warm-up and decay twice; every step logged). The finished run is then scored through the real evaluation code
(`stripes.evaluate.evaluate_run`) on its validation, 16-bar and 64-bar test windows.

Independent references: the learning rate that Lightning logged at every step against the
hand-computed schedule of spec decision 11, the window lengths against 16 ticks × 4 quarters × bars,
and the store rows against the data module's own window counts.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from stripes.data.datamodule import build_datamodule
from stripes.evaluate import evaluate_run
from stripes.runs import load_config
from stripes.train import train

CONF = str(Path(__file__).resolve().parents[1] / "conf")
EPOCHS, STEPS_PER_EPOCH, WARMUP_EPOCHS, GAMMA = 5, 2, 3, 0.85

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def paper_cfg(root: Path, cache: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("train", overrides=[
            "profile=paper", "trainer=cpu", f"data.root={root}", f"data.cache_dir={cache}",
            "logger=csv", "pe=ropepool", "context=bin", "optim.lr=0.001",
            f"trainer.max_epochs={EPOCHS}", "trainer.log_every_n_steps=1", *overrides,
        ])


@pytest.fixture(scope="module")
def paper_run(fake_pop909_root, tmp_path_factory):
    cache = tmp_path_factory.mktemp("paper-cache")
    run_dir = tmp_path_factory.mktemp("runs") / "paper" / "ropepool-bin"
    cfg = paper_cfg(fake_pop909_root, cache)
    info = train(cfg, run_dir)
    return cfg, run_dir, info, cache


def test_the_composed_config_is_the_paper_protocol(paper_run):
    cfg, run_dir, info, _ = paper_run
    saved = load_config(run_dir)
    for c in (cfg, saved):
        assert c.profile_name == "paper" and c.trainer.accelerator == "cpu"
        assert c.data.ticks_per_quarter == 16 and c.data.batch_size == 8 and c.data.num_workers == 4
        assert (c.model.d_model, c.model.num_heads, c.model.d_ff, c.model.num_layers) == (512, 4, 512, 2)
        assert (c.curriculum.start_length, c.curriculum.ramp_steps) == (16, 2875)
        assert c.optim.warmup_epochs == WARMUP_EPOCHS and c.optim.warmup_steps is None
        assert c.optim.decay_gamma == GAMMA and c.trainer.gradient_clip_val == 0.0005
    assert info["status"] == "finished" and info["profile"] == "paper"


def test_learning_rate_follows_decision_11_at_every_step(paper_run):
    cfg, run_dir, _, _ = paper_run
    metrics = pd.read_csv(run_dir / "metrics.csv")
    lr = metrics.dropna(subset=["lr-Adam"]).groupby("step")["lr-Adam"].first()
    assert list(lr.index) == list(range(EPOCHS * STEPS_PER_EPOCH))
    # hand-computed: warm-up over 3 epochs x 2 steps = 6 steps, then one decay per epoch after it
    expected = [1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0, 1.0, 1.0, GAMMA, GAMMA]
    assert lr.to_numpy() == pytest.approx([0.001 * f for f in expected], rel=1e-9)
    lengths = metrics.dropna(subset=["train/length"]).groupby("step")["train/length"].first()
    # the authors' curriculum: 16 + (1024 - 16) * step / 2875 ticks
    assert list(lengths.astype(int)) == [int(16 + 1008 * s / 2875) for s in range(len(lengths))]


def test_evaluation_on_16_and_64_bar_windows(paper_run, fake_pop909_root):
    cfg, run_dir, _, cache = paper_run
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        eval_cfg = compose("evaluate", overrides=[
            f"data.root={fake_pop909_root}", "splits=[val,test16,test64]", "wandb.enabled=false",
        ])
    rows = evaluate_run(run_dir, eval_cfg)
    dm = build_datamodule(load_config(run_dir))
    dm.setup()
    for split, bars in (("val", 16), ("test16", 16), ("test64", 64)):
        batches = list(dm.predict_dataloader(split))
        assert batches, f"the fixture has no {split} window"
        assert {b["input"].shape[1] for b in batches} == {16 * 4 * bars}  # 16 ticks x 4 quarters x bars
        got = rows[rows.split == split]
        assert set(got.metric) == {"CS", "SSMD", "GS", "NDD"}
        assert set(got.binarization) == {"threshold", "threshold_merge"}
        assert (got.n_windows == sum(len(b["input"]) for b in batches)).all()
        assert got.value.notna().all() and (got.ticks_per_quarter == 16).all()
    assert set(rows.setting) == {"16-16", "16-64"}
    windows = pd.read_csv(run_dir / "eval" / "windows.csv")
    assert set(windows.split) == {"val", "test16", "test64"}
    assert OmegaConf.select(load_config(run_dir), "data.root") == str(fake_pop909_root)
