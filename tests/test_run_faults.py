"""Issue 14: each bookkeeping fault injected into real (smoke-profile) training runs.

Kills are an exception raised by a callback at a chosen optimisation step (what a SIGKILL leaves
behind is the same: the checkpoint of the last finished epoch and a partial log); a full disk is
``torch.save`` raising ENOSPC after writing part of the file; a truncated checkpoint is one cut
in half; divergence is a learning rate of 1e6.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

from stripes.checkpoints import BadCheckpointError
from stripes.identity import ConfigMismatchError
from stripes.runs import load_run, read_run_info
from stripes.train import train
from tests.fixtures.wandb_records import flushed_log, history

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Killed(Exception):
    """Stands for SIGKILL / a preemption at a chosen step."""


class KillAtStep(pl.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise Killed(f"killed at step {self.step}")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def cfg_for(root, cache, *overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[
            "profile=smoke", f"data.root={root}", f"data.cache_dir={cache}", "logger=csv",
            "pe=ropepool", "context=bin", "trainer.max_epochs=3", *overrides])


@pytest.fixture(scope="module")
def reference(fake_pop909_root, cache_dir, tmp_path_factory) -> Path:
    """An uninterrupted 3-epoch (9-step) run."""
    run = tmp_path_factory.mktemp("reference") / "run"
    assert train(cfg_for(fake_pop909_root, cache_dir), run)["status"] == "finished"
    return run


def weights(run: Path, name: str = "last") -> dict:
    return torch.load(run / "checkpoints" / f"{name}.ckpt", weights_only=False)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"]
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=1e-6, atol=1e-7)


def test_two_kills_resume_to_the_reference_with_every_log_row_and_one_wandb_run(
        reference, fake_pop909_root, cache_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_API_KEY", "")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # any network use fails
    cfg = cfg_for(fake_pop909_root, cache_dir, "logger=wandb")
    run = tmp_path / "run"
    for step in (4, 7):  # mid-epoch 2 (last.ckpt at step 3), mid-epoch 3 (last.ckpt at step 6)
        with pytest.raises(Killed):
            train(cfg, run, extra_callbacks=[KillAtStep(step)])
        assert weights(run)["global_step"] == 3 * (step // 3)
    info = train(cfg, run)
    assert info["status"] == "finished" and info["attempts"] == 3 and info["global_step"] == 9
    assert_same_weights(weights(reference), weights(run))
    # metrics.csv: every row of the uninterrupted run, once (issue: steps 0-39 were lost)
    ours, ref = pd.read_csv(run / "metrics.csv"), pd.read_csv(reference / "metrics.csv")
    key = ["step", "epoch", "lr-Adam", "train/loss_step", "val/loss"]
    ours, ref = (f[key].sort_values(key).reset_index(drop=True) for f in (ours, ref))
    pd.testing.assert_frame_equal(ours, ref, rtol=1e-5)
    # W&B: one offline folder for the run id (what `wandb sync wandb/offline-run-*` uploads),
    # holding every logged row; the killed attempts' folders are set aside
    folders = sorted((run / "wandb").glob("offline-run-*"))
    assert [f.name.rsplit("-", 1)[1] for f in folders] == [info["wandb_id"]]
    assert len(list((run / "wandb" / "superseded").glob(f"offline-run-*-{info['wandb_id']}*"))) == 2
    rows = history(flushed_log(folders[0]))
    logged = sorted((r["trainer/global_step"], k, round(v, 5)) for r in rows for k, v in r.items()
                    if k in ("train/loss_step", "val/loss", "lr-Adam"))
    expected = sorted((int(s), k, round(v, 5)) for _, row in ref.iterrows() for k, v in row.items()
                      if k in ("train/loss_step", "val/loss", "lr-Adam") and pd.notna(v)
                      for s in [row["step"]])
    assert logged == expected


def test_last_checkpoint_advances_every_epoch_when_val_loss_does_not_improve(
        fake_pop909_root, cache_dir, tmp_path):
    seen = []

    class Watch(pl.Callback):  # Lightning runs checkpoint callbacks last: look at the next start
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch > 0:
                seen.append((trainer.global_step, weights(tmp_path / "run")["global_step"]))

    # lr 0: the validation loss stays the same, so best.ckpt stays at epoch 1
    info = train(cfg_for(fake_pop909_root, cache_dir, "optim.lr=0.0"), tmp_path / "run",
                 extra_callbacks=[Watch()])
    assert info["status"] == "finished"
    assert seen == [(3, 3), (6, 6)] and weights(tmp_path / "run")["global_step"] == 9
    assert weights(tmp_path / "run", "best")["global_step"] == 3


def test_truncated_last_checkpoint_is_set_aside_and_the_run_falls_back(
        reference, fake_pop909_root, cache_dir, tmp_path):
    cfg, run = cfg_for(fake_pop909_root, cache_dir), tmp_path / "run"
    with pytest.raises(Killed):
        train(cfg, run, extra_callbacks=[KillAtStep(4)])
    last = run / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])  # what a kill during a cross-filesystem copy leaves
    info = train(cfg, run)
    assert info["status"] == "finished"
    (aside,) = info["set_aside"]
    assert aside["checkpoint"] == str(last) and "cannot be loaded" in aside["reason"]
    assert Path(aside["moved_to"]).exists() and Path(aside["moved_to"]).name.startswith("last.ckpt.bad-")
    # fell back to best.ckpt (the end of epoch 1, the same state as last.ckpt was): same result
    assert_same_weights(weights(reference), weights(run))
    # both bad: the run starts over and still ends where the reference does
    for name in ("last", "best"):
        (run / "checkpoints" / f"{name}.ckpt").write_bytes(b"PK\x03\x04 not a checkpoint")
    info_path = run / "run_info.json"
    info_path.write_text(info_path.read_text().replace('"finished"', '"running"'))
    info = train(cfg, run)
    assert info["status"] == "finished" and len(info["set_aside"]) == 3
    assert_same_weights(weights(reference), weights(run))


def test_full_disk_names_the_checkpoint_and_keeps_the_previous_one(
        fake_pop909_root, cache_dir, tmp_path, monkeypatch):
    cfg, run = cfg_for(fake_pop909_root, cache_dir), tmp_path / "run"
    real_save, calls = torch.save, []

    def full_disk(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) > 2:  # epoch 1's best + last fit, epoch 2's do not
            Path(f).write_bytes(b"PK\x03\x04" + b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError) as caught:
        train(cfg, run)
    assert caught.value.errno == errno.ENOSPC and str(run / "checkpoints") in str(caught.value)
    info = read_run_info(run)
    assert info["status"] == "failed" and "No space left" in info["error"]
    assert str(run / "checkpoints" / "best.ckpt") in info["error"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert weights(run)["global_step"] == 3  # the previous last.ckpt, intact
    monkeypatch.setattr(torch, "save", real_save)
    assert train(cfg, run)["status"] == "finished"


def test_divergence_fails_the_run_at_its_step_and_evaluation_refuses_nan_weights(
        reference, fake_pop909_root, cache_dir, tmp_path):
    run = tmp_path / "diverged"
    info = train(cfg_for(fake_pop909_root, cache_dir, "optim.lr=1e6"), run, reraise=False)
    assert info["status"] == "failed" and info["outcome"] == "failed"
    step = info["failed_step"]
    assert isinstance(step, int) and step >= 1
    assert f"at step {step}" in info["error"] and "diverged" in info["error"]
    assert read_run_info(run)["failed_step"] == step
    for name in ("best", "last"):  # nothing non-finite was saved
        path = run / "checkpoints" / f"{name}.ckpt"
        if path.exists():
            assert all(torch.isfinite(v).all() for v in weights(run, name)["state_dict"].values())
    # a checkpoint with NaN weights (as the issue found in best.ckpt) is refused by name
    import shutil

    bad = tmp_path / "nan"
    shutil.copytree(reference, bad)
    checkpoint = weights(bad, "best")
    first = next(iter(checkpoint["state_dict"]))
    checkpoint["state_dict"][first].fill_(float("nan"))
    torch.save(checkpoint, bad / "checkpoints" / "best.ckpt")
    with pytest.raises(BadCheckpointError, match=r"best\.ckpt: \d+ non-finite weights"):
        load_run(bad, "best")


def test_a_config_change_never_resumes_or_skips(reference, fake_pop909_root, cache_dir):
    before = (reference / "run_info.json").read_text()
    with pytest.raises(ConfigMismatchError, match=r"model\.num_heads: 2 -> 1"):
        train(cfg_for(fake_pop909_root, cache_dir, "model.num_heads=1"), reference)
    outcome = train(cfg_for(fake_pop909_root, cache_dir, "trainer.max_epochs=4"), reference,
                    reraise=False)
    assert outcome["outcome"] == "refused" and "trainer.max_epochs: 3 -> 4" in outcome["error"]
    assert (reference / "run_info.json").read_text() == before  # untouched
    # result-neutral keys (logging, threads) are the same run: skipped
    same = train(cfg_for(fake_pop909_root, cache_dir, "logger=none", "torch_threads=1"), reference)
    assert same["outcome"] == "skipped"


def test_evaluation_checks_the_checkpoint_config_against_config_yaml(reference, tmp_path):
    import shutil

    run = tmp_path / "edited"
    shutil.copytree(reference, run)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("d_ff: 16", "d_ff: 32"))
    with pytest.raises(ConfigMismatchError, match=r"best\.ckpt.*model\.d_ff: 16 -> 32"):
        load_run(run, "best")


def test_evaluation_drops_gone_and_broken_runs_and_counts_a_bad_run_info_as_one_failure(
        reference, tmp_path, monkeypatch):
    import shutil

    from stripes.eval import results as store_lib
    from stripes.evaluate import evaluate_all
    from tests.test_eval_pipeline import eval_cfg

    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs" / "x"
    for name in ("a", "b", "c"):
        shutil.copytree(reference, runs / name)
    cfg = eval_cfg(tmp_path, splits=["val"])
    store = evaluate_all(cfg)
    assert set(store["run_dir"]) == {f"runs/x/{n}" for n in "abc"}
    shutil.rmtree(runs / "b")  # a deleted run
    best = runs / "c" / "checkpoints" / "best.ckpt"
    best.write_bytes(best.read_bytes()[:1000])  # a checkpoint that broke after its evaluation
    shutil.copytree(reference, runs / "d")
    (runs / "d" / "run_info.json").write_text('{"status": "finis')  # a half-written run_info
    with pytest.raises(SystemExit) as caught:
        evaluate_all(cfg)
    message = str(caught.value)
    assert "2 run(s)" in message and "runs/x/c" in message and "runs/x/d" in message
    assert set(store_lib.load_store(cfg.results_dir)["run_dir"]) == {"runs/x/a"}


def test_wandb_sync_script_uploads_one_folder_per_run(tmp_path):
    import subprocess

    for folder in ("x/r1/wandb/offline-run-20260101_000002-abc", "x/r1/wandb/superseded/offline-run-20260101_000001-abc",
                   "x/r2/wandb/offline-run-20260101_000003-def"):
        (tmp_path / folder).mkdir(parents=True)
    done = subprocess.run(["bash", "scripts/wandb_sync.sh", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, env={"WANDB": "echo", "PATH": "/usr/bin:/bin"}, check=True)
    synced = done.stdout.strip().splitlines()[-1].split()
    assert synced[:2] == ["sync", "--include-offline"]
    assert [Path(p).relative_to(tmp_path).as_posix() for p in synced[2:]] == [
        "x/r1/wandb/offline-run-20260101_000002-abc", "x/r2/wandb/offline-run-20260101_000003-def"]


def test_superseding_two_attempts_started_in_the_same_second_keeps_both(tmp_path):
    """W&B names offline folders by their start second: a second attempt in the same second must not
    overwrite the first superseded one (the flake behind 'got 1 superseded folder, expected 2')."""
    from stripes.run_logs import supersede_offline_runs

    name = "offline-run-20260101_000001-abc"
    for attempt in ("first", "second"):
        folder = tmp_path / "wandb" / name
        folder.mkdir(parents=True)
        (folder / "attempt.txt").write_text(attempt)
        supersede_offline_runs(tmp_path, "abc")
    kept = sorted((tmp_path / "wandb" / "superseded").iterdir())
    assert [f.name for f in kept] == [name, name + ".1"]
    assert [(f / "attempt.txt").read_text() for f in kept] == ["first", "second"]
