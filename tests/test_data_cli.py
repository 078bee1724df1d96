"""The Hydra entry points as users run them (make data / make table1)."""

import os
import subprocess
import sys

from stripes.data.paths import PROJECT_ROOT


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def test_preprocess_cli_smoke_then_nothing(fake_pop909_root, tmp_path):
    args = ("stripes.data.preprocess", "profile=smoke", f"data.root={fake_pop909_root}",
            f"data.cache_dir={tmp_path}")
    first = run(*args)
    assert first.returncode == 0, first.stderr
    assert "songs: 6 used of 6" in first.stdout and "windows: train" in first.stdout
    second = run(*args)
    assert second.returncode == 0 and "up to date" in second.stdout


def test_wrong_root_fails_at_once_with_the_layout(tmp_path):
    result = run("stripes.data.preprocess", f"data.root={tmp_path}")
    assert result.returncode == 2
    assert "expected layout" in result.stderr and "Traceback" not in result.stderr
    assert "agarwalmanvi/structurePE" in result.stderr


def test_table1_cli(fake_pop909_root, tmp_path):
    result = run("stripes.data.table1", "profile=smoke", f"data.root={fake_pop909_root}",
                 f"data.cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'tables'}")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "tables" / "table_I.md").read_text()
    assert "| BIN | 1.0075 |" in text
