"""Inference → store → tables → plots: a fake model on hand-made batches, and real smoke-profile runs."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from stripes.eval import results as store_lib
from stripes.eval.predict import predict_and_score, summarize_windows

PROJECT = Path(__file__).resolve().parents[1]
K = 4


class OracleModel(torch.nn.Module):
    """Returns ±10 logits equal to the batch target it was given (or its piano part silenced)."""

    def __init__(self, targets, silent=False):
        super().__init__()
        self.targets = list(targets)
        self.silent = silent

    def forward(self, inputs, positions):
        target = self.targets.pop(0)
        logits = torch.where(target > 0.5, 10.0, -10.0)
        if self.silent:
            logits[..., 256:384] = -10.0
        return logits


def make_batch(n=2, n_ticks=64, seed=0, lengths=None, chord=None):
    rng = np.random.default_rng(seed)
    target = np.zeros((n, n_ticks, 384), dtype=np.float32)
    for b in range(n):
        for h in range(n_ticks // 8):  # a re-struck chord in every half-measure of the piano track
            for p in (chord if chord is not None else rng.choice(128, 3, replace=False)):
                target[b, 8 * h: 8 * h + 6, 256 + p] = 1
    lengths = lengths or [n_ticks] * n
    mask = np.arange(n_ticks)[None, :] < np.array(lengths)[:, None]
    target[~mask] = 0
    return {"input": torch.tensor(target[..., :256]), "target": torch.tensor(target),
            "positions": torch.zeros(n, n_ticks, 1), "mask": torch.tensor(mask),
            "song": torch.arange(n), "start": torch.zeros(n, dtype=torch.int64)}


BINS = {"threshold": {"thr": 0.5}, "threshold_merge": {"thr": 0.5, "max_gap": 1}}


def test_oracle_scores_perfectly_and_silence_scores_cs0_ndd100():
    batches = [make_batch(seed=0), make_batch(seed=1, lengths=[64, 40])]
    windows, samples = predict_and_score(OracleModel([b["target"] for b in batches]), batches, K,
                                         {"threshold": BINS["threshold"]}, n_samples=3)
    summary = summarize_windows(windows).set_index("metric")["value"]
    assert summary["CS"] == pytest.approx(100) and summary["GS"] == pytest.approx(100)
    assert summary["SSMD"] == pytest.approx(0) and summary["NDD"] == pytest.approx(0)
    assert len(samples.song) == 3 and samples.length[2] == 64 and samples.target_piano[0].shape == (64, 128)
    windows, _ = predict_and_score(OracleModel([b["target"] for b in batches], silent=True), batches, K,
                                   BINS)
    summary = summarize_windows(windows).set_index(["binarization", "metric"])["value"]
    for name in BINS:
        assert summary[(name, "CS")] == pytest.approx(0) and summary[(name, "NDD")] == pytest.approx(100)


def test_merge_closes_the_two_tick_gaps_of_restruck_chords():
    # the same chord on 6 ticks, off 2, in each of the 8 half-measures; merging gaps of 2 ticks turns
    # it into one long chord with onsets at tick 0 only
    batch = make_batch(chord=[60, 64, 67])
    windows, _ = predict_and_score(OracleModel([batch["target"]]), [batch], K,
                                   {"threshold_merge": {"thr": 0.5, "max_gap": 2}})
    summary = summarize_windows(windows).set_index("metric")["value"]
    assert summary["NDD"] == pytest.approx(0)  # merging only adds active cells
    assert summary["CS"] == pytest.approx(100 / 8)  # only the first half-measure has onsets
    assert summary["GS"] == pytest.approx(100 * 9 / 16)  # quarter 0 and the 8 odd quarters agree
    assert summary["SSMD"] == pytest.approx(25 * 14 / 64)  # row and column 0 off the diagonal


def eval_cfg(tmp_path, **overrides):
    cfg = OmegaConf.load(PROJECT / "conf" / "evaluate.yaml")
    cfg.pop("defaults")
    cfg.pop("hydra")
    cfg.results_dir = str(tmp_path / "results")
    cfg.runs_root = str(tmp_path / "runs")
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return cfg


@pytest.fixture(scope="module")
def smoke_runs(fake_pop909_root, tmp_path_factory):
    """Two tiny runs (seeds 0, 1) of the smoke profile on the fake data root."""
    root = tmp_path_factory.mktemp("smoke_runs")
    env = {**os.environ, "WANDB_MODE": "disabled"}
    command = [sys.executable, "-m", "stripes.train", "-m", "profile=smoke", "pe=rope_c", "context=bin",
               "seed=0,1", f"data.root={fake_pop909_root}", f"runs_root={root / 'runs'}",
               f"data.cache_dir={root / 'cache'}", "logger=csv", "experiment_name=smoke",
               f"hydra.sweep.dir={root / 'runs' / 'smoke'}"]
    done = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root


def test_evaluate_tables_plots_on_smoke_runs(smoke_runs, tmp_path, monkeypatch):
    from stripes.eval import plots, tables
    from stripes.evaluate import evaluate_all
    from stripes.runs import find_runs

    monkeypatch.chdir(tmp_path)
    runs = find_runs(smoke_runs / "runs")
    assert len(runs) == 2
    cfg = eval_cfg(smoke_runs, results_dir=str(tmp_path / "results"))
    store = evaluate_all(cfg)
    n_rows = len(store)
    assert n_rows == 2 * 4 * 2 * 4  # runs x splits (val, test16, test64, test16_matched) x bins x metrics
    matched = store[store["split"] == "test16_matched"]
    assert set(matched["setting"]) == {"16-16 matched"}
    assert set(store["seed"]) == {0, 1} and set(store["method"]) == {"RoPE(C)"}
    assert store["value"].notna().all()
    # a second evaluation skips; a forced one replaces the rows instead of adding duplicates
    assert len(evaluate_all(cfg)) == n_rows
    cfg.force = True
    cfg.splits = ["val", "test16"]
    cfg.run_dir = str(runs[0])
    store = evaluate_all(cfg)
    assert len(store) == n_rows - 2 * 2 * 4  # run 0 lost its test64 and matched rows, no duplicates
    assert (runs[0] / "eval" / "samples.npz").exists() and (runs[0] / "eval" / "windows.csv").exists()

    table_cfg = OmegaConf.load(PROJECT / "conf" / "tables.yaml")
    table_cfg.results_dir = str(tmp_path / "results")
    table_cfg.out_dir = str(tmp_path / "tables")
    out = tables.run(table_cfg)
    assert (tmp_path / "tables" / "table_III.md").exists()
    bin_c = out.tables["table_III"]
    cell = bin_c[(bin_c["method"] == "RoPE(C)") & (bin_c["metric"] == "CS") & (bin_c["setting"] == "16-16")]
    assert cell.iloc[0]["n_seeds"] == 2
    plot_cfg = OmegaConf.load(PROJECT / "conf" / "plots.yaml")
    plot_cfg.results_dir = str(tmp_path / "results")
    plot_cfg.figures_dir = str(tmp_path / "figures")
    plot_cfg.table_i = str(tmp_path / "tables" / "table_I.csv")
    plot_cfg.samples.out_dir = str(tmp_path / "samples")
    written = plots.run(plot_cfg)
    names = {p.name for p in written}
    assert {"fig4_metrics_vs_mi.png", "fig4_metrics_vs_mi.pdf", "bars_bin.png"} <= names
    mids = sorted((tmp_path / "samples" / "BIN" / "RoPE_C").glob("*.mid"))
    assert mids
    import pretty_midi

    midi = pretty_midi.PrettyMIDI(str(mids[0]))
    assert [i.name for i in midi.instruments] == ["MELODY", "BRIDGE", "PIANO"]


def test_read_mi_from_table_i_or_paper(tmp_path):
    from stripes.eval.plots import read_mi
    from stripes.eval.tables import load_reference

    reference = load_reference("conf/reference/paper_tables.csv")
    mi, source = read_mi(tmp_path / "table_I.csv", reference)
    assert mi == {"TIME": 0.0085, "REP": 0.0436, "KEY": 0.0476, "BIN": 1.0075}
    assert "absent" in source
    pd.DataFrame({"context": ["TIME", "BIN"], "paper_mi": [0.0085, 1.0075],
                  "mi_all_tracks": [0.006, 0.95], "mi_input_tracks": [0.008, 0.64]}).to_csv(
        tmp_path / "table_I.csv", index=False)
    mi, source = read_mi(tmp_path / "table_I.csv", reference)
    assert mi == {"TIME": 0.006, "BIN": 0.95} and "mi_all_tracks" in source


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_evaluate_config_composes_with_every_profile(profile):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(PROJECT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"profile={profile}", "data.root=/some/root"])
    assert cfg.data.root == "/some/root" and cfg.checkpoint == "best"
    assert list(cfg.binarize.methods) == ["threshold", "threshold_merge"]


class BatchesDataModule:
    """The ``predict_dataloader(split)`` of a data module, over fixed hand-made batches."""

    def __init__(self, batches):
        self.batches = batches

    def predict_dataloader(self, split):
        return list(self.batches)


def test_evaluating_an_spe_run_twice_gives_identical_rows(tmp_path):
    # decision 12: SPE draws fresh noise on every forward pass; evaluation seeds it with the run's
    # seed, so two evaluations of one checkpoint give the same rows (and the same window scores)
    from stripes.evaluate import evaluate_run
    from stripes.nn.transformer import HarmonizationTransformer
    from stripes.pe.base import seed_stochastic_pes

    torch.manual_seed(0)
    model = HarmonizationTransformer("spe", 1, {"num_realizations": 8}, d_model=16, num_heads=2,
                                     num_layers=1, d_ff=16, dropout=0.0).eval()
    with torch.no_grad():  # probabilities near 0.5, so that SPE's noise flips binarized cells
        model.output_projection.weight.mul_(0.05)
        model.output_projection.bias.zero_()
    batches = [make_batch(seed=s) for s in range(2)]
    gen = torch.Generator().manual_seed(1)
    for b in batches:  # a melody that varies over time, so attention weights matter
        b["input"] = (torch.rand(2, 64, 256, generator=gen) < 0.1).float()
        b["positions"] = torch.arange(64, dtype=torch.float32).expand(2, 64).unsqueeze(-1).contiguous()
    run_cfg = OmegaConf.create({"experiment_name": "t", "pe": {"name": "spe", "label": "SPE"},
                                "context": {"name": "time", "label": "TIME"}, "optim": {"lr": 1e-3},
                                "seed": 3, "data": {"ticks_per_quarter": K}})
    cfg = eval_cfg(tmp_path, splits=["val", "test16"])
    cfg.samples.n_windows = 0
    dm = BatchesDataModule(batches)
    rows = [evaluate_run(tmp_path / f"run{i}", cfg, model=model, run_cfg=run_cfg, datamodule=dm)
            .drop(columns=["evaluated_at", "run_dir"]) for i in range(2)]
    pd.testing.assert_frame_equal(rows[0], rows[1])
    windows = [pd.read_csv(tmp_path / f"run{i}" / "eval" / "windows.csv") for i in range(2)]
    pd.testing.assert_frame_equal(windows[0], windows[1])
    # the fault the seeding removes: unseeded, two forward passes of the same batch differ
    seed_stochastic_pes(model, None)
    with torch.no_grad():
        a = model(batches[0]["input"], batches[0]["positions"])
        b = model(batches[0]["input"], batches[0]["positions"])
    assert (a - b).abs().max() > 1e-4
    # seeded, they agree; a different seed gives different noise
    outs = []
    for seed in (3, 3, 4):
        seed_stochastic_pes(model, seed)
        with torch.no_grad():
            outs.append(model(batches[0]["input"], batches[0]["positions"]))
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
