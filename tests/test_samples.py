"""Samples: the kept windows of the selected runs become MIDI, pianorolls, audio and an index."""

import numpy as np
import pandas as pd
import pytest
import soundfile

from stripes.data.midi import read_midi
from stripes.eval.samples import GROUND_TRUTH, INDEX_COLUMNS, read_index, song_tempo, write_samples
from tests.fixtures.samples import K, window, write_kept_windows


@pytest.fixture()
def two_runs(tmp_path):
    for name in ("ropepool", "rope_c"):
        write_kept_windows(tmp_path / "runs" / name)
    store = pd.DataFrame([{"method": m, "context_label": "BIN", "lr": 0.001, "seed": 0,
                           "run_dir": str(tmp_path / "runs" / d)}
                          for m, d in (("RoPEPool", "ropepool"), ("RoPE(C)", "rope_c"))])
    selection = pd.DataFrame([{"method": m, "context_label": "BIN", "lr": 0.001, "binarization": "threshold"}
                              for m in ("RoPEPool", "RoPE(C)")])
    return store, selection


def test_every_window_gets_midi_png_audio_and_an_index_row(two_runs, tmp_path):
    store, selection = two_runs
    out = tmp_path / "samples"
    index = write_samples(store, selection, out, windows={"test16": 2, "test64": 1})
    # 2 methods x (2 test16 + 1 test64 windows), plus the ground truth once: 3 more rows
    assert len(index) == 9 and list(index.columns) == INDEX_COLUMNS
    assert (index["method"] == GROUND_TRUTH).sum() == 3
    assert set(index["bars"]) == {16, 64}
    assert read_index(out).shape == index.shape
    for row in index.itertuples():
        for path in (row.midi, row.png, row.audio):
            assert (tmp_path / path).exists() if not path.startswith("/") else pd.io.common.file_exists(path)
        assert row.peak_dbfs <= -1.0 + 1e-6 and row.renderer == "soundfont"
    # the prediction's MIDI holds the binarized probabilities: bars 1-8 of the truth only
    pred = index[(index["method"] == "RoPEPool") & (index["split"] == "test16") & (index["song"] == 3)].iloc[0]
    truth = index[(index["method"] == GROUND_TRUTH) & (index["split"] == "test16") & (index["song"] == 3)].iloc[0]
    assert pred["midi"].endswith("BIN/RoPEPool/test16-song003-t0.mid")
    assert "Ground_truth" in truth["midi"]
    _, piano, _ = window(3, 256)
    n_true = int((np.diff(np.concatenate([np.zeros((1, 128)), piano]), axis=0) > 0).sum())
    parsed_pred, parsed_truth = read_midi(pred["midi"]), read_midi(truth["midi"])
    assert len(parsed_truth.notes["PIANO"]) == n_true
    assert len(parsed_pred.notes["PIANO"]) == n_true // 2
    # audio: stereo, 16 bars at 120 bpm (no data root) + 1 s tail, not silent
    data, rate = soundfile.read(pred["audio"], always_2d=True)
    assert data.shape[1] == 2 and data.shape[0] / rate == pytest.approx(256 / K * 0.5 + 1.0, abs=0.01)
    assert np.sqrt((data ** 2).mean()) > 0.01


def test_two_workers_write_the_same_index(two_runs, tmp_path):
    store, selection = two_runs
    one = write_samples(store, selection, tmp_path / "a", windows={"test16": 1})
    two = write_samples(store, selection, tmp_path / "b", windows={"test16": 1}, workers=2)
    columns = ["context", "method", "split", "song", "start", "bars"]
    assert one[columns].equals(two[columns])


def test_song_tempo_reads_the_source_file_with_the_project_reader(fake_pop909_root):
    bpm = song_tempo(fake_pop909_root, 1)
    tempo_us = read_midi(fake_pop909_root / "POP909" / "001" / "001.mid").tempo_us[0]
    assert bpm == pytest.approx(60e6 / tempo_us)
    assert song_tempo(fake_pop909_root, 999) == 120.0 and song_tempo(None, 1) == 120.0
