"""stripes.atomic: a failed write names the file and leaves the previous content (issue 14, item 7)."""

import errno
import json

import pandas as pd
import pytest

from stripes.atomic import WriteError, atomic_write, atomic_write_text
from stripes.runs import read_run_info, write_run_info


def _full_disk_after(n_bytes):
    def write(tmp):
        with open(tmp, "wb") as handle:
            handle.write(b"x" * n_bytes)
        raise OSError(errno.ENOSPC, "No space left on device")
    return write


def test_full_disk_names_the_file_and_keeps_the_old_content(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    atomic_write_text(target, "old")
    with pytest.raises(WriteError) as caught:
        atomic_write(target, _full_disk_after(1000))
    assert caught.value.errno == errno.ENOSPC and str(target) in str(caught.value)
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]  # no temporary left


def test_torch_short_write_is_reported_as_a_write_error(tmp_path):
    def torch_like(tmp):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0: file write failed")

    with pytest.raises(WriteError, match=r"could not write .*last\.ckpt"):
        atomic_write(tmp_path / "last.ckpt", torch_like)


def test_other_errors_propagate_unchanged(tmp_path):
    def bug(tmp):
        raise KeyError("not a write problem")

    with pytest.raises(KeyError):
        atomic_write(tmp_path / "x", bug)
    assert list(tmp_path.iterdir()) == []


def test_run_info_and_results_store_on_a_full_disk(tmp_path, monkeypatch):
    from stripes.eval import results
    from tests.test_results import make_rows

    write_run_info(tmp_path, {"status": "running"})
    results.update_store(tmp_path / "results", make_rows("runs/a"))

    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("pathlib.Path.write_text", no_space)
    with pytest.raises(WriteError, match="run_info.json"):
        write_run_info(tmp_path, {"status": "finished"})
    assert read_run_info(tmp_path) == {"status": "running"}
    monkeypatch.setattr(pd.DataFrame, "to_parquet", no_space)
    with pytest.raises(WriteError, match=r"results\.parquet"):
        results.update_store(tmp_path / "results", make_rows("runs/b"))
    assert set(results.load_store(tmp_path / "results")["run_dir"]) == {"runs/a"}
    assert json.loads((tmp_path / "run_info.json").read_text())["status"] == "running"
