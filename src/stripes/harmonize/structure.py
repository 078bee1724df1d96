"""Bars, the model's grid, and the chords and key a harmonization uses.

The grid (the run's ``data.ticks_per_quarter``) starts at the bar line at or before the first
melody note, bars counted from MIDI tick 0 through the file's time signatures
(`stripes.data.meter`), so a pickup keeps its place in its bar. The harmony is a list of
*chord changes* (MIDI tick, root, chroma): estimated by `stripes.harmony` on the file's harmonic
positions, or read from a ``--chords`` file (`read_chord_file`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stripes.data.chords import ChordParseError, chord_name, parse_chord_name
from stripes.data.meter import Bars
from stripes.data.midi import to_grid
from stripes.harmony import ONSET_ACCENT, estimate_chords, key_from_histogram, segment_chroma

_POSITION = re.compile(r"^(\d+)(?::(\d+(?:\.\d+)?))?$")


@dataclass
class ChordChanges:
    """A chord sequence: chord k holds from tick[k] to tick[k + 1] (the last to the piece's end)."""

    tick: np.ndarray  # (C,) int64 MIDI ticks, increasing
    root: np.ndarray  # (C,) int64, -1 = no chord
    chroma: np.ndarray  # (C, 12) uint8

    def names(self) -> list[str]:
        return [chord_name(int(r), c) for r, c in zip(self.root, self.chroma)]

    def merged(self) -> "ChordChanges":
        """The same sequence without repeated chords (a change to the same chord is dropped)."""
        keep = np.ones(len(self.tick), bool)
        keep[1:] = (self.root[1:] != self.root[:-1]) | (self.chroma[1:] != self.chroma[:-1]).any(1)
        return ChordChanges(self.tick[keep], self.root[keep], self.chroma[keep])

    def per_tick(self, grid_ticks_midi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(root (T,), chroma (T, 12)) of the chord sounding at each given MIDI tick."""
        i = np.searchsorted(self.tick, grid_ticks_midi, side="right") - 1
        before = i < 0
        i = np.maximum(i, 0)
        return (np.where(before, -1, self.root[i]),
                np.where(before[:, None], 0, self.chroma[i]).astype(np.uint8))


def grid_origin(bars: Bars, first_tick: int) -> int:
    """MIDI tick of the bar line at or before `first_tick` (the grid's tick 0)."""
    return int(bars.start[np.searchsorted(bars.start, first_tick, side="right") - 1])


def onset_accents(bars: Bars, origin: int, resolution: int, tpq: int, length: int) -> np.ndarray:
    """(length,) onset accent per grid tick: ONSET_ACCENT at bar lines and other main beats."""
    accents = np.zeros(length)
    for start, size, beats in zip(bars.start.tolist(), bars.length.tolist(), bars.main_beats().tolist()):
        for k in range(beats):
            g = int(to_grid(start + k * size / beats, resolution, tpq) - to_grid(origin, resolution, tpq))
            if 0 <= g < length:
                accents[g] = max(accents[g], ONSET_ACCENT["bar" if k == 0 else "main beat"])
    return accents


def estimate_harmony(notes: np.ndarray, bars: Bars, origin: int, end: int, tpq: int,
                     vocabulary: tuple[np.ndarray, np.ndarray], key: tuple[int, int] | None
                     ) -> tuple[ChordChanges, tuple[int, int]]:
    """Chords on the harmonic positions in [origin, end) and the key (tonic, mode 0/1).

    notes: (N, 3) pitch, on, off in MIDI ticks; vocabulary: (roots (K,), chroma (K, 12));
    key: given (tonic, mode) or None to estimate it (`stripes.harmony`)."""
    res = bars.resolution
    positions, _ = bars.harmonic_positions()
    ticks = positions[(positions >= origin) & (positions < end)]
    if not len(ticks) or ticks[0] != origin:
        ticks = np.concatenate([[origin], ticks])
    g0 = to_grid(origin, res, tpq)
    bounds = np.append(to_grid(ticks, res, tpq) - g0, max(to_grid(end, res, tpq) - g0, 1))
    on = to_grid(notes[:, 1], res, tpq) - g0
    grid_notes = np.column_stack([notes[:, 0], on, np.maximum(to_grid(notes[:, 2], res, tpq) - g0, on + 1)])
    weights = segment_chroma(grid_notes, bounds, onset_accents(bars, origin, res, tpq, int(bounds[-1])), tpq)
    if key is None:
        tonic, mode = key_from_histogram(weights.sum(0))
        key = (tonic, int(mode == "min"))
    roots, chroma = vocabulary
    index = estimate_chords(weights, roots, chroma, key[0], key[1])
    changes = ChordChanges(ticks.astype(np.int64), np.asarray(roots)[index].astype(np.int64),
                           np.asarray(chroma)[index].astype(np.uint8))
    return changes.merged(), key


def read_chord_file(path: Path, bars: Bars) -> ChordChanges:
    """Chords a user gives: one chord per line (line k = bar k, 1-based), or ``bar:beat chord``
    (``bar chord`` = beat 1) lines; not both kinds in one file. Blank lines and ``#`` comments are
    skipped. Bars and beats as in the output CSV: bar 1 starts at MIDI tick 0, beats in the
    time signature's unit. Chord names as POP909 (`parse_chord_name`). A chord holds until the
    next one; before the first there is no chord. Raises ValueError naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read the chord file ({err})") from None
    rows, kinds = [], set()
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        fields = text.split()
        try:
            if len(fields) == 1:
                kinds.add("bars")
                bar, beat, chord = sum(k == "bars" for k, *_ in rows) + 1, 1.0, fields[0]
            elif len(fields) == 2 and _POSITION.match(fields[0]):
                kinds.add("positions")
                m = _POSITION.match(fields[0])
                bar, beat, chord = int(m[1]), float(m[2] or 1), fields[1]
            else:
                raise ChordParseError(f"expected 'CHORD' or 'BAR:BEAT CHORD', got {text!r}")
            if len(kinds) > 1:
                raise ChordParseError("mixes one-chord-per-bar lines with 'bar:beat chord' lines")
            if not 1 <= bar <= len(bars.start):
                raise ChordParseError(f"bar {bar} is outside the piece (bars 1–{len(bars.start)})")
            b = bar - 1
            tick = bars.start[b] + (beat - 1) * bars.beat_ticks()[b]
            if not bars.start[b] <= tick < bars.start[b] + bars.length[b]:
                raise ChordParseError(f"beat {beat:g} is outside bar {bar} "
                                      f"({bars.numerator[b]}/{bars.denominator[b]})")
            root, chroma = parse_chord_name(chord)
        except ChordParseError as err:
            raise ValueError(f"{path}: line {number}: {err}") from None
        rows.append(("bars" if len(fields) == 1 else "positions", int(round(tick)), root, chroma))
    if not rows:
        raise ValueError(f"{path}: no chords in the file")
    rows.sort(key=lambda r: r[1])
    ticks = [r[1] for r in rows]
    if len(set(ticks)) < len(ticks):
        raise ValueError(f"{path}: two chords at the same bar and beat")
    return ChordChanges(np.array(ticks, np.int64), np.array([r[2] for r in rows], np.int64),
                        np.array([r[3] for r in rows], np.uint8)).merged()
