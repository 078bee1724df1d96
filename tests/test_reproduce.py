"""`make smoke`: the whole reproduce chain on the fake data root produces every artefact type."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stripes.report import write_report

PROJECT = Path(__file__).resolve().parents[1]


def test_report_embeds_what_exists_and_names_what_is_missing(tmp_path):
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "table_I.md").write_text("| context | MI |\n|---|---|\n| BIN | 1.0 |\n")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "fig3.png").write_bytes(b"png")
    record = {"profile": "smoke", "machine": "test box", "started": "now", "total_seconds": 90.0,
              "stages": [{"name": "data", "status": "ok", "seconds": 30.0, "log": "x/data.log"},
                         {"name": "tables", "status": "failed (exit 1)", "seconds": 60.0,
                          "log": "x/tables.log"}]}
    text = write_report(tmp_path, record).read_text()
    assert "| BIN | 1.0 |" in text
    assert "| tables | failed (exit 1) | 1.0 min |" in text
    assert "tables/table_III.md is missing" in text
    assert "![fig3](figures/fig3.png)" in text
    assert "total wall time 1.5 min" in text


@pytest.mark.slow
def test_smoke_chain_end_to_end(fake_pop909_root, tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "STRIPES_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "stripes.reproduce", "profile=smoke", "full=true",
               'table1_overrides=["profile=smoke"]', f"data_root={fake_pop909_root}"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=3000)
    outputs = tmp_path / "outputs"
    record = json.loads((outputs / "reproduce" / "stages.json").read_text())
    logs = {s["name"]: s["status"] for s in record["stages"]}
    assert done.returncode == 0, (logs, done.stdout[-3000:], done.stderr[-3000:])
    assert all(status == "ok" for status in logs.values()), logs
    for artefact in ["REPORT.md", "tables/table_I.md", "tables/table_I.tex", "tables/table_I.csv",
                     "tables/table_II.md", "tables/table_III.md", "tables/table_III.tex",
                     "tables/claims.md", "results/results.parquet", "results/results.csv"]:
        assert (outputs / artefact).exists(), artefact
    assert list(outputs.glob("figures/**/*.png")), "no figures"
    assert list(outputs.glob("samples/**/*.mid")), "no MIDI samples"
    # audio for every sample, non-silent, each referenced by the demo page (which has the harmonize demo)
    import soundfile

    from stripes.audio import clip_level
    from stripes.eval.samples import read_index

    index = read_index(outputs / "samples")
    assert len(index) and set(index["bars"]) == {16, 64}
    page = (outputs / "site" / "index.html").read_text()
    for audio in index["audio"]:
        assert clip_level(soundfile.read(tmp_path / audio)[0])[1] > -40, f"{audio} is (nearly) silent"
        assert Path(audio).relative_to("outputs").as_posix() in page, f"{audio} not on the page"
    assert "files/demo/harmonized.ogg" in page and (outputs / "site" / "files" / "demo" / "harmonized.ogg").exists()
    # W&B: audio and pianorolls in the evaluated runs' offline records, the demo grid in the summaries
    assert list(outputs.glob("runs/**/wandb/offline-run-*/files/media/audio/**/*.ogg")), "no W&B audio"
    assert list(outputs.glob("runs/**/wandb/offline-run-*/files/media/images/**/*.png")), "no W&B images"
    assert list(outputs.glob("wandb/offline-run-*-summary-*/files/media/table/samples/*.table.json"))
    assert list(outputs.glob("runs/**/checkpoints/best.ckpt")), "no checkpoints"
    # a second run skips what is done: every stage still succeeds, much faster
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=3000)
    assert again.returncode == 0
    second = json.loads((outputs / "reproduce" / "stages.json").read_text())
    assert second["total_seconds"] < record["total_seconds"]


def test_a_sweep_with_failed_jobs_shows_its_summary_in_the_stage_table(tmp_path):
    from stripes.reproduce import Stage, run_stage

    (tmp_path / "fake_sweep.py").write_text(
        "import sys\nprint('[sweep] 2 of 8 jobs failed (6 trained)')\nsys.exit(1)\n")
    stage = Stage("train:table3", ["fake_sweep"])
    run_stage(stage, tmp_path, tmp_path)
    assert stage.status == "failed (exit 1): 2 of 8 jobs failed (6 trained)"
    record = {"profile": "smoke", "machine": "m", "started": "now", "total_seconds": 1.0,
              "stages": [{"name": stage.name, "status": stage.status, "seconds": 1.0, "log": stage.log}]}
    assert "| train:table3 | failed (exit 1): 2 of 8 jobs failed (6 trained) |" in write_report(
        tmp_path, record).read_text()


def test_default_chain_trains_tables_and_nope_only_full_adds_the_optional_sweeps():
    from stripes.reproduce import build_stages, load_config

    default = {s.name: s.args for s in build_stages(load_config(["profile=cpu"]))}
    train = [name for name in default if name.startswith("train:")]
    assert train == ["train:table2", "train:table3", "train:fstripe_table1", "train:rep_causal"]
    assert default["train:fstripe_table1"][:5] == ["stripes.train", "-m", "profile=cpu",
                                                    "experiment=fstripe_table1", "pe=nope"]
    full = [s for s in build_stages(load_config(["profile=cpu", "full=true"])) if s.name.startswith("train:")]
    names = [s.name for s in full]
    assert names == ["train:table2", "train:table3", "train:fstripe_table1(pe=nope)", "train:rep_causal",
                     "train:fstripe_table1", "train:fstripe1_unpooled"]
    assert "pe=nope" not in full[4].args  # the full [F] sweep: NoPE, SPE and F-StrIPE


def test_progress_line_estimates_what_remains(tmp_path):
    from omegaconf import OmegaConf

    from stripes.reproduce import Stage, progress_line, stage_estimates

    cfg = OmegaConf.create({"profile": "cpu", "estimates_min": {"cpu": {"data": 1.0, "evaluate": 8.0}}})
    estimates, source = stage_estimates(cfg, tmp_path / "stages.json")  # no earlier run: the config
    assert estimates == {"data": 60.0, "evaluate": 480.0} and "estimates_min" in source
    done = [Stage("data", [], status="ok", seconds=30.0)]
    line = progress_line(done, [Stage("evaluate", []), Stage("site", [])], 45.0, estimates, source)
    assert line.startswith("[reproduce] 1/3 data: ok in 0.5 min; elapsed 0.8 min; 2 stage(s) left, ~8 min")
    assert "1 stage(s) without an estimate" in line
    # an earlier run of the same profile wins; only its stages that finished count
    (tmp_path / "stages.json").write_text(json.dumps({"profile": "cpu", "stages": [
        {"name": "data", "status": "ok", "seconds": 12.0}, {"name": "evaluate", "status": "failed (exit 1)",
                                                            "seconds": 3.0}]}))
    assert stage_estimates(cfg, tmp_path / "stages.json") == ({"data": 12.0}, "the last cpu run")
    other = OmegaConf.merge(cfg, {"profile": "smoke"})
    assert stage_estimates(other, tmp_path / "stages.json")[0] == {}
    assert progress_line(done, [], 30.0, {}, "x").endswith("elapsed 0.5 min")
