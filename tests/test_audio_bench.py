"""The audio benchmark writes its table and a projection for the cpu profile."""

import numpy as np
import pandas as pd
import pytest

from stripes.bench import audio


def test_pop909_like_windows_have_the_intended_density():
    melody, bridge, piano = audio.pop909_like(16)
    assert melody.shape == (256, 128) and not bridge.any()
    assert melody.sum(1).max() == 1 and piano.sum(1).max() == 4  # one melody note, 4-note chords


@pytest.mark.slow
def test_bench_writes_csv_and_markdown(tmp_path):
    frame = audio.run(tmp_path, repeats=1)
    assert sorted(frame["bars"]) == [16, 64] and (frame["total_s"] > 0).all()
    assert np.allclose(frame.sort_values("bars")["audio_length_s"], [16 * 4 * 0.75 + 1, 64 * 4 * 0.75 + 1])
    text = (tmp_path / "audio.md").read_text()
    assert "Projected for the cpu profile" in text and "W&B media" in text
    assert pd.read_csv(tmp_path / "audio.csv").shape[0] == 2
