"""POP909DataModule on the fake root: batch contract, determinism, crop_batch, Hydra config."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from stripes.data.datamodule import POP909DataModule, build_datamodule, crop_batch
from tests.fixtures.pop909 import song_design
from tests.test_data_preprocess import data_cfg


@pytest.fixture(scope="module")
def dm_factory(fake_pop909_root, tmp_path_factory):
    cache = tmp_path_factory.mktemp("dmcache")

    def make(context="time", seed=0, **over):
        dm = POP909DataModule(data_cfg(fake_pop909_root, cache, batch_size=3, num_workers=0, **over),
                              context=context, seed=seed)
        dm.setup()
        return dm

    return make


@pytest.mark.parametrize("context,pos_dim", [("time", 1), ("rep", 1), ("key", 1), ("bin", 12)])
def test_batch_contract(dm_factory, context, pos_dim):
    dm = dm_factory(context)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input", "target", "positions", "mask", "song", "start"}
    assert batch["input"].shape == (3, 256, 256) and batch["input"].dtype == torch.float32
    assert batch["target"].shape == (3, 256, 384) and batch["target"].dtype == torch.float32
    assert batch["positions"].shape == (3, 256, pos_dim) and batch["positions"].dtype == torch.float32
    assert batch["mask"].dtype == torch.bool and batch["mask"].all()
    assert batch["song"].dtype == torch.int64 and batch["start"].dtype == torch.int64
    torch.testing.assert_close(batch["input"], batch["target"][..., :256])
    for b in range(3):  # content equals the design roll at the window
        song, start = int(batch["song"][b]), int(batch["start"][b])
        expected = song_design(song).roll(4)[start:start + 256]
        np.testing.assert_array_equal(batch["target"][b].numpy().astype(bool), expected)
    assert dm.pos_dim == pos_dim


def test_eval_loaders_are_ordered_and_complete(dm_factory):
    dm = dm_factory("rep")
    for split, length, n in (("val", 256, 4), ("test16", 256, 8), ("test64", 1024, 2)):
        batches = list(dm.predict_dataloader(split))
        songs = torch.cat([b["song"] for b in batches])
        starts = torch.cat([b["start"] for b in batches])
        assert len(songs) == n and batches[0]["target"].shape[1] == length
        keys = list(zip(songs.tolist(), starts.tolist()))
        assert keys == sorted(keys)
    with pytest.raises(ValueError):
        dm.predict_dataloader("train")


def test_shuffle_is_deterministic_given_seed(dm_factory):
    order = lambda dm: [tuple(b["song"].tolist() + b["start"].tolist()) for b in dm.train_dataloader()]  # noqa: E731
    assert order(dm_factory(seed=1)) == order(dm_factory(seed=1))
    assert order(dm_factory(seed=1)) != order(dm_factory(seed=2))


def test_crop_batch(dm_factory):
    batch = next(iter(dm_factory("bin").val_dataloader()))
    cropped = crop_batch(batch, 16)
    for key in ("input", "target", "positions", "mask"):
        assert cropped[key].shape[1] == 16
        torch.testing.assert_close(cropped[key], batch[key][:, :16])
    assert cropped["song"] is batch["song"] and cropped["start"] is batch["start"]


def test_build_datamodule_from_composed_config(fake_pop909_root):
    from hydra import compose, initialize_config_dir

    from stripes.data.paths import PROJECT_ROOT

    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["profile=smoke", "context=key",
                                          f"data.root={fake_pop909_root}"])
    dm = build_datamodule(cfg)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["positions"].shape[-1] == 1 and dm.context == "key"
    assert batch["target"].shape[1] == 16 * 4 * 4  # smoke: 4 ticks per quarter
    assert OmegaConf.select(cfg, "data.ticks_per_quarter") == 4


def test_collate_pads_shorter_windows():
    from stripes.data.datamodule import collate_windows

    def item(n):
        return {"input": torch.ones(n, 256), "target": torch.ones(n, 384),
                "positions": torch.ones(n, 1), "mask": torch.ones(n, dtype=torch.bool),
                "song": torch.tensor(n), "start": torch.tensor(0)}

    batch = collate_windows([item(5), item(3)])
    assert batch["input"].shape == (2, 5, 256) and batch["song"].tolist() == [5, 3]
    assert batch["mask"].tolist() == [[True] * 5, [True] * 3 + [False] * 2]
    assert batch["target"][1, 3:].sum() == 0 and batch["mask"].dtype == torch.bool


def test_test16_matched_keeps_the_16_bar_windows_of_the_test64_songs():
    # decision 14, on a hand-made window index: song rows 0, 1, 2 have 16-bar windows, only rows 1
    # and 2 are long enough for a 64-bar window -> the matched set is rows 1 and 2, in order
    from types import SimpleNamespace

    from stripes.data.datamodule import window_rows

    store = SimpleNamespace(
        windows={"test16": np.array([[0, 0], [0, 64], [1, 0], [1, 64], [2, 0]]),
                 "test64": np.array([[1, 0], [2, 0]])},
        window_length={"test16": 64, "test64": 256})
    index, length = window_rows(store, "test16_matched", "cache/x")
    np.testing.assert_array_equal(index, [[1, 0], [1, 64], [2, 0]])
    assert length == 64
    with pytest.raises(KeyError, match="cache/x.*'test64'"):
        window_rows(SimpleNamespace(windows={"test16": store.windows["test16"]},
                                    window_length={"test16": 64}), "test16_matched", "cache/x")


def test_test16_matched_loader_on_the_fixture(dm_factory):
    # every fake test song has 64-bar windows, so the matched set equals test16 here
    dm = dm_factory("time")
    keys = lambda split: [(int(s), int(t)) for b in dm.predict_dataloader(split)  # noqa: E731
                          for s, t in zip(b["song"], b["start"])]
    assert keys("test16_matched") == keys("test16") and len(keys("test16")) == 8
    assert set(s for s, _ in keys("test16_matched")) == set(s for s, _ in keys("test64"))
