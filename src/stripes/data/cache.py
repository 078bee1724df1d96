"""The on-disk cache: parsed MIDI per song, and the preprocessed songs + window index per config.

Layout below ``data.cache_dir``:
- ``midi/<root hash>/NNN.npz``: `ParsedMidi` arrays of song NNN (independent of the data config;
  reused by every config), stamped with the source file's size and mtime;
- ``pop909-<config hash>/``: one folder per data config (hash of everything that changes the
  content, including the size and modification time of every source file read, so an edited
  chord file or a replaced MIDI file gives a new folder; `sources_stamp`), written to a temporary folder and renamed into place (atomic), holding
  ``rolls.npy`` (ΣT, 48) uint8 = the (ΣT, 384) binary rolls packed along pitch (np.packbits),
  ``chord_code.npy`` (ΣT,) uint16, ``key_code.npy`` (ΣT,) uint8, ``songs.npy`` (song numbers),
  ``song_offsets.npy`` (n+1,) row offsets, ``windows_<name>.npy`` (n, 2) (song row, start),
  ``chord_db.npy``, ``alignment.csv`` and ``meta.json`` (config, counts, skipped songs, times).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from stripes.atomic import atomic_write
from stripes.data.midi import ParsedMidi, read_midi

CACHE_VERSION = 1
COMPLETE_MARK = "meta.json"  # written last


def config_hash(content: dict) -> str:
    """Short stable hash of a JSON-able dict."""
    text = json.dumps({"version": CACHE_VERSION, **content}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def sources_stamp(root: Path, paths: list[Path]) -> str:
    """Hash of (path relative to `root`, size, mtime in ns) of each file; absent files count too."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        try:
            stat = path.stat()
            entry = f"{path.relative_to(root) if path.is_relative_to(root) else path}|{stat.st_size}|{stat.st_mtime_ns}"
        except FileNotFoundError:
            entry = f"{path}|absent"
        digest.update(entry.encode() + b"\n")
    return digest.hexdigest()[:16]


def write_atomic_dir(final: Path, arrays: dict[str, np.ndarray], texts: dict[str, str],
                     replace: bool = False) -> Path:
    """Write arrays (.npy) and text files into a temp folder beside `final`, then rename it.

    If another process finished the same folder first, its copy is kept, unless `replace`."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, arr in arrays.items():
        np.save(tmp / f"{name}.npy", arr)
    for name, text in texts.items():
        if name != COMPLETE_MARK:
            (tmp / name).write_text(text)
    if COMPLETE_MARK in texts:
        (tmp / COMPLETE_MARK).write_text(texts[COMPLETE_MARK])
    if replace and final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.rename(final, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.rename(tmp, final)
    except OSError:  # final exists (someone else won the race, or a stale incomplete folder)
        if (final / COMPLETE_MARK).is_file():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
    return final


def is_complete(folder: Path) -> bool:
    return (Path(folder) / COMPLETE_MARK).is_file()


def _save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle: np.savez would append ".npz" to a path
            np.savez(handle, **arrays)

    atomic_write(path, write)


def root_key(root: Path) -> str:
    return hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:12]


def cached_read_midi(path: Path, cache_folder: Path | None) -> tuple[ParsedMidi, bool]:
    """`read_midi` through the per-song cache; returns (parsed, whether it came from the cache)."""
    if cache_folder is None:
        return read_midi(path), False
    stat = Path(path).stat()
    stamp = np.array([stat.st_size, stat.st_mtime_ns], dtype=np.int64)
    entry = Path(cache_folder) / f"{Path(path).stem}.npz"
    if entry.is_file():
        try:
            with np.load(entry, allow_pickle=False) as z:
                if np.array_equal(z["stamp"], stamp):
                    return ParsedMidi.from_arrays({k: z[k] for k in z.files}), True
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache entry: parse again and overwrite it
    parsed = read_midi(path)
    _save_npz_atomic(entry, {**parsed.to_arrays(), "stamp": stamp})
    return parsed, False


class SongStore:
    """Read access to one preprocessed folder (memory-mapped, cheap to open in workers)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        if not is_complete(self.folder):
            raise FileNotFoundError(f"{self.folder}: not a complete preprocessed cache (no meta.json)")
        self.meta = json.loads((self.folder / COMPLETE_MARK).read_text())
        load = lambda name: np.load(self.folder / f"{name}.npy", mmap_mode="r")  # noqa: E731
        self.rolls = load("rolls")
        self.chord_code = load("chord_code")
        self.key_code = load("key_code")
        self.songs = np.load(self.folder / "songs.npy")
        self.offsets = np.load(self.folder / "song_offsets.npy")
        self.chord_db = np.load(self.folder / "chord_db.npy")
        self.windows = {name: np.load(self.folder / f"windows_{name}.npy")
                        for name in self.meta["windows"]}
        self.window_length = {name: int(spec["length"]) for name, spec in self.meta["windows"].items()}
        self.ticks_per_quarter = int(self.meta["ticks_per_quarter"])

    def song_length(self, row: int) -> int:
        return int(self.offsets[row + 1] - self.offsets[row])

    def slice(self, row: int, start: int, length: int) -> dict[str, np.ndarray]:
        """Roll (length, 384) uint8, chord_code and key_code (length,) of song row `row`."""
        a = int(self.offsets[row]) + int(start)
        b = a + int(length)
        if start < 0 or b > self.offsets[row + 1]:
            raise IndexError(f"window {start}+{length} outside song row {row} "
                             f"(length {self.song_length(row)})")
        return {"roll": np.unpackbits(np.asarray(self.rolls[a:b]), axis=1),
                "chord_code": np.asarray(self.chord_code[a:b], dtype=np.int64),
                "key_code": np.asarray(self.key_code[a:b], dtype=np.int64)}

    def song(self, row: int) -> dict[str, np.ndarray]:
        return self.slice(row, 0, self.song_length(row))
