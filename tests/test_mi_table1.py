"""Table I app pieces on the fake root: labels, MI rows, the written files."""

import csv

import numpy as np
import pytest

from stripes.data.table1 import compute_table, context_labels, paper_values, write_table
from stripes.data.paths import PROJECT_ROOT
from tests.test_data_preprocess import data_cfg


def test_context_labels():
    np.testing.assert_array_equal(context_labels(np.array([[3.0], [0.0]])), [3, 0])
    chroma = np.zeros((2, 12))
    chroma[0, [0, 4, 7]] = 1
    np.testing.assert_array_equal(context_labels(chroma), [1 + 16 + 128, 0])
    with pytest.raises(ValueError):
        context_labels(np.full((1, 12), 0.5))


def test_table_on_fake_data(fake_pop909_root, tmp_path):
    from stripes.data.preprocess import preprocess

    folder = preprocess(data_cfg(fake_pop909_root, tmp_path / "cache"), progress=False,
                        log=lambda *_: None)
    rows = compute_table(folder, "train", progress=False)
    by = {r["context"]: r for r in rows}
    assert list(by) == ["TIME", "REP", "KEY", "BIN"]
    for r in rows:
        assert 0 <= r["mi_all_tracks"] <= np.log(128)
        assert r["events_all_tracks"] > r["events_input_tracks"] > 0
    # the fake piano plays exactly the chord tones: BIN (the chroma) says much more than TIME
    assert by["BIN"]["mi_all_tracks"] > 2 * by["TIME"]["mi_all_tracks"]  # tiny data: TIME is biased up
    paper = paper_values(PROJECT_ROOT / "conf" / "reference" / "paper_tables.csv")
    assert paper == {"TIME": 0.0085, "REP": 0.0436, "KEY": 0.0476, "BIN": 1.0075}
    paths = write_table(rows, paper, tmp_path / "tables", "note")
    assert [p.name for p in paths] == ["table_I.csv", "table_I.md", "table_I.tex"]
    with open(paths[0]) as f:
        written = list(csv.DictReader(f))
    assert float(written[3]["paper_mi"]) == 1.0075
    assert "| BIN | 1.0075 |" in paths[1].read_text()
    # a context that is not in the paper (decision 13) gets "–" for the paper's value
    extra = compute_table(folder, "train", contexts=("rep_causal",), progress=False)
    assert extra[0]["context"] == "REP-causal" and 0 <= extra[0]["mi_all_tracks"] <= np.log(128)
    text = write_table(extra, paper, tmp_path / "tables2", "note")[1].read_text()
    assert "| REP-causal | – |" in text
