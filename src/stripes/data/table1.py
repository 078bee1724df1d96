"""Table I: MI between pitches and context labels, ours beside the paper's.

``python -m stripes.data.table1 [profile=paper] [data.root=...]`` (`make table1`) preprocesses if
needed, then counts, over every window of ``split`` (default: the 16-bar training windows,
decision 9.8), each active pianoroll cell as one (pitch, label_t) event, for two variants:
all three tracks (the target roll) and the input tracks (melody + bridge). Labels: TIME the tick
index, REP / KEY the token, BIN the 12-d chroma as one label (its 12-bit code). Writes
``outputs/tables/table_I.{csv,md,tex}``.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stripes.data.cache import SongStore
from stripes.data.chords import ChordVocabulary, chroma_bits
from stripes.data.contexts import ChordTrack, get_context
from stripes.data.mi import JointCounter
from stripes.data.paths import PROJECT_ROOT

VARIANTS = {"all_tracks": slice(0, 384), "input_tracks": slice(0, 256)}


def context_labels(positions: np.ndarray) -> np.ndarray:
    """(T, P) positions -> (T,) integer labels: the value itself (P = 1) or, for binary vectors,
    their bit code (one label per distinct vector)."""
    if positions.shape[1] == 1:
        return positions[:, 0].astype(np.int64)
    if not np.isin(positions, (0, 1)).all():
        raise ValueError("vector positions must be binary to be used as MI labels")
    return chroma_bits(positions)


def compute_table(folder: Path, split: str = "train", contexts=("time", "rep", "key", "bin"),
                  progress: bool = True) -> list[dict]:
    """MI rows (one per context) over the windows `split` of a preprocessed cache folder."""
    store = SongStore(folder)
    vocab = ChordVocabulary(store.chord_db)
    counters = {(c, v): JointCounter() for c in contexts for v in VARIANTS}
    index, length = store.windows[split], store.window_length[split]
    for row, start in tqdm(index, desc=f"MI over {split} windows", disable=not progress):
        window = store.slice(int(row), int(start), length)
        track = ChordTrack(window["chord_code"], window["key_code"], vocab)
        t, col = np.nonzero(window["roll"])
        for c in contexts:
            labels = context_labels(get_context(c).positions(track))[t]
            for v, cols in VARIANTS.items():
                keep = (col >= cols.start) & (col < cols.stop)
                counters[c, v].add_events(labels[keep], col[keep] % 128)
    rows = []
    for c in contexts:
        row = {"context": get_context(c).label, "windows": len(index)}
        for v in VARIANTS:
            counter = counters[c, v]
            row[f"mi_{v}"] = counter.mutual_information()
            row[f"bias_{v}"] = counter.bias()
            row[f"events_{v}"] = counter.n_events
            row[f"labels_{v}"] = int(counter.matrix().shape[0])
        rows.append(row)
    return rows


def paper_values(reference: Path) -> dict[str, float]:
    """Table I of [S] from conf/reference/paper_tables.csv (rows paper=S, table=TI)."""
    with open(reference) as f:
        return {r["context"]: float(r["mean"]) for r in csv.DictReader(f)
                if r["paper"] == "S" and r["table"] == "TI" and r["metric"] == "MI_nats"}


def write_table(rows: list[dict], paper: dict[str, float], out_dir: Path, note: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    fields = ["context", "paper_mi", "mi_all_tracks", "mi_input_tracks", "bias_all_tracks",
              "bias_input_tracks", "events_all_tracks", "events_input_tracks", "labels_all_tracks",
              "windows"]
    for r in rows:
        r["paper_mi"] = paper.get(r["context"], float("nan"))
    paths = [out_dir / "table_I.csv", out_dir / "table_I.md", out_dir / "table_I.tex"]
    with open(paths[0], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    md = ["# Table I: mutual information between pitches and context labels (nats)", "", note, "",
          "| Context | Paper [S] | Ours, all tracks | Ours, input tracks | events (all) | labels |",
          "|---|---:|---:|---:|---:|---:|"]
    paper_text = lambda x: f"{x:.4f}" if np.isfinite(x) else "–"  # noqa: E731 (not in the paper)
    md += [f"| {r['context']} | {paper_text(r['paper_mi'])} | {r['mi_all_tracks']:.4f} | "
           f"{r['mi_input_tracks']:.4f} | {r['events_all_tracks']:,} | {r['labels_all_tracks']} |"
           for r in rows]
    paths[1].write_text("\n".join(md) + "\n")
    tex = [r"\begin{tabular}{lrrr}", r"\toprule",
           r"Context & Paper & Ours (all tracks) & Ours (input tracks) \\", r"\midrule"]
    tex += [f"{r['context']} & {paper_text(r['paper_mi'])} & {r['mi_all_tracks']:.4f} & "
            f"{r['mi_input_tracks']:.4f} \\\\" for r in rows]
    tex += [r"\bottomrule", r"\end{tabular}"]
    paths[2].write_text("\n".join(tex) + "\n")
    return paths


def main() -> None:
    import hydra
    from omegaconf import DictConfig

    @hydra.main(config_path=str(PROJECT_ROOT / "conf"), config_name="table1", version_base="1.3")
    def _run(cfg: DictConfig) -> None:
        from stripes.data.preprocess import clean_data_errors, preprocess

        with clean_data_errors():
            folder = preprocess(cfg.data)
        t0 = time.perf_counter()
        rows = compute_table(folder, cfg.split, tuple(cfg.contexts))
        out_dir = Path(cfg.output_dir)  # relative to the working directory, like every stage's outputs
        reference = Path(cfg.reference)
        if not reference.is_absolute():
            reference = PROJECT_ROOT / reference
        note = (f"Plug-in MI over every active cell of the `{cfg.split}` windows "
                f"({rows[0]['windows']} windows, {cfg.data.ticks_per_quarter} ticks per quarter). "
                "All tracks = melody+bridge+piano (decision 9.8); input tracks = melody+bridge.")
        paths = write_table(rows, paper_values(reference), out_dir, note)
        for r in rows:
            print(f"{r['context']:5s} paper {r['paper_mi']:.4f}  all {r['mi_all_tracks']:.4f}  "
                  f"input {r['mi_input_tracks']:.4f}  (bias ~{r['bias_all_tracks']:.1e}, "
                  f"{r['events_all_tracks']:,} events)")
        print(f"MI computed in {time.perf_counter() - t0:.1f} s -> {', '.join(map(str, paths))}")

    _run()


if __name__ == "__main__":
    main()
