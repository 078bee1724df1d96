"""Learning curves (stripes.eval.curves): per-epoch validation rows out of a Lightning metrics.csv."""

import pandas as pd
import pytest

from stripes.eval.curves import plot_learning_curves, read_curves


def _write_metrics(run_dir, with_density=True):
    """A metrics.csv shaped like Lightning's CSV logger: step rows (train) and epoch rows (val)."""
    rows = []
    for epoch in range(3):
        for step in range(epoch * 4, epoch * 4 + 4):
            rows.append({"epoch": epoch, "step": step, "train/loss_step": 0.5 - 0.01 * step})
        val = {"epoch": epoch, "step": epoch * 4 + 3,
               "val/loss": 0.2 - 0.05 * epoch, "val/cs": 5.0 + 10 * epoch}
        if with_density:
            val.update({"val/density": 0.001 * epoch, "val/target_density": 0.04})
        rows.append(val)
        rows.append({"epoch": epoch, "step": epoch * 4 + 3, "train/loss_epoch": 0.4})
    run_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(run_dir / "metrics.csv", index=False)


def test_read_curves_keeps_one_validation_row_per_epoch(tmp_path):
    _write_metrics(tmp_path / "run")
    frame = read_curves(tmp_path / "run")
    assert frame["epoch"].tolist() == [0, 1, 2]
    assert frame["val/loss"].tolist() == pytest.approx([0.2, 0.15, 0.1])
    assert frame["val/cs"].tolist() == pytest.approx([5.0, 15.0, 25.0])
    assert frame["val/density"].tolist() == pytest.approx([0.0, 0.001, 0.002])
    assert "train/loss_step" not in frame.columns


def test_read_curves_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.csv"):
        read_curves(tmp_path)
    train_only = pd.DataFrame({"epoch": [0], "step": [1], "train/loss_step": [0.3]})
    train_only.to_csv(tmp_path / "metrics.csv", index=False)
    with pytest.raises(ValueError, match="val/loss"):
        read_curves(tmp_path)


def test_plot_writes_png_and_pdf_even_without_density(tmp_path):
    _write_metrics(tmp_path / "a")
    _write_metrics(tmp_path / "b", with_density=False)  # logs from before val/density existed
    paths = plot_learning_curves([tmp_path / "a", tmp_path / "b"], tmp_path / "fig" / "curves")
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)
    with pytest.raises(ValueError, match="labels"):
        plot_learning_curves([tmp_path / "a"], tmp_path / "x", labels=["1", "2"])
