"""MIDI, pianoroll images and audio of a few fixed test windows per (PE method, context).

``python -m stripes.evaluate`` keeps, per run, the first test windows (inputs, ground-truth piano,
piano probabilities) in ``<run_dir>/eval/samples.npz``. This module takes, for each (method,
context), the run of the validation-selected (lr, binarization) with the lowest seed, binarizes its
probabilities the selected way and writes under ``outputs/samples/<context>/<method>/``, per window
``<split>-song<NNN>-t<start>`` (the same windows for every run: the first ones of each test split):

* ``.mid``: MELODY, BRIDGE and the generated PIANO as three named instruments, at the source song's
  tempo (first tempo of ``POP909/NNN/NNN.mid``; 120 bpm when the file is not found);
* ``.png``: the pianoroll (melody red, bridge light blue, piano blue);
* ``.ogg``: the stereo audio (:mod:`stripes.audio`: melody on a flute, piano on a piano).

The ground truth of each window is written once per context under ``<context>/Ground_truth/``, and
``outputs/samples/index.csv`` lists every file set (the demo page and W&B read it).
"""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=1024)
def song_tempo(data_root: str | Path | None, song: int) -> float:
    """First tempo (bpm) of ``<root>/POP909/NNN/NNN.mid`` (read with the project's MIDI reader,
    :func:`stripes.data.midi.read_midi`); :data:`DEFAULT_BPM` if the file is absent or unreadable."""
    if data_root is None:
        return DEFAULT_BPM
    path = Path(data_root) / "POP909" / f"{song:03d}" / f"{song:03d}.mid"
    if not path.exists():
        return DEFAULT_BPM
    from stripes.data.midi import MidiReadError, read_midi

    try:
        tempo_us = read_midi(path).tempo_us
    except MidiReadError:  # unreadable MIDI: fall back, samples are illustrations
        return DEFAULT_BPM
    return 60e6 / float(tempo_us[0]) if len(tempo_us) else DEFAULT_BPM


def write_midi(path: Path, tracks: dict[str, np.ndarray], ticks_per_quarter: int, bpm: float,
               programs: dict[str, int] | None = None) -> None:
    """Write named instruments, one per (T, 128) roll, at ``bpm``; GM ``programs`` by name (0: piano)."""
    import pretty_midi

    midi = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    seconds_per_tick = 60.0 / bpm / ticks_per_quarter
    for name, roll in tracks.items():
        instrument = pretty_midi.Instrument(program=int((programs or {}).get(name, 0)), name=name)
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
GROUND_TRUTH = "Ground truth"  # the column / folder name of the reference accompaniment
INDEX_COLUMNS = ["context", "method", "split", "song", "start", "bars", "binarization", "run_dir",
                 "midi", "png", "audio", "seconds", "peak_dbfs", "rms_dbfs", "renderer"]


def plot_pianoroll(path: Path, melody: np.ndarray, bridge: np.ndarray, piano: np.ndarray, title: str,
                   ticks_per_quarter: int) -> None:
    """One pianoroll (T, 128) each: melody red, bridge light blue, piano blue (the authors' colours)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(6 if len(melody) <= 512 else 12, 3))
    image = np.ones(melody.shape + (3,))
    image[bridge] = BRIDGE_RGB
    image[piano] = PIANO_RGB
    image[melody] = MELODY_RGB
    ax.imshow(image.transpose(1, 0, 2), origin="lower", aspect="auto", interpolation="nearest")
    active = np.nonzero(melody.any(0) | bridge.any(0) | piano.any(0))[0]
    if active.size:
        ax.set_ylim(max(active.min() - 2, 0), min(active.max() + 2, 127))
    ax.set_xlabel(f"tick ({ticks_per_quarter} per quarter)")
    ax.set_ylabel("MIDI pitch")
    ax.set_title(title, fontsize=9)
    ax.legend(handles=[Patch(color=MELODY_RGB, label="melody"), Patch(color=BRIDGE_RGB, label="bridge"),
                       Patch(color=PIANO_RGB, label="piano")], loc="upper right", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_sample(stem: Path, melody: np.ndarray, bridge: np.ndarray, piano: np.ndarray, ticks_per_quarter: int,
                 bpm: float, title: str, audio_cfg) -> dict:
    """``<stem>.mid``, ``<stem>.png`` and ``<stem>.ogg`` of one window; returns the index fields."""
    from stripes.audio import load_audio_config, render_to_file

    audio_cfg = load_audio_config(audio_cfg)
    tracks = {"MELODY": melody, "BRIDGE": bridge, "PIANO": piano}
    programs = {name: int(audio_cfg.instruments.get(name, audio_cfg.instruments.default).program)
                for name in tracks}
    write_midi(stem.with_suffix(".mid"), tracks, ticks_per_quarter, bpm, programs)
    plot_pianoroll(stem.with_suffix(".png"), melody, bridge, piano, title, ticks_per_quarter)
    rendered = render_to_file(stem.with_suffix("." + str(audio_cfg.format)), tracks, ticks_per_quarter, bpm,
                              audio_cfg)
    return {"midi": str(stem.with_suffix(".mid")), "png": str(stem.with_suffix(".png")),
            "audio": str(rendered.path), "seconds": rendered.seconds, "peak_dbfs": rendered.peak_dbfs,
            "rms_dbfs": rendered.rms_dbfs, "renderer": rendered.renderer}


def run_data_root(run_dir: str | Path):
    """The data root a run was trained on (its config's ``data.root``, resolved), or None."""
    try:
        from stripes.data.paths import resolve_data_root
        from stripes.runs import load_config

        return resolve_data_root(load_config(run_dir).data.get("root"))
    except Exception:  # no config or no data here: samples fall back to the default tempo
        return None


def kept_windows(run_dir: str | Path, split: str, max_windows: int):
    """The first ``max_windows`` windows kept in ``<run_dir>/eval/samples.npz`` for ``split``.

    Yields dicts with song, start, ticks_per_quarter, melody, bridge, truth (bool (n, 128)) and
    probs (float32 (n, 128) piano probabilities); nothing when the file or split is absent."""
    npz_path = Path(run_dir) / "eval" / "samples.npz"
    if not npz_path.exists():
        return
    data = np.load(npz_path)
    if f"{split}_song" not in data:
        return
    k = int(data["ticks_per_quarter"])
    for i in range(min(max_windows, len(data[f"{split}_song"]))):
        song, start, n = (int(data[f"{split}_{key}"][i]) for key in ("song", "start", "length"))
        inputs = data[f"{split}_input"][i, :n]
        yield {"song": song, "start": start, "ticks_per_quarter": k, "melody": inputs[:, :128].astype(bool),
               "bridge": inputs[:, 128:256].astype(bool),
               "truth": data[f"{split}_target_piano"][i, :n].astype(bool),
               "probs": data[f"{split}_piano_probs"][i, :n].astype(np.float32)}


def window_stem(split: str, song: int, start: int) -> str:
    """File stem of one window, the same for every run: ``<split>-song<NNN>-t<start tick>``."""
    return f"{split}-song{song:03d}-t{start}"


def write_run_samples(run_dir: str | Path, out_dir: str | Path, binarization: str, thr: float,
                      merge_gap_sixteenths: float, title: str, data_root=None,
                      windows: dict[str, int] | None = None, audio_cfg=None,
                      truth_dir: str | Path | None = None) -> list[dict]:
    """MIDI, pianoroll and audio of one run's kept windows; returns one index row per file set.

    ``windows`` maps split -> how many kept windows to write (default ``{"test16": 2}``). With
    ``truth_dir`` the ground truth of each window is written there too (once: existing files from
    this call's caller are its business)."""
    rows = []
    for split, count in (windows or {"test16": 2}).items():
        for w in kept_windows(run_dir, split, int(count)):
            k = w["ticks_per_quarter"]
            max_gap = int(round(merge_gap_sixteenths * k / 4))
            prediction = binarize(w["probs"], binarization, thr=thr, max_gap=max_gap)
            bpm = song_tempo(data_root, w["song"])
            stem = window_stem(split, w["song"], w["start"])
            common = {"split": split, "song": w["song"], "start": w["start"], "bars": len(w["melody"]) // (4 * k),
                      "run_dir": str(run_dir)}
            where = f"song {w['song']:03d}, tick {w['start']}, {split}"
            rows.append({**common, "binarization": binarization,
                         **write_sample(Path(out_dir) / stem, w["melody"], w["bridge"], prediction, k, bpm,
                                        f"{title} – {where} ({binarization})", audio_cfg)})
            if truth_dir is not None:
                rows.append({**common, "binarization": "", "method": GROUND_TRUTH,
                             **write_sample(Path(truth_dir) / stem, w["melody"], w["bridge"], w["truth"], k,
                                            bpm, f"{GROUND_TRUTH} – {where}", audio_cfg)})
    return rows


def _sample_job(job: dict) -> list[dict]:
    rows = write_run_samples(**job["kwargs"])
    return [{"context": job["context"], "method": job["method"], **row} for row in rows]


def write_samples(store: pd.DataFrame, selection: pd.DataFrame, out_dir: str | Path, thr: float = 0.5,
                  merge_gap_sixteenths: float = 1, data_root=None, windows: dict[str, int] | None = None,
                  audio_cfg=None, workers: int = 1) -> pd.DataFrame:
    """Samples for every selected (method, context): the lowest-seed run of the chosen lr.

    Writes ``<out_dir>/<context>/<method>/<stem>.{mid,png,ogg}``, the ground truth once per context
    under ``<out_dir>/<context>/Ground_truth/``, and ``<out_dir>/index.csv`` (one row per window and
    column of the demo grid, :data:`INDEX_COLUMNS`); returns that index. ``workers`` > 1 renders in
    that many processes."""
    jobs, truth_done = [], set()
    if not store.empty and not selection.empty:
        for _, choice in selection.iterrows():
            runs = store[(store["method"] == choice["method"])
                         & (store["context_label"] == choice["context_label"])
                         & (store["lr"] == choice["lr"])][["seed", "run_dir"]].drop_duplicates()
            if runs.empty:
                continue
            run_dir = runs.sort_values("seed").iloc[0]["run_dir"]
            context = str(choice["context_label"])
            folder = Path(out_dir) / safe_name(context)
            truth_dir = None if context in truth_done else folder / safe_name(GROUND_TRUTH)
            truth_done.add(context)
            jobs.append({"context": context, "method": str(choice["method"]), "kwargs": dict(
                run_dir=run_dir, out_dir=folder / safe_name(choice["method"]),
                binarization=choice["binarization"], thr=thr, merge_gap_sixteenths=merge_gap_sixteenths,
                title=f"{choice['method']} / {context}",
                data_root=data_root if data_root is not None else run_data_root(run_dir),
                windows=dict(windows or {"test16": 2}), audio_cfg=audio_cfg, truth_dir=truth_dir)})
    rows = []
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="samples (midi, png, audio)", unit="model", mininterval=5)
    if workers > 1 and len(jobs) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for future in as_completed([pool.submit(_sample_job, job) for job in jobs]):
                rows += future.result()
                bar.update()
    else:
        for job in jobs:
            rows += _sample_job(job)
            bar.update()
    bar.close()
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    index = index.sort_values(["context", "split", "song", "start", "method"], ignore_index=True)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    index.to_csv(Path(out_dir) / "index.csv", index=False)
    return index


def read_index(out_dir: str | Path) -> pd.DataFrame:
    """``<out_dir>/index.csv`` written by :func:`write_samples` (empty frame when absent)."""
    path = Path(out_dir) / "index.csv"
    if not path.exists():
        return pd.DataFrame(columns=INDEX_COLUMNS)
    return pd.read_csv(path, keep_default_na=False)


def sample_options(samples_cfg) -> dict:
    """Keyword arguments of :func:`write_samples` from a ``samples`` config block (conf/plots.yaml)."""
    return {"thr": samples_cfg.threshold, "merge_gap_sixteenths": samples_cfg.merge_gap_sixteenths,
            "data_root": samples_cfg.get("data_root"), "windows": dict(samples_cfg.windows),
            "audio_cfg": samples_cfg.get("audio"), "workers": int(samples_cfg.get("workers", 1))}


def run(cfg) -> pd.DataFrame:
    """Samples only (``conf/plots.yaml`` ``samples`` and ``selection``), from the results store."""
    from stripes.eval import results as store_lib

    store = store_lib.load_store(cfg.results_dir)
    selection = store_lib.select_models(store, cfg.selection.metric, cfg.selection.split)
    index = write_samples(store, selection, cfg.samples.out_dir, **sample_options(cfg.samples))
    print(f"[samples] wrote {len(index)} windows (midi, png, audio) under {cfg.samples.out_dir}", flush=True)
    return index


if __name__ == "__main__":
    import os

    import hydra

    @hydra.main(version_base="1.3", config_path="../../../conf", config_name="plots")
    def _main(cfg) -> None:
        os.chdir(hydra.utils.get_original_cwd())
        run(cfg)

    _main()
