"""The attention benchmark on a tiny configuration: files, columns, FLOP fractions, memory probe."""

import pandas as pd
import torch

from stripes.bench import attention as bench


def test_tiny_run_writes_csv_md_png(tmp_path):
    threads = torch.get_num_threads()
    csv = bench.run(tmp_path, quick=True, thread_counts=[1], lengths=[64, 128],
                    methods=["nope", "ropepool"], chunk_sweep=([128], [32, 64]))
    assert torch.get_num_threads() == threads  # restored
    frame = pd.read_csv(csv)
    assert set(frame.method) == {"nope", "ropepool", "sdpa"} and set(frame["T"]) == {64, 128}
    assert (frame.time_ms > 0).all() and frame.speedup_vs_sdpa.notna().all()
    linear = frame[frame.method != "sdpa"]
    assert (linear.frac_matmul > 0).all() and (linear.gflop > 0).all()
    md = (tmp_path / "attention.md").read_text()
    assert "Machine:" in md and "Load average" in md and "Targets" in md and "Chunk size" in md
    assert (tmp_path / "attention.png").stat().st_size > 0
    assert len(pd.read_csv(tmp_path / "attention_chunks.csv")) == 3


def test_peak_memory_probe_sees_a_large_allocation():
    mem = bench.peak_memory_bytes(lambda: torch.ones(64 * 2 ** 20 // 4).sum())
    if mem is not None:  # Linux only
        assert mem >= 48 * 2 ** 20
