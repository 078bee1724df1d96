"""Shared pytest setup: no network, no W&B account, headless plotting."""

import os

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")
# preprocessed test data (fake roots) goes to a temporary cache, not data/cache (see conf/data)
os.environ.setdefault("STRIPES_CACHE", __import__("tempfile").mkdtemp(prefix="stripes-test-cache-"))

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def fake_pop909_root(tmp_path_factory) -> Path:
    """A tiny POP909-shaped data root (6 known songs, see tests/fixtures/pop909.py)."""
    from tests.fixtures.pop909 import build_fake_pop909

    return build_fake_pop909(tmp_path_factory.mktemp("pop909") / "data")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core box: one torch thread avoids OpenMP contention (up to 10x
    faster there). Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def harmonize_run(fake_pop909_root, tmp_path_factory) -> Path:
    """One tiny RoPEPool/BIN run of the smoke profile on the fake data root (harmonize tests)."""
    import subprocess
    import sys

    project = Path(__file__).resolve().parents[1]
    root = tmp_path_factory.mktemp("harmonize_run")
    env = {**os.environ, "WANDB_MODE": "disabled"}
    command = [sys.executable, "-m", "stripes.train", "profile=smoke", "pe=ropepool", "context=bin",
               f"data.root={fake_pop909_root}", f"runs_root={root / 'runs'}",
               f"data.cache_dir={root / 'cache'}", "logger=csv", "experiment_name=harmonize"]
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = [p.parent for p in (root / "runs").rglob("run_info.json")]
    return run
