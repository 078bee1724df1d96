"""The attention benchmark on a tiny configuration: files, columns, FLOP fractions, memory probe."""

import pandas as pd
import pytest
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


def test_target_columns_flag_slow_methods_and_quadratic_memory():
    """Hand-made rows: A is 12x SDPA with memory doubling per doubling of T; B is 5x with memory x4."""
    rows = []
    for t, sdpa_ms in ((1024, 100.0), (2048, 400.0), (4096, 1600.0)):
        rows.append({"threads": 1, "method": "sdpa", "label": "softmax", "T": t, "time_ms": sdpa_ms, "cpu_ms": sdpa_ms,
                     "peak_mem_mib": t / 64, "speedup_vs_sdpa": 1.0})
        rows.append({"threads": 1, "method": "nope", "label": "A", "T": t, "time_ms": sdpa_ms / 12,
                     "peak_mem_mib": t / 128, "speedup_vs_sdpa": 12.0, "frac_matmul": 0.4})
        rows.append({"threads": 1, "method": "spe", "label": "B", "T": t, "time_ms": sdpa_ms / 5,
                     "peak_mem_mib": (t / 1024) ** 2, "speedup_vs_sdpa": 5.0, "frac_matmul": 0.2})
    frame = bench._add_target_columns(pd.DataFrame(rows)).set_index(["method", "T"])
    assert frame.loc[("nope", 4096), "meets_speedup"] == True  # noqa: E712
    assert frame.loc[("spe", 4096), "meets_speedup"] == False  # noqa: E712
    assert pd.isna(frame.loc[("nope", 2048), "meets_speedup"])  # judged at the longest T only
    assert frame.loc[("nope", 4096), "mem_growth"] == pytest.approx(2.0)
    assert frame.loc[("spe", 4096), "mem_growth"] == pytest.approx(4.0)
    assert frame.loc[("nope", 4096), "mem_loglog_slope"] == pytest.approx(1.0)
    assert frame.loc[("spe", 4096), "mem_loglog_slope"] == pytest.approx(2.0)
    assert frame.loc[("nope", 4096), "memory_linear"] == True  # noqa: E712
    assert frame.loc[("spe", 4096), "memory_linear"] == False  # noqa: E712
    lines = bench._targets(frame.reset_index(), [1024, 2048, 4096])
    assert any("MISSED" in line and "B 5.0×" in line for line in lines)
    # the matmul-rate target judges NoPE/RoPE/RoPEPool only: B (SPE, 20 %) is not listed there
    matmul = [line for line in lines if "matmul rate" in line]
    assert matmul == ["- ≥30% of the matmul rate at T = 4096 (NoPE, RoPE, RoPEPool): A 40% → met."]
