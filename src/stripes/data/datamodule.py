"""POP909 windows as PyTorch datasets and a LightningDataModule.

A batch is a dict (the team contract):
  input (B, T, 256) float32 = melody ⊕ bridge; target (B, T, 384) float32 = melody ⊕ bridge ⊕ piano;
  positions (B, T, P) float32 (the context, see stripes.data.contexts); mask (B, T) bool (True =
  real tick); song (B,) int64 song number; start (B,) int64 window start tick.
`build_datamodule(cfg)` prepares the on-disk cache itself (stripes.data.preprocess) when missing.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from stripes.data.cache import SongStore
from stripes.data.chords import ChordVocabulary
from stripes.data.contexts import ChordTrack, get_context

TIME_KEYS = ("input", "target", "positions", "mask")
SPLITS = ("train", "val", "test16", "test64", "test16_matched")
#: Window sets derived at load time from the cached ones: name -> (windows, songs of). Decision 14:
#: ``test16_matched`` = the 16-bar test windows of exactly the songs that have 64-bar windows, so
#: 16-16 and 16-64 compare the same songs (test64 covers only the test songs of >= 64 bars).
DERIVED_WINDOWS = {"test16_matched": ("test16", "test64")}
PREDICT_SPLITS = ("val", "test16", "test64", "test16_matched")


def window_rows(store: SongStore, window_name: str, folder) -> tuple[np.ndarray, int]:
    """(index (n, 2) of (song row, start), window length in ticks) of a cached or derived set.

    Raises KeyError naming the cache folder when the set (or a set it derives from) is absent."""
    base, songs_of = DERIVED_WINDOWS.get(window_name, (window_name, None))
    for name in (base, songs_of):
        if name is not None and name not in store.windows:
            raise KeyError(f"{folder}: no window set {name!r}; has {sorted(store.windows)}")
    index = store.windows[base]
    if songs_of is not None:
        index = index[np.isin(index[:, 0], np.unique(store.windows[songs_of][:, 0]))]
    return index, store.window_length[base]


class WindowDataset(Dataset):
    """The windows `window_name` of a preprocessed cache folder, with positions of `context`."""

    def __init__(self, folder: str | Path, window_name: str, context: str):
        self.folder, self.window_name, self.context = Path(folder), window_name, get_context(context)
        self._store = None
        self.index, self.length = window_rows(self.store, window_name, folder)

    @property
    def store(self) -> SongStore:
        if self._store is None:  # opened lazily so that worker processes map the files themselves
            self._store = SongStore(self.folder)
            self._vocab = ChordVocabulary(self._store.chord_db)
        return self._store

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_store"] = None
        return state

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row, start = (int(x) for x in self.index[i])
        store = self.store
        window = store.slice(row, start, self.length)
        roll = torch.from_numpy(window["roll"].astype(np.float32))
        track = ChordTrack(window["chord_code"], window["key_code"], self._vocab)
        return {
            "input": roll[:, :256],
            "target": roll,
            "positions": torch.from_numpy(self.context.positions(track)),
            "mask": torch.ones(self.length, dtype=torch.bool),
            "song": torch.tensor(int(store.songs[row]), dtype=torch.int64),
            "start": torch.tensor(start, dtype=torch.int64),
        }


def collate_windows(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack windows; shorter ones are zero-padded at the end with mask False.

    Stacks with NumPy (single-threaded memcpy): torch.stack's intra-op thread pool was ~60×
    slower on the shared 2-core machine."""
    length = max(len(it["mask"]) for it in items)
    out = {}
    for key in items[0]:
        arrays = [it[key].numpy() for it in items]
        if key in TIME_KEYS and any(len(a) != length for a in arrays):
            arrays = [np.concatenate([a, np.zeros((length - len(a), *a.shape[1:]), a.dtype)])
                      for a in arrays]
        out[key] = torch.from_numpy(np.stack(arrays))
    return out


def crop_batch(batch: dict[str, torch.Tensor], length: int) -> dict[str, torch.Tensor]:
    """The batch with every time axis (input, target, positions, mask) cut to its first `length`
    ticks (curriculum learning); other entries unchanged."""
    return {k: (v[:, :length] if k in TIME_KEYS else v) for k, v in batch.items()}


def _worker_context(workers: int) -> str | None:
    """The platform's default start method for loader workers, named explicitly: inside a job of
    Hydra's joblib launcher (a loky process, e.g. `hydra/launcher=joblib_gpu`) the process-wide
    default is loky's own, which cannot start DataLoader workers (issue 10)."""
    return multiprocessing.get_all_start_methods()[0] if workers > 0 else None


class POP909DataModule(pl.LightningDataModule):
    """Train/val/test16/test64 (+ derived test16_matched) windows of POP909 with one context's positions."""

    def __init__(self, data: dict, context: str = "time", seed: int = 0):
        super().__init__()
        self.data = dict(data)
        self.context = context
        self.seed = int(seed)
        self.folder: Path | None = None
        self.datasets: dict[str, WindowDataset] = {}

    @property
    def pos_dim(self) -> int:
        return get_context(self.context).pos_dim

    def prepare_data(self) -> None:
        from stripes.data.preprocess import preprocess

        self.folder = preprocess(self.data, progress=False, log=lambda *_: None)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.folder is None:
            self.prepare_data()
        self.datasets = {name: WindowDataset(self.folder, name, self.context) for name in SPLITS}

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        self.setup()
        workers = int(self.data.get("num_workers") or 0)
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(self.datasets[name], batch_size=int(self.data.get("batch_size", 8)),
                          shuffle=shuffle, generator=generator, num_workers=workers,
                          collate_fn=collate_windows, persistent_workers=workers > 0,
                          drop_last=False, multiprocessing_context=_worker_context(workers))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def predict_dataloader(self, split: str = "test16") -> DataLoader:
        if split not in PREDICT_SPLITS:
            raise ValueError(f"predict split must be one of {', '.join(PREDICT_SPLITS)}, got {split!r}")
        return self._loader(split, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test16", shuffle=False)


def build_datamodule(cfg) -> POP909DataModule:
    """From the whole composed config: cfg.data, cfg.context.name, cfg.seed."""
    from omegaconf import DictConfig, OmegaConf

    data = cfg.data
    if isinstance(data, DictConfig):
        data = OmegaConf.to_container(data, resolve=True)
    context = cfg.context.name if "context" in cfg and cfg.context is not None else "time"
    seed = cfg.get("seed", 0) if hasattr(cfg, "get") else 0
    return POP909DataModule(data, context=context, seed=seed or 0)
