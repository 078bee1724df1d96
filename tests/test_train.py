"""Training through the composed Hydra config on the fake POP909 root (smoke profile).

Covers: one training + one predict step for every PE × context, overfitting one batch, resume
from last.ckpt with the same optimiser state, determinism, finished runs being skipped, a multirun
with a failing job, load_run/find_runs, W&B offline, and (slow) DDP on CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from stripes.data.datamodule import build_datamodule, crop_batch
from stripes.eval.curves import read_curves
from stripes.lit import HarmonizationModule, masked_bce_with_logits
from stripes.runs import find_runs, load_run, read_run_info, write_run_info
from stripes.train import build_trainer, train

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")
PES = ["nope", "spe", "fstripe", "fstripe1", "rope_a", "rope_b", "rope_c", "ropepool"]
CONTEXTS = ["time", "rep", "key", "bin"]
LEARNABLE = {"spe", "fstripe", "fstripe1", "rope_c", "ropepool"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def smoke_cfg(root: Path, cache: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("train", overrides=[
            "profile=smoke", f"data.root={root}", f"data.cache_dir={cache}", "logger=csv", *overrides,
        ])


@pytest.fixture(scope="module")
def batches(fake_pop909_root, cache_dir):
    """One training batch and one test16 batch per context (the data module built once each)."""
    out = {}
    for context in CONTEXTS:
        dm = build_datamodule(smoke_cfg(fake_pop909_root, cache_dir, f"context={context}"))
        dm.setup()
        out[context] = (next(iter(dm.train_dataloader())), next(iter(dm.predict_dataloader("test16"))))
    return out


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("pe", PES)
def test_one_training_and_predict_step(pe, context, batches, fake_pop909_root, cache_dir):
    cfg = smoke_cfg(fake_pop909_root, cache_dir, f"pe={pe}", f"context={context}")
    torch.manual_seed(0)
    module = HarmonizationModule(cfg)
    train_batch, test_batch = batches[context]
    batch = crop_batch(train_batch, 32)
    pos_dim = 12 if context == "bin" else 1
    assert batch["input"].shape[1:] == (32, 256) and batch["positions"].shape[-1] == pos_dim
    loss = module.training_step(batch, 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    freqs = [(n, p) for n, p in module.named_parameters() if "freq" in n]
    if pe in LEARNABLE:
        assert freqs and all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
                             for _, p in freqs), f"{pe}/{context}: no gradient on the frequencies"
    module.eval()
    with torch.no_grad():
        out = module.predict_step(test_batch, 0)
    assert out["logits"].shape == (*test_batch["input"].shape[:2], 384)
    assert torch.isfinite(out["logits"]).all()
    assert torch.equal(out["song"], test_batch["song"])


def test_overfits_one_batch_ropepool_bin(batches, fake_pop909_root, cache_dir):
    """Loss falls by 90 % and far below the best constant (per-output-unit rate) predictor's."""
    cfg = smoke_cfg(fake_pop909_root, cache_dir, "pe=ropepool", "context=bin", "model.d_model=32",
                    "model.d_ff=64", "model.num_heads=4")
    torch.manual_seed(0)
    model = HarmonizationModule(cfg).model
    batch = crop_batch(batches["bin"][0], 64)
    target, mask = batch["target"], batch["mask"].float()[..., None]
    rate = ((target * mask).sum((0, 1)) / mask.sum()).clamp(1e-4, 1 - 1e-4)
    constant = -(target * rate.log() + (1 - target) * (1 - rate).log()).mul(mask).sum() / (mask.sum() * 384)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(120):
        optimizer.zero_grad()
        loss = masked_bce_with_logits(model(batch["input"], batch["positions"]), target, batch["mask"])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"
    assert losses[-1] < 0.5 * float(constant), f"loss {losses[-1]:.4f} vs constant predictor {float(constant):.4f}"


def _run(root, cache, run_dir, *overrides):
    cfg = smoke_cfg(root, cache, "pe=ropepool", "context=bin", *overrides)
    return train(cfg, run_dir)


def test_resume_continues_with_the_same_optimizer_state(tmp_path, fake_pop909_root, cache_dir):
    from tests.test_run_faults import Killed, KillAtStep

    # reference: two epochs in one go
    ref = _run(fake_pop909_root, cache_dir, tmp_path / "ref", "trainer.max_epochs=2")
    assert ref["status"] == "finished" and ref["epochs"] == 2
    # killed at the start of epoch 2: the first epoch finished and checkpointed
    run = tmp_path / "run"
    cfg = smoke_cfg(fake_pop909_root, cache_dir, "pe=ropepool", "context=bin", "trainer.max_epochs=2")
    with pytest.raises(Killed):
        train(cfg, run, extra_callbacks=[KillAtStep(3)])
    after_first = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert after_first["epoch"] == 0 and after_first["global_step"] == 3  # end of the 1st epoch
    resumed = _run(fake_pop909_root, cache_dir, run, "trainer.max_epochs=2")
    assert resumed["status"] == "finished" and resumed["attempts"] == 2 and resumed["epochs"] == 2
    a = torch.load(tmp_path / "ref" / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"]
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=1e-6, atol=1e-7)
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        torch.testing.assert_close(sa["exp_avg_sq"], sb["exp_avg_sq"], rtol=1e-5, atol=1e-12)
    metrics = pd.read_csv(run / "metrics.csv")
    assert sorted(metrics["epoch"].dropna().unique().tolist()) == [0, 1]
    # the same loss curve as the uninterrupted run (deterministic given the seed)
    ref_val = pd.read_csv(tmp_path / "ref" / "metrics.csv")["val/loss"].dropna().to_numpy()
    assert metrics["val/loss"].dropna().to_numpy() == pytest.approx(ref_val, rel=1e-5)
    # a finished run is not trained again
    mtime = (run / "checkpoints" / "last.ckpt").stat().st_mtime
    assert _run(fake_pop909_root, cache_dir, run, "trainer.max_epochs=2")["outcome"] == "skipped"
    assert (run / "checkpoints" / "last.ckpt").stat().st_mtime == mtime


def test_deterministic_loss_curve_and_load_run(tmp_path, fake_pop909_root, cache_dir):
    runs = [tmp_path / "runs" / "x" / name for name in ("a", "b")]
    for run in runs:
        _run(fake_pop909_root, cache_dir, run, "trainer.max_epochs=1")
    curves = [pd.read_csv(r / "metrics.csv")["train/loss_step"].dropna().to_numpy() for r in runs]
    assert len(curves[0]) >= 2 and curves[0].tolist() == curves[1].tolist()
    val = read_curves(runs[0])  # the learning-curve columns (issue 15): densities are fractions
    assert 0.0 <= val["val/density"].iloc[-1] <= 1.0 and 0.0 < val["val/target_density"].iloc[-1] < 0.5
    for name in ("config.yaml", "run_info.json", "metrics.csv", "checkpoints/last.ckpt", "checkpoints/best.ckpt"):
        assert (runs[0] / name).exists(), name
    info = read_run_info(runs[0])
    assert info["seed"] == 0 and info["git_commit"] and info["packages"]["torch"] and info["device"]["accelerator"]
    assert find_runs(tmp_path / "runs") == sorted(runs)
    model, cfg = load_run(runs[0], "best")
    assert not model.training and cfg.pe.name == "ropepool"
    x, pos = torch.zeros(1, 8, 256), torch.zeros(1, 8, 12)
    assert model(x, pos).shape == (1, 8, 384)


def test_multirun_gives_each_config_its_run_and_reports_failed_jobs(tmp_path, fake_pop909_root, cache_dir):
    """Issue 14: num_heads=1,2 are two runs (the run name carries the config hash); a failing job
    is recorded, the others finish, and the sweep ends with a summary and exit status 1."""
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "stripes.train", "-m", "profile=smoke", "experiment=table3",
           f"data.root={fake_pop909_root}", f"data.cache_dir={cache_dir}", f"runs_root={tmp_path}",
           "pe=ropepool", "context=time", "trainer.max_epochs=1", "optim.lr=-1,0.001",
           "model.num_heads=1,2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[sweep] 2 of 4 jobs failed (2 trained)" in proc.stdout
    assert proc.stdout.count("Invalid learning rate") >= 2  # one line per failed job
    runs = sorted((tmp_path / "table3").glob("ropepool-time-*"))
    assert len(runs) == 4 and len({r.name.rsplit("-", 1)[1] for r in runs}) == 4
    infos = {r.name: read_run_info(r) for r in runs}
    failed = [n for n, i in infos.items() if i["status"] == "failed"]
    assert len(failed) == 2 and all(n.startswith("ropepool-time-lr-1-s0-") for n in failed)
    assert all("Invalid learning rate" in infos[n]["error"] for n in failed)
    finished = find_runs(tmp_path)
    assert len(finished) == 2 and all(r.name.startswith("ropepool-time-lr0.001-s0-") for r in finished)
    heads = {read_run_info(r)["config_hash"]: r for r in finished}
    assert len(heads) == 2 and all(h in str(r) for h, r in heads.items())
    # a rerun skips the finished jobs, retries the failed ones, and still says so
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "[sweep] 2 of 4 jobs failed (2 skipped)" in proc.stdout


def test_wandb_offline_writes_a_run_without_network(tmp_path, fake_pop909_root, cache_dir, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_API_KEY", "")  # no account
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: any network use fails
    from pytorch_lightning.loggers import WandbLogger

    sent = {"config": None, "hparams": []}
    init, log_hyperparams = WandbLogger.__init__, WandbLogger.log_hyperparams

    def spy_init(self, *args, **kwargs):
        sent["config"] = kwargs.get("config")
        init(self, *args, **kwargs)

    def spy_hparams(self, params, *args, **kwargs):
        sent["hparams"].append(dict(params))
        return log_hyperparams(self, params, *args, **kwargs)

    monkeypatch.setattr(WandbLogger, "__init__", spy_init)
    monkeypatch.setattr(WandbLogger, "log_hyperparams", spy_hparams)
    cfg = smoke_cfg(fake_pop909_root, cache_dir, "pe=nope", "context=time", "logger=wandb", "trainer.max_epochs=1")
    info = train(cfg, tmp_path / "run")
    assert info["status"] == "finished" and info["wandb_id"]
    offline = list((tmp_path / "run" / "wandb").glob(f"offline-run-*-{info['wandb_id']}"))
    assert offline and any(offline[0].rglob("*.wandb"))
    assert (tmp_path / "run" / "metrics.csv").exists()
    # the config is logged as the user writes it (pe.name, optim.lr, ...), never under a `cfg` key
    assert sent["config"] and {"pe", "optim", "context", "seed"} <= set(sent["config"])
    assert all("cfg" not in params for params in sent["hparams"]), sent["hparams"]


@pytest.mark.slow
def test_ddp_spawn_two_cpu_processes(tmp_path, fake_pop909_root, cache_dir):
    cfg = smoke_cfg(fake_pop909_root, cache_dir, "pe=ropepool", "context=bin", "trainer=ddp",
                    "trainer.accelerator=cpu", "trainer.devices=2")
    from pytorch_lightning.strategies import DDPStrategy

    torch.manual_seed(0)
    module = HarmonizationModule(cfg)
    trainer = build_trainer(cfg, tmp_path, False, strategy=DDPStrategy(start_method="spawn",
                            process_group_backend="gloo"), max_epochs=1, limit_train_batches=2,
                            limit_val_batches=1)
    trainer.fit(module, datamodule=build_datamodule(cfg))
    # the spawned workers trained; the parent's trainer is not updated, the checkpoint is
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 2 and trainer.world_size == 2
