"""The Hydra config tree composes for every profile × experiment, and the profiles say what they claim."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import stripes.identity  # noqa: F401  (registers the ${config_hash:} resolver of run_name)
from stripes.identity import config_hash, identity_diff

CONF = Path(__file__).resolve().parents[1] / "conf"
PROFILES = ["smoke", "cpu", "paper"]
EXPERIMENTS = {
    "table2": "rope_a,rope_b,rope_c",
    "table3": "fstripe1,ropepool",
    "fstripe_table1": "nope,spe,fstripe",
    "fstripe1_unpooled": "fstripe1",
    "rep_causal": "rope_c,fstripe1,ropepool",
}
CONTEXTS_OF = {"rep_causal": "rep_causal"}  # decision 13 ablation; the others: the paper's four


def cfg_for(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_every_experiment_composes_with_every_profile(profile, experiment):
    cfg = cfg_for(f"profile={profile}", f"experiment={experiment}", hydra=True)
    params = cfg.hydra.sweeper.params
    assert params.pe == EXPERIMENTS[experiment]
    assert params.context == CONTEXTS_OF.get(experiment, "time,rep,key,bin")
    for context in params.context.split(","):
        assert (CONF / "context" / f"{context}.yaml").exists()
    assert str(params.seed) == str(cfg.sweep.seeds) and str(params["optim.lr"]) == str(cfg.sweep.lrs)
    assert cfg.experiment_name == experiment and cfg.profile_name == profile
    for group, name in (("pe", p) for p in params.pe.split(",")):
        assert (CONF / group / f"{name}.yaml").exists()


def test_run_directory_name_and_hydra_dirs():
    cfg = cfg_for("profile=cpu", "pe=ropepool", "context=bin", "optim.lr=0.0005", "seed=3",
                  "experiment=table3", hydra=True)
    digest = config_hash(cfg)
    assert len(digest) == 8 and cfg.run_name == f"ropepool-bin-lr0.0005-s3-{digest}"
    assert cfg.hydra.run.dir == f"outputs/runs/table3/ropepool-bin-lr0.0005-s3-{digest}"
    assert cfg.hydra.sweep.dir == "outputs/runs/table3" and cfg.hydra.sweep.subdir == cfg.run_name


BASE = ("profile=smoke", "pe=ropepool", "context=bin")


@pytest.mark.parametrize("override", ["model.num_heads=1", "model.d_model=32", "trainer.max_epochs=3",
                                      "data.windows.train.hop_bars=8", "optim.lr=0.002", "seed=1",
                                      "trainer.devices=2", "curriculum.ramp_steps=5"])
def test_a_result_relevant_change_gives_another_run_name(override):
    a, b = cfg_for(*BASE, hydra=True), cfg_for(*BASE, override, hydra=True)
    key = override.split("=")[0]
    assert a.run_name != b.run_name and a.hydra.run.dir != b.hydra.run.dir
    assert key in identity_diff(a, b)


@pytest.mark.parametrize("override", ["logger=csv", "logger=none", "data.root=/elsewhere", "torch_threads=1",
                                      "data.num_workers=3", "runs_root=/tmp/x", "fail_fast=true",
                                      "trainer.log_every_n_steps=50", "data.cache_dir=/tmp/c"])
def test_a_result_neutral_change_keeps_the_run_name(override):
    assert cfg_for(*BASE, override, hydra=True).run_name == cfg_for(*BASE, hydra=True).run_name


def test_paper_profile_is_spec_section_5():
    cfg = cfg_for("profile=paper")
    assert cfg.trainer.accelerator == "gpu"
    assert (cfg.model.d_model, cfg.model.num_heads, cfg.model.num_layers, cfg.model.d_ff) == (512, 4, 2, 512)
    assert cfg.model.dropout == 0.1 and cfg.model.attention == "linear"
    assert cfg.data.ticks_per_quarter == 16 and cfg.data.batch_size == 8
    assert cfg.trainer.max_epochs == 15 and cfg.trainer.gradient_clip_val == 0.0005
    assert cfg.optim.name == "adam" and cfg.optim.warmup_epochs == 3 and cfg.optim.decay_gamma == 0.85
    assert (cfg.curriculum.start_length, cfg.curriculum.ramp_steps) == (16, 2875)
    assert str(cfg.sweep.seeds) == "0,1,2,3,4" and str(cfg.sweep.lrs) == "0.0001,0.0005,0.001"


def test_cpu_profile_has_at_least_three_seeds_and_scaled_resolution():
    cfg = cfg_for("profile=cpu")
    assert len(str(cfg.sweep.seeds).split(",")) >= 3
    assert cfg.data.ticks_per_quarter == 4 and cfg.trainer.accelerator == "cpu"


@pytest.mark.parametrize("trainer", ["cpu", "gpu", "ddp"])
@pytest.mark.parametrize("logger", ["wandb", "csv", "none"])
def test_trainer_and_logger_groups(trainer, logger):
    cfg = cfg_for(f"trainer={trainer}", f"logger={logger}")
    assert cfg.logger.wandb.enabled == (logger == "wandb") and cfg.logger.wandb.offline is True
    assert cfg.trainer.strategy == ("ddp" if trainer == "ddp" else "auto")
    OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("launcher", ["basic", "joblib", "joblib_gpu", "submitit_slurm"])
def test_launchers_compose(launcher):
    cfg = cfg_for(f"hydra/launcher={launcher}", hydra=True)
    assert launcher.split("_")[0] in cfg.hydra.launcher._target_.lower()


#: optimisation steps per epoch of each profile: the paper's full training split (3610 windows,
#: batch 8: ceil = 452), the others' `trainer.limit_train_batches`.
STEPS_PER_EPOCH = {"paper": 452, "cpu": 160, "smoke": 3}


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_schedule_peaks_at_the_grid_learning_rate(profile):
    """Decision 11 on the composed configs: the learning-rate factor reaches exactly 1.0."""
    from stripes.lit import lr_factor, warmup_steps_for

    cfg = cfg_for(f"profile={profile}")
    spe = cfg.trainer.limit_train_batches or STEPS_PER_EPOCH[profile]
    assert spe == STEPS_PER_EPOCH[profile]
    warm = warmup_steps_for(cfg.optim, spe)
    total = int(cfg.trainer.max_epochs) * spe
    assert 0 <= warm < total
    factors = [lr_factor(s, spe, warm, float(cfg.optim.decay_gamma), int(cfg.optim.decay_every_epochs))
               for s in range(total)]
    assert max(factors) == 1.0 and factors.index(1.0) == max(warm - 1, 0)


def test_cpu_profile_keeps_the_paper_total_decay():
    """conf/profile/cpu.yaml: gamma chosen so the final factor matches the paper's (decision 11)."""
    from stripes.lit import lr_factor, warmup_steps_for

    finals = {}
    for profile in ("paper", "cpu"):
        cfg = cfg_for(f"profile={profile}")
        spe = STEPS_PER_EPOCH[profile]
        last = int(cfg.trainer.max_epochs) * spe - 1
        finals[profile] = lr_factor(last, spe, warmup_steps_for(cfg.optim, spe),
                                    float(cfg.optim.decay_gamma), int(cfg.optim.decay_every_epochs))
    assert finals["paper"] == pytest.approx(0.85**11)
    assert finals["cpu"] == pytest.approx(finals["paper"], rel=0.01)


@pytest.mark.parametrize("profile, expected", [
    ("paper", ["threshold", "threshold_merge"]),
    ("cpu", ["threshold", "threshold_merge", "threshold@0.3", "threshold_merge@0.3",
             "threshold@0.2", "threshold_merge@0.2"]),
])
def test_evaluation_binarization_grid_per_profile(profile, expected):
    """The paper's grid is spec §5's (0.5 only); the cpu profile adds thresholds 0.3 and 0.2 (issue 15),
    and that evaluation-only setting leaves a training run's identity unchanged."""
    from stripes.evaluate import binarization_options
    from stripes.identity import identity_config

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"profile={profile}"])
    options = binarization_options(cfg, ticks_per_quarter=4)
    assert list(options) == expected
    assert options[expected[-1]] == ({"thr": 0.2, "max_gap": 1} if profile == "cpu" else {"thr": 0.5, "max_gap": 1})
    train = cfg_for(f"profile={profile}")
    assert "binarize" not in identity_config(train)
