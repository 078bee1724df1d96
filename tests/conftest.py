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
