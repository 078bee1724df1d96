"""Harmonize your own melody with a trained run.

    python -m stripes.harmonize input.mid --checkpoint outputs/runs/table3/ropepool-bin-lr0.001-s0 \
        --out harmonized.mid [--context bin] [--key D:maj] [--melody-track NAME] [--bridge-track NAME]

What happens, step by step:

1. **Tracks.** Drum tracks are ignored. The melody is the track named by ``--melody-track``, else a
   track named MELODY, else the only pitched track, else the pitched track with the highest mean
   pitch (the melody is usually the top voice). The bridge (the second input track in POP909) is
   ``--bridge-track`` or a track named BRIDGE; without one it is left silent.
2. **Grid.** Notes are put on the run's grid (``data.ticks_per_quarter`` ticks per quarter note,
   through the file's tempo map), starting at the first note, as in training.
3. **Structure.** The chords and key that the structure contexts need are estimated from the
   melody and bridge (`stripes.harmony`): the key by Krumhansl–Kessler profiles (``--key`` wins),
   one chord per half-measure by cosine template matching against the chord vocabulary
   (`chord_db.npz` of the data root; for TIME/BIN contexts, 24 major/minor triads when no data
   root is available; REP/KEY need `chord_db.npz` because their token ids come from it).
4. **Model.** The run's best checkpoint predicts the whole piece at once: linear attention has no
   length limit. Piano logits → sigmoid → threshold (0.5, ``--threshold``), gaps of up to one
   sixteenth note merged.
5. **Output.** A MIDI file with the input melody (and bridge) unchanged and the generated PIANO
   track on the same tempo map, plus a pianoroll PNG (melody red, accompaniment blue).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

import stripes
from stripes.data.chords import parse_key
from stripes.data.contexts import positions_for
from stripes.data.midi import ParsedMidi, first_note_tick, pianoroll, to_grid
from stripes.eval.binarize import threshold_merge
from stripes.eval.samples import roll_to_notes
from stripes.harmony import estimate_chords, estimate_key, triad_vocabulary
from stripes.runs import load_run, read_run_info

STRUCTURE_NEEDS_CHORD_DB = ("rep", "key")


class HarmonizeError(RuntimeError):
    """A problem with the user's input that we can explain in one message."""


def load_midi(path: Path):
    import pretty_midi

    if not path.exists():
        raise HarmonizeError(f"{path}: no such file")
    try:
        return pretty_midi.PrettyMIDI(str(path))
    except Exception as err:  # pretty_midi/mido raise many types for broken files
        raise HarmonizeError(f"{path}: cannot read this MIDI file ({type(err).__name__}: {err})") from None


def choose_tracks(midi, path: Path, melody_name: str | None, bridge_name: str | None):
    """(melody instrument, bridge instrument or None) following the rules in the module docstring."""
    pitched = [inst for inst in midi.instruments if not inst.is_drum and inst.notes]
    if not pitched:
        what = "only drum tracks" if any(i.notes for i in midi.instruments) else "no notes"
        raise HarmonizeError(f"{path}: has {what}; a melody needs a pitched track with notes")

    def named(name):
        matches = [inst for inst in pitched if inst.name.strip().upper() == name.strip().upper()]
        return matches[0] if matches else None

    if melody_name:
        melody = named(melody_name)
        if melody is None:
            raise HarmonizeError(f"{path}: no pitched track named {melody_name!r}; "
                                 f"tracks: {[i.name for i in pitched]}")
    else:
        melody = named("MELODY") or max(pitched, key=lambda i: np.mean([n.pitch for n in i.notes]))
    bridge = named(bridge_name) if bridge_name else named("BRIDGE")
    if bridge_name and bridge is None:
        raise HarmonizeError(f"{path}: no pitched track named {bridge_name!r}")
    return melody, (bridge if bridge is not melody else None)


def tracks_to_rolls(midi, instruments, ticks_per_quarter: int) -> tuple[list[np.ndarray], int]:
    """Binary (T, 128) rolls of the instruments on the common grid, and the grid origin (grid ticks).

    The notes go through the same `stripes.data.midi.pianoroll` as training data: the grid starts
    at the earliest note of the given instruments, onsets and offsets rounded to it."""
    notes = {
        f"TRACK{i}": np.array([[n.pitch, midi.time_to_tick(n.start), midi.time_to_tick(n.end)]
                               for n in inst.notes], dtype=np.int64)
        for i, inst in enumerate(instruments)
    }
    names = tuple(notes)
    parsed = ParsedMidi(midi.resolution, notes, np.zeros(1, np.int64), np.full(1, 500000, np.int64))
    roll = pianoroll(parsed, names, ticks_per_quarter)
    origin = int(to_grid(first_note_tick(parsed, names), midi.resolution, ticks_per_quarter))
    return [roll[:, 128 * i:128 * (i + 1)] for i in range(len(names))], origin


def chord_table(context: str, data_root: str | None) -> np.ndarray:
    """The (K, 13) chord table (root + 1, chroma): chord_db.npz of the data root, or 24 triads."""
    from stripes.data.annotations import read_chord_db
    from stripes.data.paths import DataRootError, resolve_data_root

    try:
        root = resolve_data_root(data_root)
        return read_chord_db(root / "pop909_alignment" / "chord_db.npz")
    except DataRootError as err:
        if context in STRUCTURE_NEEDS_CHORD_DB:
            raise HarmonizeError(
                f"context {context!r} numbers chords with pop909_alignment/chord_db.npz, which was "
                f"not found (pass --data-root):\n{err}") from None
    roots, chroma = triad_vocabulary()
    no_chord = np.zeros((1, 13))
    return np.concatenate([no_chord, np.column_stack([roots + 1, chroma])]).astype(np.int64)


def check_run(run_dir: Path, context: str | None) -> None:
    """Clear errors for a missing run, another version's checkpoint, or the wrong context."""
    if not (run_dir / "config.yaml").exists():
        raise HarmonizeError(f"{run_dir}: not a stripes run directory (no config.yaml)")
    info = read_run_info(run_dir)
    trained = info.get("packages", {}).get("stripes")
    if trained and trained.split(".")[:2] != stripes.__version__.split(".")[:2]:
        raise HarmonizeError(f"{run_dir}: trained with stripes {trained}, this is stripes "
                             f"{stripes.__version__}; retrain or install the matching version")
    if context and info.get("context") and info["context"] != context:
        raise HarmonizeError(f"{run_dir}: the model was trained with context "
                             f"{info['context']!r}, not {context!r}")


def harmonize(input_path: Path, run_dir: Path, out_path: Path, context: str | None = None,
              key: str | None = None, melody_track: str | None = None,
              bridge_track: str | None = None, data_root: str | None = None,
              png_path: Path | None = None, threshold: float = 0.5) -> dict:
    """Harmonize `input_path` with the run's best checkpoint; write MIDI (+ PNG); return a summary."""
    import pretty_midi

    check_run(run_dir, context)
    try:
        model, cfg = load_run(run_dir)
    except (ValueError, KeyError, RuntimeError) as err:
        raise HarmonizeError(f"{run_dir}: checkpoint does not fit this version of the model "
                             f"({err})") from None
    context = str(cfg.context.name)
    tpq = int(cfg.data.ticks_per_quarter)

    midi = load_midi(input_path)
    melody_inst, bridge_inst = choose_tracks(midi, input_path, melody_track, bridge_track)
    instruments = [melody_inst] + ([bridge_inst] if bridge_inst else [])
    rolls, origin = tracks_to_rolls(midi, instruments, tpq)
    melody = rolls[0]
    bridge = rolls[1] if bridge_inst else np.zeros_like(melody)
    tonic, mode = parse_key(key) if key else estimate_key(melody | bridge)
    mode = {"maj": 0, "min": 1}.get(mode, mode)

    table = chord_table(context, data_root)
    chord_index = estimate_chords(melody | bridge, segment_ticks=2 * tpq, templates=table[:, 1:])
    has_chord = chord_index >= 0
    root = np.where(has_chord, table[chord_index, 0] - 1, -1)
    chroma = np.where(has_chord[:, None], table[chord_index, 1:], 0)
    positions = positions_for(context, root, chroma, tonic, mode, table)

    inputs = torch.from_numpy(np.concatenate([melody, bridge], axis=1)).float()[None]
    with torch.no_grad():
        logits = model(inputs, torch.from_numpy(np.asarray(positions, dtype=np.float32))[None])
    probs = torch.sigmoid(logits[0, :, 256:384].float()).numpy()
    piano = threshold_merge(probs, max_gap=max(tpq // 4, 1), thr=threshold)

    out = pretty_midi.PrettyMIDI(str(input_path))  # same tempo map, melody/bridge untouched
    out.instruments = [inst for inst in out.instruments if inst.name in {i.name for i in instruments}
                       and not inst.is_drum]
    generated = pretty_midi.Instrument(program=0, name="PIANO")
    midi_ticks = midi.resolution / tpq
    for pitch, start, end in roll_to_notes(piano):
        generated.notes.append(pretty_midi.Note(
            velocity=80, pitch=pitch,
            start=out.tick_to_time(int(round((start + origin) * midi_ticks))),
            end=out.tick_to_time(int(round((end + origin) * midi_ticks)))))
    out.instruments.append(generated)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out.write(str(out_path))
    png_path = png_path or out_path.with_suffix(".png")
    plot_harmonization(png_path, melody | bridge, piano, tpq, f"{input_path.name} · {run_dir.name}")
    return {"out": str(out_path), "png": str(png_path), "context": context, "ticks": len(melody),
            "key": (int(tonic), int(mode)), "piano_notes": len(generated.notes)}


def plot_harmonization(path: Path, melody: np.ndarray, piano: np.ndarray, tpq: int, title: str) -> None:
    """One pianoroll panel: melody (and bridge) red, generated accompaniment blue."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = np.ones(melody.shape + (3,))
    image[piano] = (0.15, 0.35, 0.85)
    image[melody] = (0.85, 0.1, 0.1)
    fig, ax = plt.subplots(figsize=(12, 4))
    ax.imshow(image.transpose(1, 0, 2), origin="lower", aspect="auto", interpolation="nearest")
    active = np.nonzero(melody.any(0) | piano.any(0))[0]
    if active.size:
        ax.set_ylim(max(active.min() - 2, 0), min(active.max() + 2, 127))
    ax.set_xlabel(f"tick ({tpq} per quarter)")
    ax.set_ylabel("MIDI pitch")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def default_checkpoint() -> Path | None:
    """The run `make demo` uses: the newest finished RoPEPool/BIN run, else any finished run."""
    from stripes.runs import find_runs

    runs = find_runs("outputs/runs")
    preferred = [r for r in runs if read_run_info(r).get("pe") == "ropepool"
                 and read_run_info(r).get("context") == "bin"]
    pool = preferred or runs
    return max(pool, key=lambda r: (r / "run_info.json").stat().st_mtime) if pool else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stripes.harmonize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, help="melody MIDI file")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="run directory (default: the newest finished ropepool/bin run)")
    parser.add_argument("--out", type=Path, required=True, help="output MIDI path")
    parser.add_argument("--png", type=Path, default=None, help="pianoroll PNG (default: next to --out)")
    parser.add_argument("--context", default=None, help="check that the run uses this context")
    parser.add_argument("--key", default=None, help="the melody's key, e.g. 'D:maj' (default: estimated)")
    parser.add_argument("--melody-track", default=None)
    parser.add_argument("--bridge-track", default=None)
    parser.add_argument("--data-root", default=None, help="POP909 data root (for chord_db.npz)")
    parser.add_argument("--threshold", type=float, default=0.5, help="note-on probability threshold")
    args = parser.parse_args(argv)
    run_dir = args.checkpoint or default_checkpoint()
    if run_dir is None:
        print("error: no --checkpoint given and no finished run under outputs/runs "
              "(run `make reproduce` or `make train` first)", file=sys.stderr)
        return 2
    try:
        summary = harmonize(args.input, Path(run_dir), args.out, args.context, args.key,
                            args.melody_track, args.bridge_track, args.data_root, args.png,
                            args.threshold)
    except HarmonizeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {summary['out']} ({summary['piano_notes']} piano notes over {summary['ticks']} "
          f"ticks, context {summary['context']}) and {summary['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
