"""W&B logging of evaluation: off when disabled, offline records resumed by the run's stored id."""

import json

import pandas as pd
import pytest
from omegaconf import OmegaConf

from stripes.eval.wandb_log import log_run_metrics, log_summary, wandb_enabled

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
