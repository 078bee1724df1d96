"""The training throughput benchmark writes its CSV and Markdown tables."""

from __future__ import annotations

import pandas as pd
import torch

from stripes.bench import training


def test_training_bench_writes_tables(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        table = training.run(tmp_path, steps=1, shapes=("cpu",), pes=("nope", "ropepool"), attentions=("linear",))
    finally:
        torch.set_num_threads(threads)
    csv = pd.read_csv(tmp_path / "training.csv")
    assert list(csv["pe"]) == ["nope", "ropepool"] and (csv["T"] == 256).all()
    assert (csv["tokens_per_s"] > 0).all()
    assert csv["tokens_per_s"].tolist() == table["tokens_per_s"].tolist()
    md = (tmp_path / "training.md").read_text()
    assert "RoPEPool" in md and "Machine:" in md
