"""MIDI files and pianoroll images of a few fixed test windows per (PE method, context).

``python -m stripes.evaluate`` keeps, per run, the first test windows (inputs, ground-truth piano,
piano probabilities) in ``<run_dir>/eval/samples.npz``. This module takes, for each (method,
context), the run of the validation-selected (lr, binarization) with the lowest seed, binarizes its
probabilities the selected way and writes under ``outputs/samples/<context>/<method>/``:

* ``<song>-<start>.mid``: MELODY, BRIDGE and the generated PIANO as three named instruments, at the
  source song's tempo (first tempo of ``POP909/NNN/NNN.mid``; 120 bpm when the file is not found);
* ``<song>-<start>_truth.mid``: the same with the ground-truth piano;
* ``<song>-<start>.png``: pianorolls, ground truth beside the prediction (melody red,
  accompaniment blue).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stripes.eval.binarize import binarize

DEFAULT_BPM = 120.0
VELOCITY = 80


def safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text).strip("_")


def roll_to_notes(roll: np.ndarray) -> list[tuple[int, int, int]]:
    """(T, 128) bool -> [(pitch, start tick, end tick exclusive)], one per run of active ticks."""
    roll = np.asarray(roll, dtype=bool)
    padded = np.zeros((roll.shape[0] + 2, roll.shape[1]), dtype=np.int8)
    padded[1:-1] = roll
    change = np.diff(padded, axis=0)
    starts_t, starts_p = np.nonzero(change == 1)
    ends_t, ends_p = np.nonzero(change == -1)
    start_order = np.lexsort((starts_t, starts_p))
    end_order = np.lexsort((ends_t, ends_p))
    return [(int(p), int(s), int(e)) for p, s, e in
            zip(starts_p[start_order], starts_t[start_order], ends_t[end_order])]


def song_tempo(data_root: str | Path | None, song: int) -> float:
    """First tempo (bpm) of ``<root>/POP909/NNN/NNN.mid``; :data:`DEFAULT_BPM` if unavailable."""
    if data_root is None:
        return DEFAULT_BPM
    path = Path(data_root) / "POP909" / f"{song:03d}" / f"{song:03d}.mid"
    if not path.exists():
        return DEFAULT_BPM
    import pretty_midi

    try:
        _, tempi = pretty_midi.PrettyMIDI(str(path)).get_tempo_changes()
    except Exception:  # unreadable MIDI: fall back, samples are illustrations
        return DEFAULT_BPM
    return float(tempi[0]) if len(tempi) else DEFAULT_BPM


def write_midi(path: Path, tracks: dict[str, np.ndarray], ticks_per_quarter: int, bpm: float) -> None:
    """Write named piano instruments, one per (T, 128) roll, at ``bpm``."""
    import pretty_midi

    midi = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    seconds_per_tick = 60.0 / bpm / ticks_per_quarter
    for name, roll in tracks.items():
        instrument = pretty_midi.Instrument(program=0, name=name)
        for pitch, start, end in roll_to_notes(roll):
            instrument.notes.append(pretty_midi.Note(velocity=VELOCITY, pitch=pitch,
                                                     start=start * seconds_per_tick,
                                                     end=end * seconds_per_tick))
        midi.instruments.append(instrument)
    path.parent.mkdir(parents=True, exist_ok=True)
    midi.write(str(path))


MELODY_RGB = (0.85, 0.1, 0.1)  # red
BRIDGE_RGB = (0.55, 0.7, 0.95)  # light blue: the given (input) accompaniment
PIANO_RGB = (0.1, 0.25, 0.8)  # blue: the piano accompaniment (ground truth or generated)


def plot_pianorolls(path: Path, melody: np.ndarray, bridge: np.ndarray, piano_truth: np.ndarray,
                    piano_pred: np.ndarray, title: str, ticks_per_quarter: int) -> None:
    """Ground truth (left) beside prediction (right): melody red, accompaniment blue."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    active = np.nonzero(melody.any(0) | bridge.any(0) | piano_truth.any(0) | piano_pred.any(0))[0]
    for ax, piano, label in ((axes[0], piano_truth, "ground truth"), (axes[1], piano_pred, "prediction")):
        image = np.ones(melody.shape + (3,))
        image[bridge] = BRIDGE_RGB
        image[piano] = PIANO_RGB
        image[melody] = MELODY_RGB
        ax.imshow(image.transpose(1, 0, 2), origin="lower", aspect="auto", interpolation="nearest")
        if active.size:
            ax.set_ylim(max(active.min() - 2, 0), min(active.max() + 2, 127))
        ax.set_title(label)
        ax.set_xlabel(f"tick ({ticks_per_quarter} per quarter)")
    axes[0].set_ylabel("MIDI pitch")
    fig.legend(handles=[Patch(color=MELODY_RGB, label="melody"), Patch(color=BRIDGE_RGB, label="bridge (input)"),
                        Patch(color=PIANO_RGB, label="piano")], loc="upper right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.92, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_data_root(run_dir: str | Path):
    """The data root a run was trained on (its config's ``data.root``, resolved), or None."""
    try:
        from stripes.data.paths import resolve_data_root
        from stripes.runs import load_config

        return resolve_data_root(load_config(run_dir).data.get("root"))
    except Exception:  # no config or no data here: samples fall back to the default tempo
        return None


def write_run_samples(run_dir: str | Path, out_dir: str | Path, binarization: str, thr: float,
                      merge_gap_sixteenths: float, title: str, data_root=None,
                      split: str = "test16", max_windows: int = 2) -> list[Path]:
    """Render the kept windows of one run; returns the written paths ([] when none were kept)."""
    npz_path = Path(run_dir) / "eval" / "samples.npz"
    if not npz_path.exists():
        return []
    data = np.load(npz_path)
    if f"{split}_song" not in data:
        return []
    k = int(data["ticks_per_quarter"])
    max_gap = int(round(merge_gap_sixteenths * k / 4))
    written = []
    for i in range(min(max_windows, len(data[f"{split}_song"]))):
        song, start, n = (int(data[f"{split}_{key}"][i]) for key in ("song", "start", "length"))
        inputs = data[f"{split}_input"][i, :n]
        melody, bridge = inputs[:, :128], inputs[:, 128:256]
        truth = data[f"{split}_target_piano"][i, :n]
        probs = data[f"{split}_piano_probs"][i, :n].astype(np.float32)
        prediction = binarize(probs, binarization, thr=thr, max_gap=max_gap)
        bpm = song_tempo(data_root, song)
        stem = Path(out_dir) / f"song{song:03d}-t{start}"
        write_midi(stem.with_suffix(".mid"), {"MELODY": melody, "BRIDGE": bridge, "PIANO": prediction}, k, bpm)
        write_midi(stem.with_name(stem.name + "_truth.mid"),
                   {"MELODY": melody, "BRIDGE": bridge, "PIANO": truth}, k, bpm)
        plot_pianorolls(stem.with_suffix(".png"), melody, bridge, truth, prediction,
                        f"{title} – song {song:03d}, tick {start} ({binarization})", k)
        written += [stem.with_suffix(".mid"), stem.with_suffix(".png")]
    return written


def write_samples(store: pd.DataFrame, selection: pd.DataFrame, out_dir: str | Path, thr: float = 0.5,
                  merge_gap_sixteenths: float = 1, data_root=None, max_windows: int = 2) -> list[Path]:
    """Samples for every selected (method, context): lowest-seed run of the chosen lr."""
    written = []
    if store.empty or selection.empty:
        return written
    for _, choice in selection.iterrows():
        runs = store[(store["method"] == choice["method"]) & (store["context_label"] == choice["context_label"])
                     & (store["lr"] == choice["lr"])][["seed", "run_dir"]].drop_duplicates()
        if runs.empty:
            continue
        run_dir = runs.sort_values("seed").iloc[0]["run_dir"]
        root = data_root if data_root is not None else run_data_root(run_dir)
        folder = Path(out_dir) / safe_name(choice["context_label"]) / safe_name(choice["method"])
        written += write_run_samples(run_dir, folder, choice["binarization"], thr, merge_gap_sixteenths,
                                     f"{choice['method']} / {choice['context_label']}", root,
                                     max_windows=max_windows)
    return written


def run(cfg) -> list[Path]:
    """Samples only (``conf/plots.yaml`` ``samples`` and ``selection``), from the results store."""
    from stripes.eval import results as store_lib

    store = store_lib.load_store(cfg.results_dir)
    selection = store_lib.select_models(store, cfg.selection.metric, cfg.selection.split)
    written = write_samples(store, selection, cfg.samples.out_dir, cfg.samples.threshold,
                            cfg.samples.merge_gap_sixteenths, cfg.samples.get("data_root"),
                            cfg.samples.n_windows)
    print(f"[samples] wrote {len(written)} files under {cfg.samples.out_dir}", flush=True)
    return written


if __name__ == "__main__":
    import os

    import hydra

    @hydra.main(version_base="1.3", config_path="../../../conf", config_name="plots")
    def _main(cfg) -> None:
        os.chdir(hydra.utils.get_original_cwd())
        run(cfg)

    _main()
