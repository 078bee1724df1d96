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
