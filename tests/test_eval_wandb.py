"""W&B logging of evaluation: off when disabled, offline records resumed by the run's stored id."""

import json
import re

import pandas as pd
import pytest
from omegaconf import OmegaConf

from stripes.eval.wandb_log import log_run_metrics, log_summary, wandb_enabled
from tests.fixtures.wandb_records import flushed_log

CFG = OmegaConf.create({"enabled": True, "mode": "offline", "project": "stripes-test", "entity": None})


def rows(run_dir):
    return pd.DataFrame([{"experiment": "t", "split": "test16", "binarization": "threshold",
                          "metric": m, "value": v, "run_dir": str(run_dir)}
                         for m, v in (("CS", 12.5), ("NDD", 80.0))])


def test_disabled_does_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert not wandb_enabled(CFG)
    assert log_run_metrics(tmp_path, rows(tmp_path), CFG) is None
    assert log_summary("t", {}, {}, CFG, tmp_path) is None
    assert not wandb_enabled(OmegaConf.create({"enabled": False}))


def test_offline_run_is_resumed_by_its_stored_id(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run_info.json").write_text(json.dumps({"status": "finished", "wandb_id": "abc123xy"}))
    assert log_run_metrics(run_dir, rows(run_dir), CFG) == "abc123xy"
    assert any((run_dir / "wandb").glob("offline-run-*-abc123xy"))
    # without an id, one is created and written back to run_info.json
    other = tmp_path / "other"
    other.mkdir()
    (other / "run_info.json").write_text(json.dumps({"status": "finished"}))
    new_id = log_run_metrics(other, rows(other), CFG)
    assert json.loads((other / "run_info.json").read_text())["wandb_id"] == new_id
    table = pd.DataFrame({"method": ["RoPEPool"], "CS": [25.8]})
    assert log_summary("t", {"table_III": table}, {}, CFG, tmp_path) == "summary-t"


def offline_files(directory, run_id):
    (run,) = list((directory / "wandb").glob(f"offline-run-*-{run_id}"))
    return run / "files"


def test_run_media_and_summary_grid_are_logged_offline(tmp_path, monkeypatch):
    """Each evaluated run gets the same windows as audio + pianoroll + MIDI; the summary run a table
    with a row per (context, window) and audio + pianoroll columns per method."""
    from stripes.eval.samples import write_samples
    from tests.fixtures.samples import write_kept_windows

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    write_kept_windows(run_dir, splits=(("test16", 256),))
    (run_dir / "run_info.json").write_text(json.dumps({"status": "finished", "wandb_id": "media1"}))
    cfg = OmegaConf.merge(CFG, {"media_windows": {"test16": 2}})
    frame = pd.concat([rows(run_dir).assign(split="val", binarization=b, metric="CS", value=v)
                       for b, v in (("threshold", 10.0), ("threshold_merge", 20.0))])
    assert log_run_metrics(run_dir, frame, cfg) == "media1"
    files = offline_files(run_dir, "media1")
    assert len(list(files.glob("media/audio/**/*.ogg"))) == 2
    assert len(list(files.glob("media/images/**/*.png"))) == 2
    assert sorted(p.name for p in files.rglob("*.mid")) == ["test16-song003-t0.mid", "test16-song005-t0.mid"]
    # the run's better validation binarization (threshold_merge) is the one rendered
    assert all("threshold_merge" in p.read_text() for p in files.glob("wandb-summary.json"))

    store = pd.DataFrame([{"method": "RoPEPool", "context_label": "BIN", "lr": 0.001, "seed": 0,
                           "run_dir": str(run_dir)}])
    selection = pd.DataFrame([{"method": "RoPEPool", "context_label": "BIN", "lr": 0.001,
                               "binarization": "threshold"}])
    index = write_samples(store, selection, tmp_path / "samples", windows={"test16": 2})
    assert log_summary("t2", {}, {}, CFG, tmp_path, samples=index) == "summary-t2"
    (table_json,) = list(offline_files(tmp_path, "summary-t2").glob("media/table/**/*.table.json"))
    table = json.loads(table_json.read_text())
    assert table["columns"] == ["context", "window", "Ground truth audio", "Ground truth pianoroll",
                                "RoPEPool audio", "RoPEPool pianoroll"]
    assert [r[:2] for r in table["data"]] == [["BIN", "test16 song 003 tick 0"], ["BIN", "test16 song 005 tick 0"]]
    # the table's media travel in the run's table artifact, recorded in the offline transaction log
    log = flushed_log(offline_files(tmp_path, "summary-t2").parent)
    referenced = set(re.findall(rb"media/(?:audio|images)/[0-9a-f]+/test16-song00[35]-t0\.(?:ogg|png)", log.read_bytes()))
    assert sum(p.endswith(b".ogg") for p in referenced) == 4 and sum(p.endswith(b".png") for p in referenced) == 4
