"""Tables, comparison and claims on a synthetic results store whose answers are known by design."""

import itertools

import numpy as np
import pandas as pd
import pytest

from stripes.eval import results as store_lib
from stripes.eval import tables as tables_lib
from stripes.eval.claims import PAPER_CONTEXT_ORDER

REFERENCE = "conf/reference/paper_tables.csv"
CONTEXT_QUALITY = {"TIME": 0.0, "REP": 10.0, "KEY": 20.0, "BIN": 30.0, "REP-causal": 5.0}
METHOD_QUALITY = {"RoPE(A)": 0.0, "RoPE(B)": 1.0, "RoPE(C)": 5.0, "F-StrIPE1": 6.0, "RoPEPool": 7.0,
                  "NoPE": -1.0, "SPE": -0.5, "F-StrIPE": 3.0}


def synthetic_store(methods=tuple(METHOD_QUALITY), contexts=tuple(CONTEXT_QUALITY), seeds=(0, 1, 2),
                    lrs=(1e-4, 1e-3), matched_gain=0.0):
    """quality = context + method + 2 (16-64) + 1 (lr 1e-3, merge) (+ matched_gain on
    test16_matched); '↓' metrics are 100 - quality."""
    rng = np.random.default_rng(0)
    rows = []
    for method, context, lr, seed in itertools.product(methods, contexts, lrs, seeds):
        run_dir = f"outputs/runs/x/{method}-{context}-{lr}-{seed}"
        for split, binarization, metric in itertools.product(
                store_lib.SPLIT_SETTING, ("threshold", "threshold_merge"), ("CS", "SSMD", "GS", "NDD")):
            quality = CONTEXT_QUALITY[context] + METHOD_QUALITY[method]
            quality += 2.0 * (split == "test64") + 1.0 * (lr == 1e-3 and binarization == "threshold_merge")
            quality += matched_gain * (split == "test16_matched")
            quality += rng.normal(0, 0.1)
            value = quality if metric in ("CS", "GS") else 100.0 - quality
            rows.append(dict(experiment="synthetic", pe=method.lower(), pe_label=method, method=method,
                             context=context.lower(), context_label=context, lr=lr, seed=seed,
                             run_dir=run_dir, checkpoint="best", split=split,
                             setting=store_lib.SPLIT_SETTING[split], binarization=binarization,
                             metric=metric, value=value, n_windows=4, ticks_per_quarter=4,
                             evaluated_at="2026-01-01T00:00:00"))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def outputs():
    return tables_lib.build_tables(synthetic_store(), tables_lib.load_reference(REFERENCE))


def test_selection_picks_lr_and_binarization_on_validation(outputs):
    assert len(outputs.selection) == len(METHOD_QUALITY) * len(CONTEXT_QUALITY)
    assert set(outputs.selection["lr"]) == {1e-3}
    assert set(outputs.selection["binarization"]) == {"threshold_merge"}


def test_table_marks_and_best_rope(outputs):
    t3 = outputs.tables["table_III"]
    # best RoPE on validation is RoPE(C) everywhere
    assert set(t3["method"]) == {"RoPE(C)", "F-StrIPE1", "RoPEPool"}
    best = t3[t3["best"]]
    assert set(best["method"]) == {"RoPEPool"}  # +7 beats +6 by 10 noise sds: '*'
    assert set(best["mark"]) == {"*"}
    overall = t3[t3["overall_best"]]
    assert len(overall) == 8 and set(overall["context"]) == {"BIN"}
    t2 = outputs.tables["table_II"]
    cell = t2[(t2["context"] == "BIN") & (t2["method"] == "RoPE(C)") & (t2["setting"] == "16-64")
              & (t2["metric"] == "CS")].iloc[0]
    assert cell["best"] and cell["n_seeds"] == 3
    assert cell["mean"] == pytest.approx(30 + 5 + 2 + 1, abs=0.2)


def test_claims_hold_on_a_store_built_to_satisfy_them(outputs):
    status = {c.id: c.status for c in outputs.claims}
    assert status == {"context_ranking": "holds", "bin_pool_fstripe1_ropec": "holds",
                      "bin_ropec_dominates_ab": "holds", "length_generalization": "holds",
                      "length_generalization_matched": "holds", "rep_gain_without_leak": "holds"}
    ranking = outputs.claims[0].evidence[0]
    assert ranking.startswith("CS 16-16: " + " > ".join(PAPER_CONTEXT_ORDER[:1]))


def test_claims_detect_violations():
    store = synthetic_store(methods=("RoPE(A)", "RoPE(B)", "RoPE(C)", "F-StrIPE1", "RoPEPool"))
    # make TIME the best context and RoPEPool the worst method on BIN
    store.loc[store["context_label"] == "TIME", "value"] = np.where(
        store.loc[store["context_label"] == "TIME", "metric"].isin(["CS", "GS"]), 99.0, 1.0)
    pool = (store["method"] == "RoPEPool") & (store["context_label"] == "BIN")
    store.loc[pool, "value"] = np.where(store.loc[pool, "metric"].isin(["CS", "GS"]), -50.0, 150.0)
    out = tables_lib.build_tables(store, tables_lib.load_reference(REFERENCE))
    status = {c.id: c.status for c in out.claims}
    assert status["context_ranking"] == "does not hold"
    assert status["bin_pool_fstripe1_ropec"] == "does not hold"
    assert status["bin_ropec_dominates_ab"] == "holds"


def test_rep_leak_and_matched_length_claims_detect_violations(tmp_path):
    # REP-causal below TIME: REP's gain (REP 10 > TIME 0) is lost without the leak (decision 13);
    # the matched 16-bar songs score 3 above test16, so 16-64 (+2) no longer improves on them
    # although it does on the paper's unmatched settings (decision 14)
    quality = dict(CONTEXT_QUALITY)
    CONTEXT_QUALITY["REP-causal"] = -3.0
    try:
        store = synthetic_store(matched_gain=3.0)
    finally:
        CONTEXT_QUALITY.update(quality)
    out = tables_lib.build_tables(store, tables_lib.load_reference(REFERENCE))
    status = {c.id: c.status for c in out.claims}
    assert status["length_generalization"] == "holds"
    assert status["length_generalization_matched"] == "does not hold"
    assert status["rep_gain_without_leak"] == "does not hold"
    rep_claim = next(c for c in out.claims if c.id == "rep_gain_without_leak")
    assert rep_claim.evidence[0] == "REP beats TIME in 12 (method, metric) cells; REP-causal also does in 0"
    # the tables keep the paper's settings; comparison.md gains the two fidelity sections
    assert "16-16 matched" not in set(out.tables["table_III"]["setting"])
    assert set(out.tables["table_rep_causal"]["context"]) == {"TIME", "REP", "REP-causal"}
    tables_lib.write_tables(out, tmp_path)
    text = (tmp_path / "comparison.md").read_text()
    assert "### REP without future leakage (decision 13)" in text
    assert "### Length generalization on matched songs (decision 14)" in text
    assert (tmp_path / "table_rep_causal.md").exists()


def test_comparison_uses_paper_numbers(outputs):
    comp = outputs.comparison
    row = comp[(comp["table"] == "table_III") & (comp["context"] == "BIN") & (comp["method"] == "RoPEPool")
               & (comp["setting"] == "16-16") & (comp["metric"] == "CS")].iloc[0]
    assert row["paper_mean"] == pytest.approx(25.83) and row["paper_std"] == pytest.approx(1.02)
    f_row = comp[(comp["table"] == "table_fstripe") & (comp["method"] == "NoPE")
                 & (comp["setting"] == "16-16") & (comp["metric"] == "SSMD")].iloc[0]
    assert f_row["paper_mean"] == pytest.approx(29.31 / 2)  # [F]'s ×100 SSMD scale halved


def test_write_tables_files_and_empty_store(tmp_path, outputs):
    written = tables_lib.write_tables(outputs, tmp_path)
    for name in ("table_II", "table_III", "table_fstripe"):
        for ext in ("md", "tex", "csv"):
            assert (tmp_path / f"{name}.{ext}").exists()
    for name in ("comparison.md", "comparison.csv", "claims.md", "claims.json", "table_selection.md"):
        assert (tmp_path / name).exists()
    md = (tmp_path / "table_III.md").read_text()
    assert "***" in md and "| BIN | RoPEPool |" in md
    assert r"\underline" in (tmp_path / "table_II.tex").read_text()
    csv = pd.read_csv(tmp_path / "table_III.csv")
    assert {"mean", "std", "mark", "seed_values", "lr", "binarization"} <= set(csv.columns)
    assert len(written) > 10
    empty = tables_lib.build_tables(store_lib.empty_store(), tables_lib.load_reference(REFERENCE))
    tables_lib.write_tables(empty, tmp_path / "empty")
    assert "No evaluated runs" in (tmp_path / "empty" / "table_III.md").read_text()
    assert {c.status for c in empty.claims} == {"not testable"}


def test_default_reproduce_store_without_spe_and_fstripe_rows(tmp_path):
    """`make reproduce` (issue 15) trains NoPE but not SPE/F-StrIPE: every table is still written."""
    methods = tuple(m for m in METHOD_QUALITY if m not in ("SPE", "F-StrIPE"))
    built = tables_lib.build_tables(synthetic_store(methods=methods), tables_lib.load_reference(REFERENCE))
    tables_lib.write_tables(built, tmp_path)
    fstripe = pd.read_csv(tmp_path / "table_fstripe.csv")
    trained = fstripe.dropna(subset=["mean"])
    assert set(trained["method"]) == {"NoPE"} and set(trained["context"].str.upper()) == {
        c.upper() for c in CONTEXT_QUALITY if c != "REP-causal"}  # the [F] table has the paper's 4
    assert (tmp_path / "claims.md").exists()
    assert "| BIN | RoPEPool |" in (tmp_path / "table_III.md").read_text()


def test_rep_gain_without_leak_needs_significance_not_just_a_higher_mean():
    """REP-causal 0.02 above TIME with seed noise 0.1 (the cpu run's picture: 52.97 vs 52.94) is
    'not significant', not a surviving gain; 1 % of REP's +10 is kept."""
    quality = dict(CONTEXT_QUALITY)
    CONTEXT_QUALITY["REP-causal"] = 0.02
    try:
        store = synthetic_store(methods=("RoPE(C)", "F-StrIPE1", "RoPEPool"), contexts=("TIME", "REP", "REP-causal"))
    finally:
        CONTEXT_QUALITY.update(quality)
    claim = next(c for c in tables_lib.build_tables(store, tables_lib.load_reference(REFERENCE)).claims
                 if c.id == "rep_gain_without_leak")
    verdicts = [line.rsplit("-> ", 1)[1] for line in claim.evidence[1:]]
    # a higher mean alone counted as "survives" in 12 of 12 cells before; with the t-test only
    # chance significance remains (deterministic here: rng seed 0)
    assert verdicts.count("the gain survives") <= 2 and verdicts.count("not significant") >= 3
    assert claim.status != "holds"
    assert all("% of REP's gain kept" in line for line in claim.evidence[1:])
