"""Preprocessing POP909: ``python -m stripes.data.preprocess profile=paper|cpu|smoke [data.root=...]``.

Reads every song of ``split.npz`` (MIDI parsed once and cached, see `stripes.data.cache`), puts it
on the ``data.ticks_per_quarter`` grid with its aligned chords and keys (`stripes.data.pop909`),
checks the alignment by cross-correlation, and writes the songs + the window index of every split
to ``<data.cache_dir>/pop909-<hash>/``, the hash of the data config and of every source file's
size and modification time. A second run with the same config and unchanged files finds the
folder and does nothing. Bad songs are skipped with one line each; more than
``data.max_skip_fraction`` of them fails the run with the list.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stripes.data.annotations import read_chord_db, read_split, read_startpos
from stripes.data.cache import (cached_read_midi, config_hash, is_complete, root_key, sources_stamp,
                                write_atomic_dir)
from stripes.data.midi import MidiReadError
from stripes.data.paths import PROJECT_ROOT, resolve_data_root
from stripes.data.pop909 import SongError, build_song, read_sources, song_files
from stripes.data.windows import bar_ticks, window_index

CONTENT_KEYS = ("ticks_per_quarter", "beats_per_bar", "max_songs", "windows", "alignment")


class TooManySkipped(RuntimeError):
    """More songs than allowed could not be used."""


def _plain(cfg) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return dict(cfg)


def source_files(data: dict, root: Path) -> list[Path]:
    """Every file preprocessing reads: the three alignment files and each selected song's files."""
    align_dir = root / "pop909_alignment"
    files = [align_dir / name for name in ("startpos.csv", "split.npz", "chord_db.npz")]
    chosen = select_songs(read_split(align_dir / "split.npz"), data.get("max_songs"))
    for number in dict.fromkeys(n for k in ("train", "val", "test") for n in chosen[k]):
        files.extend(song_files(root, number).values())
    return files


def cache_folder(data: dict, root: Path) -> Path:
    """``<cache_dir>/pop909-<hash>`` for this data config, data root and the source files' sizes
    and modification times (an edited source file makes a new folder)."""
    content = {k: data.get(k) for k in CONTENT_KEYS}
    content["root"] = str(root)
    content["sources"] = sources_stamp(root, source_files(data, root))
    base = Path(data.get("cache_dir") or "data/cache")
    if not base.is_absolute():
        base = PROJECT_ROOT / base
    return base / f"pop909-{config_hash(content)}"


def select_songs(split: dict[str, np.ndarray], max_songs: int | None) -> dict[str, list[int]]:
    """All songs of each split, or at most `max_songs` shared in proportion (>= 1 per split),
    taking the first ones in split.npz order."""
    if max_songs is None:
        return {k: [int(x) for x in v] for k, v in split.items()}
    total = sum(len(v) for v in split.values())
    return {k: [int(x) for x in v[: max(1, int(max_songs * len(v) / total))]]
            for k, v in split.items()}


def _window_specs(data: dict) -> dict[str, dict]:
    bar = bar_ticks(data["ticks_per_quarter"], data.get("beats_per_bar", 4))
    specs = {}
    for name, w in data["windows"].items():
        specs[name] = {"split": w["split"], "bars": w["bars"], "hop_bars": w["hop_bars"],
                       "length": int(w["bars"] * bar), "hop": int(w["hop_bars"] * bar)}
    return specs


def _read_one(root, number, startpos, midi_cache, data, min_length):
    files = song_files(root, number)
    if number not in startpos:
        raise SongError(number, "pop909_alignment/startpos.csv", "song has no row in startpos.csv")
    if not files["midi"].is_file():
        raise SongError(number, files["midi"].relative_to(root), "MIDI file missing")
    try:
        midi, hit = cached_read_midi(files["midi"], midi_cache)
    except MidiReadError as err:
        raise SongError(number, files["midi"].relative_to(root), str(err).split(": ", 1)[-1]) from None
    src = read_sources(root, number, startpos, midi)
    align = data["alignment"]
    song = build_song(src, data["ticks_per_quarter"], align["policy"], align["search_ticks"],
                      align["min_gain"])
    if song.n_ticks < min_length:
        raise SongError(number, files["midi"].relative_to(root),
                        f"shorter than one window ({song.n_ticks} < {min_length} ticks)")
    return song, hit


def preprocess(data_cfg, force: bool = False, progress: bool = True, log=print) -> Path:
    """Make sure the cache of this data config exists; return its folder (see module doc)."""
    data = _plain(data_cfg)
    root = resolve_data_root(data.get("root"))
    folder = cache_folder(data, root)
    if is_complete(folder) and not force:
        log(f"preprocessed data up to date: {folder}")
        return folder
    t0 = time.perf_counter()
    align_dir = root / "pop909_alignment"
    startpos = read_startpos(align_dir / "startpos.csv")
    split = read_split(align_dir / "split.npz")
    chord_db = read_chord_db(align_dir / "chord_db.npz")
    specs = _window_specs(data)
    min_length = min(s["length"] for s in specs.values())
    chosen = select_songs(split, data.get("max_songs"))
    numbers = list(dict.fromkeys(n for k in ("train", "val", "test") for n in chosen[k]))
    midi_cache = Path(folder.parent) / "midi" / root_key(root)

    songs, skipped, hits = [], [], 0
    bar = tqdm(numbers, desc=f"POP909 @ {data['ticks_per_quarter']} tpq", unit="song",
               disable=not progress, dynamic_ncols=True)
    for number in bar:
        try:
            song, hit = _read_one(root, number, startpos, midi_cache, data, min_length)
            songs.append(song)
            hits += hit
        except SongError as err:
            skipped.append(err)
            tqdm.write(f"skipped {err}")
    t_read = time.perf_counter() - t0

    if numbers and len(skipped) / len(numbers) > data.get("max_skip_fraction", 0.1):
        listing = "\n".join(f"  {e}" for e in skipped)
        raise TooManySkipped(f"{len(skipped)} of {len(numbers)} songs skipped (more than "
                             f"{data.get('max_skip_fraction', 0.1):.0%}) in {root}:\n{listing}")

    rows = {s.number: i for i, s in enumerate(songs)}
    lengths = np.array([s.n_ticks for s in songs], dtype=np.int64)
    arrays = {
        "rolls": np.concatenate([np.packbits(s.roll, axis=1) for s in songs]),
        "chord_code": np.concatenate([s.chord_code for s in songs]).astype(np.uint16),
        "key_code": np.concatenate([s.key_code for s in songs]).astype(np.uint8),
        "songs": np.array([s.number for s in songs], dtype=np.int64),
        "song_offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "chord_db": chord_db,
    }
    counts = {}
    for name, spec in specs.items():
        members = np.array([rows[n] for n in chosen[spec["split"]] if n in rows], dtype=np.int64)
        arrays[f"windows_{name}"] = window_index(lengths, members, spec["length"], spec["hop"])
        counts[name] = {"songs": int(len(np.unique(arrays[f'windows_{name}'][:, 0]))),
                        "windows": int(len(arrays[f"windows_{name}"]))}

    align_policy = data["alignment"]["policy"]
    min_gain = data["alignment"]["min_gain"]
    disagree = [s for s in songs if s.alignment.disagrees(min_gain)]
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["song", "startpos", "best_offset", "startpos_match", "best_match", "disagrees",
                     "offset_used"])
    for s in songs:
        a = s.alignment
        writer.writerow([s.number, a.file_offset, a.best_offset, f"{a.file_score:.4f}",
                         f"{a.best_score:.4f}", int(a.disagrees(min_gain)), s.offset])
    elapsed = time.perf_counter() - t0
    reasons = Counter(e.reason.split(" (")[0] for e in skipped)
    meta = {
        "data_root": str(root), "ticks_per_quarter": data["ticks_per_quarter"],
        "config": {k: data.get(k) for k in CONTENT_KEYS},
        "windows": specs, "counts": counts,
        "songs_considered": len(numbers), "songs_used": len(songs),
        "songs_per_split": {k: sum(n in rows for n in v) for k, v in chosen.items()},
        "skipped": [{"song": e.number, "file": e.path, "reason": e.reason} for e in skipped],
        "alignment": {"policy": align_policy, "disagreeing": [s.number for s in disagree]},
        "midi_cache_hits": hits, "seconds": round(elapsed, 2), "seconds_reading": round(t_read, 2),
    }
    write_atomic_dir(folder, arrays, {"alignment.csv": table.getvalue(),
                                      "meta.json": json.dumps(meta, indent=1)}, replace=force)

    log(f"POP909 preprocessed at {data['ticks_per_quarter']} ticks/quarter from {root}")
    log(f"  songs: {len(songs)} used of {len(numbers)} in split.npz selection "
        f"({', '.join(f'{k} {v}' for k, v in meta['songs_per_split'].items())}); "
        f"{len(skipped)} skipped")
    for reason, n in reasons.most_common():
        log(f"    skipped {n}: {reason}")
    log(f"  alignment: {len(disagree)} songs where the annotated melody agrees better with another "
        f"offset (policy '{align_policy}'): {[s.number for s in disagree][:30]}"
        f"{' ...' if len(disagree) > 30 else ''}")
    log("  windows: " + ", ".join(f"{k} {v['windows']} ({v['songs']} songs, "
                                  f"{specs[k]['length']} ticks)" for k, v in counts.items()))
    log(f"  MIDI parse cache hits: {hits}/{len(numbers)}; time {elapsed:.1f} s -> {folder}")
    return folder


def main() -> None:
    import hydra
    from omegaconf import DictConfig

    @hydra.main(config_path=str(PROJECT_ROOT / "conf"), config_name="preprocess", version_base="1.3")
    def _run(cfg: DictConfig) -> None:
        with clean_data_errors():
            preprocess(cfg.data, force=bool(cfg.get("force", False)))

    _run()


@contextlib.contextmanager
def clean_data_errors():
    """Data errors (bad root, too many skipped songs) end the program with their message only
    (exit code 2) instead of a traceback."""
    from stripes.data.paths import DataRootError

    try:
        yield
    except (DataRootError, TooManySkipped) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
