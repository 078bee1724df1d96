"""`make gpu-pack` / `make gpu-check` on the CPU: what can be checked without a GPU.

The check refuses cleanly without CUDA; the pack's data archive holds exactly the files the
pipeline reads and is a usable data root; the sections' CPU-runnable parts (correctness harness,
K-process worker, spot-check launch and comparison, projection, report) against hand-computed or
injected-fault cases. The GPU figures themselves come from running `make gpu-check` on a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from packaging.version import Version

from stripes.data.annotations import read_split
from stripes.data.paths import resolve_data_root
from stripes.data.pop909 import song_files
from stripes.eval import results as store_lib
from stripes.gpu import check, correctness, pack, projection, spot, throughput
from stripes.gpu.report import CheckResults, render

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- refusing without CUDA -------------------------------------------------------------------

def test_check_stops_at_once_without_cuda(tmp_path):
    assert not torch.cuda.is_available()
    with pytest.raises(SystemExit, match="needs a CUDA GPU.*sees no CUDA device.*Nothing was installed"):
        check.main(["--pack", str(tmp_path / "pack"), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists() and not (tmp_path / "pack").exists()


def test_make_gpu_check_refuses_cleanly_without_cuda():
    proc = subprocess.run(["make", "-s", "gpu-check", f"GPU_PY={sys.executable}", "GPU_DIR=/nonexistent"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "make gpu-check needs a CUDA GPU" in proc.stderr and "Traceback" not in proc.stderr


def test_prepare_names_an_incomplete_pack(tmp_path):
    (tmp_path / "wheels").mkdir()
    with pytest.raises(SystemExit, match="incomplete.*make gpu-pack"):
        check.prepare(tmp_path)


# ---- gpu-pack ---------------------------------------------------------------------------------

def test_pins_come_from_pyproject_and_this_environment():
    extra = pack.extra_pins()
    assert Version(extra["fla-core"]) >= Version("0.5.1") and set(extra) == {"fla-core", "einops"}  # PRs 594, 875
    pins = pack.wheel_pins()
    assert set(pins) == set(pack.WHEELS) | set(extra)
    assert pins["hydra-core"] == "1.3.8" and pins["antlr4-python3-runtime"].startswith("4.9")
    assert not {"torch", "pytorch-lightning", "numpy"} & set(pins)


def test_unpinned_extra_is_refused(tmp_path):
    toml = tmp_path / "pyproject.toml"
    toml.write_text('[project]\nname = "x"\n[project.optional-dependencies]\ngpu = ["fla-core>=0.5.1"]\n')
    with pytest.raises(pack.PackError, match="not pinned"):
        pack.extra_pins(toml)


def test_data_archive_holds_exactly_what_the_pipeline_reads(fake_pop909_root, tmp_path):
    archive = tmp_path / "data.tar.gz"
    info = pack.write_data_archive(fake_pop909_root, archive)
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        tar.extractall(tmp_path / "data", filter="data")
    split = read_split(fake_pop909_root / "pop909_alignment" / "split.npz")
    want = {f"pop909_alignment/{n}" for n in ("startpos.csv", "split.npz", "chord_db.npz")}
    for number in sorted({int(n) for part in split.values() for n in part}):
        want |= {str(p.relative_to(fake_pop909_root)) for p in song_files(fake_pop909_root, number).values()
                 if p.is_file()}
    assert names == want and info["files"] == len(want)
    assert not any("analyzed_key" in n or "human_label" in n for n in names)  # read by nothing
    root = resolve_data_root(tmp_path / "data")
    for rel in want:  # byte-identical copies
        assert (root / rel).read_bytes() == (fake_pop909_root / rel).read_bytes()


def test_pack_data_only_writes_a_manifest(fake_pop909_root, tmp_path):
    manifest = pack.pack(tmp_path / ".gpu", data_root=fake_pop909_root, wheels=False, log=lambda *_: None)
    on_disk = json.loads((tmp_path / ".gpu" / "MANIFEST.json").read_text())
    assert on_disk["data"]["files"] == manifest["data"]["files"] > 3
    assert (tmp_path / ".gpu" / pack.ARCHIVE).stat().st_size == on_disk["data"]["bytes"]
    assert "wheels" not in on_disk


def test_pack_without_data_root_names_the_problem(tmp_path, capsys):
    with pytest.raises(SystemExit, match="make gpu-pack: .*POP909 data root"):
        pack.main(["--out", str(tmp_path / ".gpu"), "--no-wheels", "--data-root", str(tmp_path / "missing")])


# ---- section 1 harness ------------------------------------------------------------------------

def test_feature_widths_cover_every_pe():
    widths = correctness.feature_widths()
    assert widths[2] == ["fstripe1"] and widths[64] == ["ropepool", "spe"] and "rope_c" in widths[128]
    assert correctness.kernel_keys() == [(f, 128, d) for f in (16, 64, 128) for d in ("float32", "bfloat16")]


def test_correctness_harness_passes_the_torch_path_and_catches_a_fault(monkeypatch):
    row = correctness.compare("torch", 16, 32, None, "cpu", b=1, t=70, h=2)
    assert row["ok"] and row["max_error"] < 1e-5
    bf16 = correctness.compare("torch", 16, 32, torch.bfloat16, "cpu", b=1, t=70, h=2)
    assert bf16["ok"] and 1e-4 < bf16["max_error"] < correctness.TOLERANCE["bfloat16"]
    real = correctness.linear_attention
    monkeypatch.setattr(correctness, "linear_attention", lambda *a, **kw: real(*a, **{**kw, "eps": 1e-1}))
    assert not correctness.compare("torch", 16, 32, None, "cpu", b=1, t=70, h=2)["ok"]


def test_long_sequence_check_is_finite_on_cpu():
    assert correctness.long_sequence("torch", "cpu", t=1024, d_model=32, heads=2)["finite"]


# ---- section 3 worker -------------------------------------------------------------------------

def test_concurrent_worker_trains_until_the_duration(tmp_path):
    got = throughput.concurrent_worker("nope", "torch", str(tmp_path), 1, 0.3, 1, profile="smoke", length=32)
    assert got["steps"] >= 1 and got["seconds"] >= 0.3
    assert got["tokens_per_s"] == pytest.approx(got["steps"] * 2 * 32 / got["seconds"])
    (tmp_path / "alone").mkdir()
    with pytest.raises(TimeoutError, match="2 processes"):  # the barrier waits for all K
        throughput.concurrent_worker("nope", "torch", str(tmp_path / "alone"), 2, 0.1, 1, timeout=0.2,
                                     profile="smoke", length=32)


# ---- section 4 --------------------------------------------------------------------------------

def test_spot_train_command_composes_to_the_paper_protocol(tmp_path):
    cmd = spot.train_command(tmp_path, 200)
    assert cmd[1:5] == ["-m", "stripes.train", "-m", "profile=paper"]
    assert "pe=rope_c,fstripe1,ropepool" in cmd  # the sweep: one job per PE
    one_job = ["pe=ropepool" if o.startswith("pe=") else o for o in cmd[4:]]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=one_job, return_hydra_config=True)
    assert cfg.trainer.max_time == "00:00:03:20" and cfg.trainer.precision == "bf16-mixed"
    assert cfg.optim.lr == 5e-4 and cfg.seed == 0 and cfg.context.name == "bin"
    assert cfg.trainer.max_epochs == 15 and cfg.data.ticks_per_quarter == 16
    assert cfg.hydra.launcher.n_jobs == 3 and "joblib" in cfg.hydra.launcher._target_
    assert spot.max_time(3 * 86400 + 3725) == "03:01:02:05"
    import pytorch_lightning as pl

    trainer = pl.Trainer(max_time=cfg.trainer.max_time, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False)
    assert trainer.fit_loop.max_steps == -1  # accepted


def _store_rows(method: str, pe: str, vals: dict, tests: dict) -> list[dict]:
    base = {"experiment": spot.EXPERIMENT, "pe": pe, "pe_label": method, "method": method, "context": "bin",
            "context_label": "BIN", "lr": 5e-4, "seed": 0, "run_dir": f"runs/{pe}", "checkpoint": "best",
            "n_windows": 10, "ticks_per_quarter": 16, "evaluated_at": "now"}
    rows = []
    for binarization, value in vals.items():
        rows.append({**base, "split": "val", "setting": "16-16", "binarization": binarization, "metric": "CS",
                     "value": value})
    for (split, binarization, metric), value in tests.items():
        rows.append({**base, "split": split, "setting": store_lib.SPLIT_SETTING[split],
                     "binarization": binarization, "metric": metric, "value": value})
    return rows


def test_spot_comparison_selects_on_val_and_places_the_paper_beside(tmp_path):
    rows = _store_rows("RoPEPool", "ropepool", {"threshold": 20.0, "threshold_merge": 22.0},
                       {("test16", "threshold", "CS"): 1.0, ("test16", "threshold_merge", "CS"): 26.0,
                        ("test64", "threshold_merge", "CS"): 20.0})
    rows += _store_rows("RoPE(C)", "rope_c", {"threshold": 20.0}, {("test16", "threshold", "CS"): 22.5})
    store_lib.update_store(tmp_path, pd.DataFrame(rows, columns=store_lib.STORE_COLUMNS))
    table = spot.comparison(tmp_path).set_index(["method", "setting", "metric"])
    pool = table.loc[("RoPEPool", "16-16", "CS")]
    assert pool.binarization == "threshold_merge" and pool.ours == 26.0
    assert (pool.paper_mean, pool.paper_std) == (25.83, 1.02) and pool.within_2sd
    far = table.loc[("RoPEPool", "16-64", "CS")]  # paper 28.6 ± 0.8: 8.6 away
    assert not far.within_2sd and far.gap_in_sd == pytest.approx(8.6 / 0.8)
    rope = table.loc[("RoPE(C)", "16-16", "CS")]  # RoPE(C) is in [S] Table II
    assert rope.paper_mean == 22.14 and rope.source == "[S] Table II"


@pytest.mark.slow
def test_spot_check_chain_on_the_cpu(tmp_path, fake_pop909_root):
    """Section 4's commands end to end on the fake data, smoke profile, CPU (Hydra joblib launcher)."""
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "STRIPES_DATA": str(fake_pop909_root),
           "STRIPES_CACHE": str(tmp_path / "cache")}
    # data.num_workers=1: DataLoader workers inside the launcher's loky processes
    extra = ("trainer=cpu", "trainer.max_epochs=2", "hydra.launcher.n_jobs=2", "data.num_workers=1")
    code, _ = spot.run_logged(spot.train_command(tmp_path / "runs", 600, threads=1, profile="smoke",
                                                 pes=("rope_c", "ropepool"), extra=extra), tmp_path / "t.log", env)
    assert code == 0, (tmp_path / "t.log").read_text()[-3000:]
    runs = spot.run_summaries(tmp_path / "runs")
    assert set(runs.status) == {"finished"} and set(runs.epochs) == {2}
    code, _ = spot.run_logged(spot.evaluate_command(tmp_path / "runs", tmp_path / "results", device="cpu"),
                              tmp_path / "e.log", env)
    assert code == 0, (tmp_path / "e.log").read_text()[-3000:]
    table = spot.comparison(tmp_path / "results")
    assert set(table.method) == {"RoPE(C)", "RoPEPool"} and table.paper_mean.notna().all()


@pytest.mark.slow
def test_concurrency_rows_with_two_processes():
    frame = throughput.concurrency_rows(ks=(1, 2), pe="nope", impl="torch", duration=0.5, profile="smoke", length=32)
    assert list(frame.K) == [1, 2] and (frame.steps > 0).all() and frame.speedup_vs_k1.iloc[0] == 1.0


# ---- section 5 --------------------------------------------------------------------------------

def test_training_tokens_by_hand():
    # ramp 4 steps from 8 to 16: lengths 8, 10, 12, 14, then 16, 16
    assert projection.training_tokens(6, 2, 16, 8, 4) == 2 * (8 + 10 + 12 + 14 + 16 + 16)
    assert projection.training_tokens(3, 2, 16, 8, 4) == 2 * (8 + 10 + 12)
    assert projection.training_tokens(6, 2, 16, 8, 4, curriculum=False) == 6 * 2 * 16


def test_grid_projection_by_hand():
    figures = dict(spot_wall_s=300.0, spot_tokens=1e6, run_tokens=2e6, n_side=3,
                   aggregate={1: 100.0, 2: 180.0, 4: 240.0, 8: 240.0}, eval_s_per_run=10.0)
    # K = 3 interpolates 210; a batch of 3 full runs = 300 s x 2 (tokens) = 600 s
    assert projection.interpolate(figures["aggregate"], 3) == 210.0
    assert projection.batch_wall_s(3, **{k: v for k, v in figures.items() if k != "eval_s_per_run"}) == 600.0
    one = projection.grid_hours(4, 1, **figures, runs=480)
    # 120 batches of 4: each 600 x (4/3) x (210/240) = 700 s; evaluation 480 x 10 s
    assert one["batches_per_gpu"] == 120
    assert one["runs_per_hour_per_gpu"] == pytest.approx(4 * 3600 / 700)
    assert one["train_hours"] == pytest.approx(120 * 700 / 3600)
    assert one["eval_hours"] == pytest.approx(4800 / 3600)
    eight = projection.grid_hours(4, 8, **figures, runs=480)
    assert eight["batches_per_gpu"] == 15 and eight["total_hours"] == pytest.approx(one["total_hours"] / 8)
    # K = 8 gains no throughput over K = 4: same training time, never better
    assert projection.best_k(1, (1, 2, 4, 8), **figures)["K"] == 4
    with pytest.raises(ValueError, match="trained nothing"):
        projection.batch_wall_s(1, 0.0, 0.0, 1.0, 3, {1: 1.0})


# ---- the report -------------------------------------------------------------------------------

def test_report_has_the_five_sections_and_judges_the_targets():
    results = CheckResults(machine="test GPU")
    results.stages = [{"name": "1 correctness", "status": "ok", "seconds": 3.0, "note": ""},
                      {"name": "4 spot check", "status": "skipped", "seconds": 0.0, "note": "10 s left"}]
    results.correctness = pd.DataFrame([{"impl": "fla", "dtype": "bfloat16", "F": 64, "Dv": 128, "pes": "ropepool",
                                         "forward": 1e-3, "dq": 2e-3, "dk": 2e-3, "dv": 1e-3, "tolerance": 3e-2,
                                         "ok": True}])
    att = []
    for t, sdpa, fla in ((1024, 1.0, 1.0), (4096, 4.0, 2.0), (16384, 40.0, 8.0)):
        for mode in ("fwd", "fwd+bwd"):
            att += [{"T": t, "mode": mode, "method": "sdpa", "label": "SDPA", "impl": "flash", "F": 128,
                     "time_ms": sdpa, "peak_mib": t / 100, "speedup_vs_sdpa": 1.0},
                    {"T": t, "mode": mode, "method": "ropepool", "label": "RoPEPool", "impl": "fla", "F": 64,
                     "time_ms": fla, "peak_mib": t / 1000, "speedup_vs_sdpa": sdpa / fla}]
    results.attention = pd.DataFrame(att)
    results.training = pd.DataFrame([{"label": "RoPEPool", "attention": "linear", "impl": "fla", "step_ms": 10.0,
                                      "tokens_per_s": 8e5, "ratio_vs_softmax": 0.85}])
    text = render(results)
    for n in range(1, 6):
        assert f"## {n}." in text
    assert "forward at T = 4096 ≥ 1.5× SDPA: smallest 2.00× → met" in text
    assert "forward at T = 16384 ≥ 4.0× SDPA: smallest 5.00× → met" in text
    assert "smallest ratio 0.85× → **MISSED**" in text
    assert "memory linear in T" in text and "Not available: skipped. 10 s left" in text


# ---- the orchestration ------------------------------------------------------------------------

def test_main_writes_every_section_and_survives_a_failing_one(tmp_path, monkeypatch):
    """check.main with the GPU work replaced by fixed tables: stages, CSVs, REPORT, projection."""
    from functools import partial

    from stripes.nn import fla_attention

    unavailable = lambda: False  # noqa: E731
    unavailable.cache_clear = lambda: None
    monkeypatch.setattr(fla_attention, "fla_available", unavailable)
    monkeypatch.setattr(check, "require_cuda", lambda: "Fake H200")
    monkeypatch.setattr(check, "prepare", lambda pack, log=print: {"wheels": ["x.whl"], "data": "d"})
    monkeypatch.setattr(check, "start_preprocess", lambda out: None)
    monkeypatch.setattr(correctness, "run", lambda device, impls: (
        pd.DataFrame([{"impl": impls[0], "dtype": "float32", "F": 64, "Dv": 128, "pes": "ropepool", "forward": 1e-7,
                       "dq": 1e-7, "dk": 1e-7, "dv": 1e-7, "tolerance": 5e-3, "ok": True}]),
        pd.DataFrame([{"impl": impls[0], "finite": True}])))

    def boom(impls):
        raise RuntimeError("boom")

    monkeypatch.setattr(throughput, "attention_rows", boom)
    monkeypatch.setattr(throughput, "training_rows", lambda impls: pd.DataFrame(
        [{"label": "RoPEPool", "attention": "linear", "impl": "torch", "step_ms": 10.0, "tokens_per_s": 8e5,
          "ratio_vs_softmax": 1.2, "peak_gib": 2.0}]))
    monkeypatch.setattr(throughput, "concurrency_rows", lambda impl: pd.DataFrame(
        {"K": [1, 2, 4, 8], "aggregate_tokens_per_s": [1e5, 1.8e5, 2.4e5, 2.4e5],
         "per_run_tokens_per_s": [1e5, 9e4, 6e4, 3e4], "speedup_vs_k1": [1, 1.8, 2.4, 2.4]}))

    def fake_spot(stages, out, preprocess, results, impl):
        assert impl == "torch"
        results.spot_runs = pd.DataFrame({"run": ["a", "b", "c"], "status": ["finished"] * 3, "epochs": [15] * 3,
                                          "global_step": [6780] * 3, "wall_s": [600.0] * 3,
                                          "s_per_epoch": [40.0] * 3})
        return {"wall_s": 620.0, "eval_s": 60.0, "runs": 3}

    monkeypatch.setattr(check, "spot_check", fake_spot)
    tokens = partial(projection.training_tokens, batch=8, full_length=1024, start_length=16, ramp_steps=2875)
    monkeypatch.setattr(check, "paper_tokens", lambda: (452, 15, tokens))
    out = tmp_path / "gpu_check"
    check.main(["--out", str(out), "--budget", "1000"])
    report = (out / "REPORT.md").read_text()
    stages = {s["name"]: s for s in json.loads((out / "check.json").read_text())["stages"]}
    assert stages["2 attention"]["status"] == "failed" and "boom" in stages["2 attention"]["note"]
    assert stages["5 projection"]["status"] == "ok" and "0 compile fla kernels" not in stages
    assert "Not available: failed. RuntimeError: boom" in report and "Fake H200" in report
    proj = pd.read_csv(out / "projection.csv")
    # 3 runs of 6780 steps = full runs: a batch of 3 took 620 s; K = 4: 620 x 4/3 x 2.1e5/2.4e5
    row = proj[(proj.gpus == 1) & (proj.K == 4)].iloc[0]
    assert row.train_hours == pytest.approx(120 * 620 * 4 / 3 * 2.1 / 2.4 / 3600)
    assert row.eval_hours == pytest.approx(480 * 20 / 3600)
    for name in ("correctness", "training", "concurrency", "spot_runs", "projection"):
        assert (out / f"{name}.csv").is_file()
    assert not (out / "attention.csv").exists()
