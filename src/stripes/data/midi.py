"""Reading MIDI files: notes per named track in MIDI ticks, the tempo map, binary pianorolls.

`read_midi(path)` parses a file once (with mido) into a `ParsedMidi` of plain arrays, which the
preprocessing caches so later configs skip MIDI parsing. `pianoroll(parsed, tracks,
ticks_per_quarter)` turns it into a binary (T, 128·len(tracks)) roll that starts at the earliest
note of any of the tracks [S §IV-A]; `midi_to_pianoroll(path, ...)` does both (used by harmonize).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np

TRACKS = ("MELODY", "BRIDGE", "PIANO")


class MidiReadError(ValueError):
    """A MIDI file that cannot be parsed or lacks the expected tracks."""


@dataclass
class ParsedMidi:
    resolution: int  # MIDI ticks per quarter
    notes: dict[str, np.ndarray]  # track name (upper case) -> (N, 3) int64: pitch, on, off ticks
    tempo_ticks: np.ndarray  # (C,) MIDI ticks of the tempo changes (first is 0)
    tempo_us: np.ndarray  # (C,) microseconds per quarter from that tick on

    def seconds_to_ticks(self, seconds) -> np.ndarray:
        """Seconds -> (fractional) MIDI ticks through the tempo map."""
        seconds = np.asarray(seconds, dtype=np.float64)
        ticks, us = self.tempo_ticks.astype(np.float64), self.tempo_us.astype(np.float64)
        sec_per_tick = us / 1e6 / self.resolution
        starts = np.concatenate([[0.0], np.cumsum(np.diff(ticks) * sec_per_tick[:-1])])
        i = np.clip(np.searchsorted(starts, seconds, side="right") - 1, 0, len(starts) - 1)
        return ticks[i] + (seconds - starts[i]) / sec_per_tick[i]

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"resolution": np.array(self.resolution), "tempo_ticks": self.tempo_ticks,
               "tempo_us": self.tempo_us, "track_names": np.array(list(self.notes))}
        out.update({f"notes_{name}": n for name, n in self.notes.items()})
        return out

    @classmethod
    def from_arrays(cls, arrays) -> "ParsedMidi":
        names = [str(n) for n in arrays["track_names"]]
        return cls(int(arrays["resolution"]), {n: arrays[f"notes_{n}"] for n in names},
                   np.asarray(arrays["tempo_ticks"]), np.asarray(arrays["tempo_us"]))


def read_midi(path: str | Path) -> ParsedMidi:
    """Parse a MIDI file into per-track note arrays (MIDI ticks) and its tempo map.

    Tracks are named by their ``track_name`` meta message (upper-cased); an unnamed track with
    notes is called ``TRACK<i>``. Note-on with velocity 0 counts as note-off; a note still held
    at the end of its track ends there. Raises MidiReadError naming the file and the problem."""
    path = Path(path)
    try:
        mid = mido.MidiFile(str(path))
    except Exception as err:  # mido raises OSError, EOFError, ValueError, KeyError...
        detail = str(err) or ("file ends too early" if isinstance(err, EOFError) else "no detail")
        raise MidiReadError(f"{path}: cannot parse MIDI ({type(err).__name__}: {detail})") from None
    if mid.type == 2:
        raise MidiReadError(f"{path}: MIDI type 2 (asynchronous tracks) is not supported")
    tempo = {}
    notes: dict[str, np.ndarray] = {}
    for i, track in enumerate(mid.tracks):
        name, now, held, rows = None, 0, {}, []
        for msg in track:
            now += msg.time
            if msg.type == "track_name" and name is None:
                name = msg.name.strip().upper()
            elif msg.type == "set_tempo":
                tempo[now] = msg.tempo
            elif msg.type == "note_on" and msg.velocity > 0:
                held.setdefault((msg.channel, msg.note), []).append(now)
            elif msg.type in ("note_off", "note_on"):
                starts = held.get((msg.channel, msg.note))
                if starts:
                    rows.append((msg.note, starts.pop(0), now))
        rows.extend((pitch, on, now) for (_, pitch), ons in held.items() for on in ons)
        if rows:
            key = name or f"TRACK{i}"
            arr = np.array(sorted(rows, key=lambda r: (r[1], r[0])), dtype=np.int64)
            notes[key] = np.concatenate([notes[key], arr]) if key in notes else arr
    if 0 not in tempo:
        tempo[0] = 500000  # MIDI default: 120 bpm
    ticks = np.array(sorted(tempo), dtype=np.int64)
    return ParsedMidi(mid.ticks_per_beat, notes, ticks, np.array([tempo[t] for t in ticks], np.int64))


def select_tracks(parsed: ParsedMidi, tracks=TRACKS, path: str | Path = "") -> list[np.ndarray]:
    """The note arrays of `tracks` (by name), or MidiReadError listing what the file has."""
    missing = [t for t in tracks if t not in parsed.notes]
    if missing:
        raise MidiReadError(
            f"{path}: needs tracks {list(tracks)}, has {sorted(parsed.notes)} (missing {missing})"
        )
    return [parsed.notes[t] for t in tracks]


def to_grid(ticks, resolution: int, ticks_per_quarter: int) -> np.ndarray:
    """MIDI ticks -> nearest tick of a grid with `ticks_per_quarter` ticks per quarter."""
    return np.rint(np.asarray(ticks, dtype=np.float64) * ticks_per_quarter / resolution).astype(
        np.int64
    )


def first_note_tick(parsed: ParsedMidi, tracks=TRACKS) -> int:
    """MIDI tick of the earliest note of the given tracks."""
    return int(min(n[:, 1].min() for n in select_tracks(parsed, tracks)))


def pianoroll(parsed: ParsedMidi, tracks=TRACKS, ticks_per_quarter: int = 16,
              path: str | Path = "") -> np.ndarray:
    """Binary (T, 128·len(tracks)) pianoroll, tracks side by side, starting at the first note.

    Onsets and offsets are rounded to the grid; a note shorter than one grid tick still covers
    one tick. T = the last rounded offset."""
    arrays = select_tracks(parsed, tracks, path)
    origin = int(to_grid(first_note_tick(parsed, tracks), parsed.resolution, ticks_per_quarter))
    spans = []
    for k, notes in enumerate(arrays):
        on = to_grid(notes[:, 1], parsed.resolution, ticks_per_quarter) - origin
        off = np.maximum(to_grid(notes[:, 2], parsed.resolution, ticks_per_quarter) - origin, on + 1)
        spans.append((notes[:, 0] + 128 * k, on, off))
    length = int(max(s[2].max() for s in spans))
    roll = np.zeros((length, 128 * len(arrays)), dtype=bool)
    for columns, on, off in spans:
        for c, a, b in zip(columns.tolist(), on.tolist(), off.tolist()):
            roll[a:b, c] = True
    return roll


def midi_to_pianoroll(path: str | Path, ticks_per_quarter: int = 16, tracks=TRACKS) -> np.ndarray:
    """MIDI file -> binary (T, 128·len(tracks)) pianoroll at `ticks_per_quarter` (see `pianoroll`).

    ``tracks=None`` merges every track with notes into one (T, 128) roll (e.g. a user's melody
    file whatever its track names); otherwise tracks are taken by name, e.g. ``("MELODY",)``."""
    parsed = read_midi(path)
    if tracks is None:
        if not parsed.notes:
            raise MidiReadError(f"{path}: no notes")
        parsed = ParsedMidi(parsed.resolution, {"ALL": np.concatenate(list(parsed.notes.values()))},
                            parsed.tempo_ticks, parsed.tempo_us)
        tracks = ("ALL",)
    return pianoroll(parsed, tracks, ticks_per_quarter, path)
