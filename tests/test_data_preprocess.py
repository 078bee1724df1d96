"""Preprocessing on fake roots: windows, cache reuse, summary, bad input."""

import json

import numpy as np
import pytest

from stripes.data.cache import SongStore
from stripes.data.paths import DataRootError
from stripes.data.preprocess import TooManySkipped, preprocess, select_songs
from tests.fixtures.pop909 import build_fake_pop909, song_design

WINDOWS = {"train": {"split": "train", "bars": 16, "hop_bars": 14},
           "val": {"split": "val", "bars": 16, "hop_bars": 16},
           "test16": {"split": "test", "bars": 16, "hop_bars": 16},
           "test64": {"split": "test", "bars": 64, "hop_bars": 16}}


def data_cfg(root, cache, **over):
    cfg = {"root": str(root), "cache_dir": str(cache), "ticks_per_quarter": 4, "beats_per_bar": 4,
           "max_songs": None, "max_skip_fraction": 0.1, "windows": WINDOWS,
           "alignment": {"policy": "startpos", "search_ticks": 64, "min_gain": 0.2}}
    cfg.update(over)
    return cfg


def test_windows_and_store(fake_pop909_root, tmp_path):
    folder = preprocess(data_cfg(fake_pop909_root, tmp_path), progress=False, log=lambda *_: None)
    store = SongStore(folder)
    assert list(store.songs) == [1, 2, 3, 4, 5, 6]
    meta = store.meta
    # 4 tpq: a bar = 16 ticks; train windows 256 long every 224 ticks
    for name, songs in (("train", [1, 2, 3]), ("val", [4]), ("test16", [5, 6]), ("test64", [5, 6])):
        spec = WINDOWS[name]
        length, hop = spec["bars"] * 16, spec["hop_bars"] * 16
        expected = []
        for n in songs:
            n_ticks = int(round(song_design(n).n_ticks / 4))
            expected += [(n, s) for s in range(0, n_ticks - length + 1, hop)]
        got = [(int(store.songs[r]), int(s)) for r, s in store.windows[name]]
        assert got == expected, name
        assert meta["counts"][name]["windows"] == len(expected)
    # stored roll equals the design
    row = 3  # song 4
    np.testing.assert_array_equal(store.song(row)["roll"].astype(bool), song_design(4).roll(4))
    sl = store.slice(row, 16, 256)
    np.testing.assert_array_equal(sl["roll"].astype(bool), song_design(4).roll(4)[16:272])


def test_second_run_does_nothing(fake_pop909_root, tmp_path):
    cfg = data_cfg(fake_pop909_root, tmp_path)
    folder = preprocess(cfg, progress=False, log=lambda *_: None)
    stamp = (folder / "meta.json").stat().st_mtime_ns
    lines = []
    assert preprocess(cfg, progress=False, log=lines.append) == folder
    assert (folder / "meta.json").stat().st_mtime_ns == stamp
    assert lines == [f"preprocessed data up to date: {folder}"]
    # batch size does not change the cache key; the resolution does
    assert preprocess({**cfg, "batch_size": 3}, progress=False, log=lambda *_: None) == folder
    other = preprocess({**cfg, "ticks_per_quarter": 8}, progress=False, log=lambda *_: None)
    assert other != folder
    # the second config reused the parsed MIDI
    assert json.loads((other / "meta.json").read_text())["midi_cache_hits"] == 6
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary folders left


def test_max_songs_shares_splits():
    split = {"train": np.arange(1, 81), "val": np.arange(81, 91), "test": np.arange(91, 101)}
    chosen = select_songs(split, 20)
    assert {k: len(v) for k, v in chosen.items()} == {"train": 16, "val": 2, "test": 2}
    assert chosen["val"] == [81, 82]
    assert select_songs(split, 3)["val"] == [81]


BAD = {
    1: ("corrupt_midi", "POP909/001/001.mid", "not a MIDI file"),
    2: ("truncated_midi", "POP909/002/002.mid", "ends early"),
    3: ("missing_chord", "finalized_chord.txt", "file missing"),
    4: ("missing_melody", "melody.txt", "file missing"),
    5: ("missing_key", "key_audio.txt", "file missing"),
    6: ("bad_chord_line", "finalized_chord.txt", "line 6"),
    7: ("no_startpos", "startpos.csv", "no row in startpos.csv"),
    8: ("two_tracks", "POP909/008/008.mid", "missing ['BRIDGE']"),
    9: ("bad_key", "key_audio.txt", "not a note name"),
}


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory):
    defects = {n: kind for n, (kind, _, _) in BAD.items()}
    return build_fake_pop909(tmp_path_factory.mktemp("bad"), n_songs=30, n_bars=20,
                             defects={**defects, 10: "misaligned"})


def test_bad_songs_are_skipped_with_one_line_each(bad_root, tmp_path, capsys):
    lines = []
    folder = preprocess(data_cfg(bad_root, tmp_path, max_skip_fraction=0.5), progress=False,
                        log=lines.append)
    out = capsys.readouterr().out.splitlines()
    meta = json.loads((folder / "meta.json").read_text())
    skipped = {s["song"]: s for s in meta["skipped"]}
    assert sorted(skipped) == sorted(BAD)
    for number, (kind, file, reason) in BAD.items():
        mine = [line for line in out if line.startswith(f"skipped song {number:03d}:")]
        assert len(mine) == 1, (kind, out)
        assert file in mine[0] and reason in mine[0], (kind, mine[0])
    assert meta["songs_used"] == 30 - len(BAD)
    assert any(f"{len(BAD)} skipped" in line for line in lines)
    assert meta["alignment"]["disagreeing"] == [10]  # reported, kept (policy startpos)
    assert 10 in SongStore(folder).songs


def test_too_many_skipped_fails_with_the_list(bad_root, tmp_path):
    with pytest.raises(TooManySkipped) as err:
        preprocess(data_cfg(bad_root, tmp_path), progress=False, log=lambda *_: None)
    text = str(err.value)
    assert f"{len(BAD)} of 30 songs skipped" in text
    for number in BAD:
        assert f"song {number:03d}:" in text
    assert not list(tmp_path.glob("pop909-*"))  # nothing written


def test_alignment_skip_policy(bad_root, tmp_path):
    cfg = data_cfg(bad_root, tmp_path, max_skip_fraction=0.5,
                   alignment={"policy": "skip", "search_ticks": 64, "min_gain": 0.2})
    folder = preprocess(cfg, progress=False, log=lambda *_: None)
    skipped = {s["song"]: s["reason"] for s in json.loads((folder / "meta.json").read_text())["skipped"]}
    assert f"agrees best at offset {song_design(10).position} " in skipped[10]


def test_short_song_is_skipped(tmp_path):
    root = build_fake_pop909(tmp_path / "d", n_songs=4, n_bars=12)  # 12 bars < one 16-bar window
    cfg = data_cfg(root, tmp_path / "c", max_skip_fraction=1.0)
    with pytest.raises(ValueError):
        preprocess(cfg, progress=False, log=lambda *_: None)  # nothing left at all
    cfg["windows"] = {"train": {"split": "train", "bars": 8, "hop_bars": 8}}
    folder = preprocess(cfg, progress=False, log=lambda *_: None)
    assert len(SongStore(folder).windows["train"]) > 0


def test_empty_root_fails_at_once(tmp_path):
    with pytest.raises(DataRootError, match="expected layout"):
        preprocess(data_cfg(tmp_path, tmp_path / "cache"), progress=False)


def test_an_edited_source_file_is_not_up_to_date(tmp_path):
    """Issue 14: the cache is keyed on the source files' sizes and mtimes, not only the config."""
    root = build_fake_pop909(tmp_path / "data")
    cfg = data_cfg(root, tmp_path / "cache")
    folder = preprocess(cfg, progress=False, log=lambda *_: None)
    chords = root / "pop909_structure" / "POP909" / "002" / "finalized_chord.txt"
    lines = chords.read_text().splitlines(keepends=True)
    chords.write_text("".join(lines[::-1]))  # same size, new content and mtime
    log = []
    edited = preprocess(cfg, progress=False, log=log.append)
    assert edited != folder and not any("up to date" in line for line in log)
    assert preprocess(cfg, progress=False, log=lambda *_: None) == edited  # now up to date
    (root / "POP909" / "005" / "005.mid").touch()  # a touched MIDI file too
    assert preprocess(cfg, progress=False, log=lambda *_: None) not in (folder, edited)
