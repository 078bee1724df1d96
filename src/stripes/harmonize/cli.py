"""Harmonize your own melody with a trained run.

    python -m stripes.harmonize input.mid --checkpoint outputs/runs/table3/ropepool-bin-lr0.001-s0-<hash8> \\
        --out harmonized.mid [--chords chords.txt] [--key D:maj] [--melody-track NAME] [--bridge-track NAME]

What happens, step by step:

1. **Reading.** The project's one MIDI reader (`stripes.data.midi`, the one training uses):
   tempo and time-signature events from any track, any resolution, lenient on an out-of-range
   data byte or a malformed meta event, one clear error for a broken file.
2. **Parts.** Tracks are split by channel; the melody is chosen among them and the choice is
   printed with its reasons (`stripes.harmonize.parts`). A BRIDGE part (POP909's second input)
   is used when present (``--bridge-track``), else the bridge input is silent.
3. **Bars and grid.** Bars from tick 0 through the file's time signatures; the model's grid
   (``data.ticks_per_quarter`` per quarter note) starts at the bar line of the first note. A meter
   other than 4/4 is harmonized bar by bar, with a note that the model learnt 4/4 only.
4. **Structure.** The chords and key the structure contexts need: ``--chords FILE`` (the
   user's chords), else estimated (`stripes.harmony`: Krumhansl–Kessler key, ``--key`` wins;
   Viterbi over the chord vocabulary ``chord_db.npz`` with a key prior and a change penalty, on the
   bars' harmonic positions).
5. **Model.** The run's best checkpoint predicts the whole piece at once (linear attention has no
   length limit). Piano logits → sigmoid → threshold (0.5, ``--threshold``), gaps of up to one
   sixteenth note merged.
6. **Output** (`stripes.harmonize.output`): the MIDI file (input tempo map, meter and melody
   unchanged to the tick, chord markers, a PIANO track), ``<out stem>.chords.csv`` and the
   pianoroll PNG with bar lines and chord names. Nothing is written when anything fails.
   Then the audio (`stripes.audio`, at the file's first tempo): ``<out stem>.ogg`` (melody on a
   flute, piano on a piano) and ``<out stem>.melody.ogg`` (the input alone).

Bad input (missing, empty, unreadable, cut-short, drums-only files, an unknown part name, a
bad chord file): one message naming the file and the problem, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

import stripes
from stripes.audio import render_to_file
from stripes.data.chords import ChordParseError, key_name, parse_key
from stripes.data.contexts import positions_for
from stripes.data.meter import bars_of
from stripes.data.midi import MidiReadError, ParsedMidi, load_midi_file, pianoroll, timing_of, to_grid
from stripes.eval.binarize import threshold_merge
from stripes.eval.samples import roll_to_notes
from stripes.harmonize.output import build_midi, chords_csv, midi_bytes, page_paths, plot_pages, write_all
from stripes.harmonize.parts import choose_parts, split_parts
from stripes.harmonize.structure import estimate_harmony, grid_origin, read_chord_file
from stripes.harmony import triad_vocabulary
from stripes.pe.base import seed_stochastic_pes
from stripes.runs import load_run, read_run_info

STRUCTURE_NEEDS_CHORD_DB = ("rep", "rep_causal", "key")


class HarmonizeError(RuntimeError):
    """A problem with the user's input that we can explain in one message."""


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


def read_input(path: Path):
    """(mido.MidiFile, its tempo map and meter as a note-less ParsedMidi, warning lines), or
    HarmonizeError naming the file."""
    try:
        mid, problems = load_midi_file(path)
    except MidiReadError as err:
        raise HarmonizeError(str(err)) from None
    if mid.type == 2:
        raise HarmonizeError(f"{path}: MIDI type 2 (asynchronous tracks) is not supported")
    return mid, timing_of(mid), [f"warning: {p}" for p in problems]


def chord_spans(ticks: list[int], names: list[str], origin: int, end: int) -> list[tuple[int, str]]:
    """(start tick, chord name) of the chords sounding in [origin, end): a chord that starts
    before `origin` is shown from there, "N" until the first chord."""
    spans: dict[int, str] = {origin: "N"}
    for tick, name in zip(ticks, names):
        if tick < end:
            spans[max(int(tick), origin)] = name
    return sorted(spans.items())


def chord_rows(spans: list[tuple[int, str]], end: int, bars, timing: ParsedMidi, key_text: str) -> list[dict]:
    """The CSV rows of `chord_spans` (start_seconds, end_seconds, bar, beat, chord, key)."""
    rows = []
    for i, (tick, name) in enumerate(spans):
        stop = spans[i + 1][0] if i + 1 < len(spans) else end
        bar, beat = bars.locate(tick)
        rows.append({"start_seconds": float(timing.ticks_to_seconds(tick)),
                     "end_seconds": float(timing.ticks_to_seconds(stop)),
                     "bar": int(bar), "beat": float(beat), "chord": name, "key": key_text})
    return rows


def predict_piano(model, melody: np.ndarray, bridge: np.ndarray, positions: np.ndarray, tpq: int,
                  threshold: float) -> np.ndarray:
    """Binary (T, 128) piano roll: the model on the (T, 128) melody and bridge rolls with the
    context's (T, P) positions; sigmoid, threshold, gaps up to a sixteenth note merged."""
    inputs = torch.from_numpy(np.concatenate([melody, bridge], axis=1)).float()[None]
    with torch.no_grad():
        logits = model(inputs, torch.from_numpy(np.asarray(positions, dtype=np.float32))[None])
    probs = torch.sigmoid(logits[0, :, 256:384].float()).numpy()
    return threshold_merge(probs, max_gap=max(tpq // 4, 1), thr=threshold)


def meter_note(bars) -> str | None:
    """A line for stdout when the piece is not entirely in 4/4."""
    runs = bars.meters()
    if all((num, den) == (4, 4) for _, _, num, den in runs):
        return None
    spans = ", ".join(f"{num}/{den} (bars {a}–{b})" if a != b else f"{num}/{den} (bar {a})"
                      for a, b, num, den in runs)
    return (f"note: the meter is {spans}; the model was trained on 4/4 songs (POP909), so the "
            f"accompaniment may sound less idiomatic; chords still change on the file's bar lines")


def harmonize(input_path: Path, run_dir: Path, out_path: Path, context: str | None = None,
              key: str | None = None, melody_track: str | None = None,
              bridge_track: str | None = None, data_root: str | None = None,
              png_path: Path | None = None, threshold: float = 0.5, chords_path: Path | None = None,
              say=print) -> dict:
    """Harmonize `input_path` with the run's best checkpoint; write MIDI, CSV and PNG; return a
    summary (paths, context, key, chords, piano note count). `say` receives the messages for the
    user. Raises HarmonizeError (one message naming the file and the problem)."""
    input_path, out_path = Path(input_path), Path(out_path)
    check_run(run_dir, context)
    try:
        model, cfg = load_run(run_dir)
    except (ValueError, KeyError, RuntimeError) as err:
        raise HarmonizeError(f"{run_dir}: checkpoint does not fit this version of the model "
                             f"({err})") from None
    seed_stochastic_pes(model, int(cfg.get("seed", 0) or 0))  # decision 12: same input, same output
    if str(cfg.get("profile_name", "")) == "smoke":
        say(f"warning: {run_dir} is a smoke run (a few training steps on a tiny model, for tests); "
            f"its accompaniment is not meant to sound good: use a cpu or paper run")
    context, tpq = str(cfg.context.name), int(cfg.data.ticks_per_quarter)

    mid, timing, problems = read_input(input_path)
    for line in problems:
        say(line)
    try:
        melody, bridge, messages = choose_parts(split_parts(mid), melody_track, bridge_track, input_path)
    except ValueError as err:
        raise HarmonizeError(str(err)) from None
    for line in messages:
        say(line)
    chosen = [melody] + ([bridge] if bridge else [])
    notes = np.concatenate([p.notes[:, 1:4] for p in chosen])
    end = int(notes[:, 2].max())
    if end <= int(notes[:, 1].min()):
        raise HarmonizeError(f"{input_path}: the melody's notes all have zero length")
    bars = bars_of(timing.time_signatures, timing.resolution, end)
    note = meter_note(bars)
    if note:
        say(note)
    origin = grid_origin(bars, int(notes[:, 1].min()))

    table = chord_table(context, data_root)
    try:
        given_key = parse_key(key) if key else None
    except ChordParseError as err:
        raise HarmonizeError(f"--key: {err}") from None
    if chords_path is not None:
        try:
            changes = read_chord_file(chords_path, bars)
        except ValueError as err:
            raise HarmonizeError(str(err)) from None
        _, (tonic, mode) = estimate_harmony(notes, bars, origin, end, tpq,
                                            (table[:, 0] - 1, table[:, 1:]), given_key)
        say(f"chords: from {chords_path} ({len(changes.tick)} chords)")
    else:
        changes, (tonic, mode) = estimate_harmony(notes, bars, origin, end, tpq,
                                                  (table[:, 0] - 1, table[:, 1:]), given_key)
    say(f"key: {key_name(tonic, mode)} ({'given' if key else 'estimated'})")

    parsed = ParsedMidi(timing.resolution, {f"P{i}": p.notes[:, 1:4] for i, p in enumerate(chosen)},
                        timing.tempo_ticks, timing.tempo_us, timing.time_signatures)
    roll = pianoroll(parsed, tuple(parsed.notes), tpq, input_path, origin_tick=origin)
    melody_roll = roll[:, :128]
    bridge_roll = roll[:, 128:256] if bridge else np.zeros_like(melody_roll)
    g0 = int(to_grid(origin, timing.resolution, tpq))
    midi_ticks = lambda g: np.rint((np.asarray(g) + g0) * timing.resolution / tpq).astype(np.int64)  # noqa: E731
    root, chroma = changes.per_tick(midi_ticks(np.arange(len(melody_roll))))
    positions = positions_for(context, root, chroma, tonic, mode, table)

    piano = predict_piano(model, melody_roll, bridge_roll, positions, tpq, threshold)
    piano_notes = [(p, int(midi_ticks(a)), int(midi_ticks(b))) for p, a, b in roll_to_notes(piano)]

    in_piece = chord_spans(changes.tick.tolist(), changes.names(), origin, end)
    key_text = key_name(tonic, mode)
    rows = chord_rows(in_piece, end, bars, timing, key_text)
    midi = build_midi(mid, chosen, piano_notes, [(t, n) for t, n in in_piece])
    grid_of = lambda t: int(to_grid(t, timing.resolution, tpq)) - g0  # noqa: E731
    visible = [(grid_of(s), i + 1) for i, s in enumerate(bars.start.tolist()) if s >= origin]
    pages = plot_pages(melody_roll | bridge_roll, piano, tpq, [t for t, _ in visible],
                       [n for _, n in visible], [(grid_of(t), n) for t, n in in_piece],
                       f"{input_path.name} · {run_dir.name} · key {key_text} · melody red, piano blue")
    png_path = Path(png_path) if png_path else out_path.with_suffix(".png")
    csv_path = out_path.with_name(f"{out_path.stem}.chords.csv")
    pngs = page_paths(png_path, len(pages))
    write_all({out_path: midi_bytes(midi), csv_path: chords_csv(rows).encode(),
               **dict(zip(pngs, pages))})
    bpm = 60e6 / float(timing.tempo_us[0])  # audio at the file's first tempo (stripes.audio)
    inputs = {"MELODY": melody_roll, "BRIDGE": bridge_roll}
    audio = render_to_file(out_path.with_suffix(".ogg"), {**inputs, "PIANO": piano}, tpq, bpm)
    melody_audio = render_to_file(out_path.with_name(f"{out_path.stem}.melody.ogg"), inputs, tpq, bpm)
    return {"out": str(out_path), "png": str(png_path), "pngs": [str(p) for p in pngs],
            "audio": str(audio.path), "melody_audio": str(melody_audio.path),
            "csv": str(csv_path), "context": context, "ticks": len(melody_roll),
            "key": (int(tonic), int(mode)), "chords": rows, "piano_notes": len(piano_notes),
            "melody": melody.name}


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
    parser.add_argument("--out", type=Path, required=True,
                        help="output MIDI path (also writes <stem>.chords.csv, <stem>.png, <stem>.ogg and the "
             "input alone as <stem>.melody.ogg)")
    parser.add_argument("--png", type=Path, default=None, help="pianoroll PNG (default: next to --out)")
    parser.add_argument("--chords", type=Path, default=None,
                        help="your chords: one per bar per line, or 'bar:beat chord' lines "
                             "(POP909 names, e.g. C:maj, A:min7, N)")
    parser.add_argument("--context", default=None, help="check that the run uses this context")
    parser.add_argument("--key", default=None, help="the melody's key, e.g. 'D:maj' (default: estimated)")
    parser.add_argument("--melody-track", default=None,
                        help="the melody part's name as printed (a drum part too)")
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
                            args.threshold, args.chords)
    except HarmonizeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {summary['out']} ({summary['piano_notes']} piano notes over {summary['ticks']} "
          f"ticks, context {summary['context']}), {summary['csv']}, "
          f"{', '.join(summary['pngs'])} and the audio {summary['audio']} (input alone: "
          f"{summary['melody_audio']})")
    return 0
