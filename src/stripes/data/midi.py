"""Reading MIDI files: the project's one MIDI reader (training and harmonize).

`load_midi_file(path)` reads a Standard MIDI File into a `mido.MidiFile` with mido's message
decoders, but decides itself what is broken and what is only sloppy:

* **lenient** where players are lenient: a data byte above 127 is clipped to 127, a meta event
  whose payload mido cannot decode (a malformed key signature, a short time signature, ...) is
  kept as an unknown meta event, an unknown chunk between tracks is skipped, bytes after the
  declared tracks are ignored; each leniency is reported in the returned warnings;
* **precise** where the file really is broken: missing file, empty file, not a MIDI file, a file
  that ends early (inside the header, a track's header or a track's events: "ends early"),
  SMPTE time division, an undefined status byte. Each raises `MidiReadError` naming the file.

`read_midi(path)` parses a file once into a `ParsedMidi` of plain arrays (notes per named track in
MIDI ticks, the tempo map and the time signatures from *any* track), which the preprocessing
caches so later configs skip MIDI parsing. `track_notes(track)` pairs note-ons and note-offs
(first in, first out per channel and pitch, so overlapping same-pitch notes keep their lengths; a
zero-length note stays zero-length; a note still held at the end of its track ends there).
`pianoroll(parsed, tracks, ticks_per_quarter)` turns notes into a binary (T, 128·len(tracks))
roll that starts at the earliest note of the tracks [S §IV-A] or at a given origin tick;
`midi_to_pianoroll(path, ...)` does both.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import mido
import numpy as np
from mido.messages.specs import SPEC_BY_STATUS
from mido.midifiles.meta import UnknownMetaMessage, build_meta_message

TRACKS = ("MELODY", "BRIDGE", "PIANO")
DEFAULT_TEMPO_US = 500000  # MIDI default: 120 bpm
DEFAULT_TIME_SIGNATURE = (0, 4, 4)  # MIDI default: 4/4 from tick 0


class MidiReadError(ValueError):
    """A MIDI file that cannot be parsed or lacks the expected tracks."""


class _EndsEarly(Exception):
    """Internal: the byte stream ended inside a structure (turned into a MidiReadError)."""


class _Bytes:
    """A byte cursor over the file's content that raises _EndsEarly at the end."""

    def __init__(self, data: bytes, start: int = 0, end: int | None = None):
        self.data, self.pos = data, start
        self.end = len(data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise _EndsEarly
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise _EndsEarly
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def varlen(self) -> int:
        value = 0
        for _ in range(4):
            b = self.byte()
            value = (value << 7) | (b & 0x7F)
            if b < 0x80:
                return value
        raise ValueError("variable-length quantity longer than 4 bytes")


def _read_track(cursor: _Bytes, where: str, problems: list[str]) -> mido.MidiTrack:
    """Events of one MTrk chunk (cursor spans exactly the chunk's declared bytes)."""
    track, status, now = mido.MidiTrack(), None, 0
    while cursor.pos < cursor.end:
        delta = cursor.varlen()
        now += delta
        first = cursor.byte()
        if first == 0xFF:  # meta event (does not change running status)
            kind, data = cursor.byte(), list(cursor.take(cursor.varlen()))
            try:
                msg = build_meta_message(kind, data, delta)
            except Exception as err:  # mido's decoders raise KeySignatureError, IndexError, ...
                problems.append(f"{where}: malformed meta event 0x{kind:02X} at tick {now} kept as "
                                f"unknown ({type(err).__name__}: {err})")
                msg = UnknownMetaMessage(kind, data, time=delta)
            track.append(msg)
            continue
        if first in (0xF0, 0xF7):  # sysex: payload kept, data bytes clipped like channel data
            data = [min(b, 127) for b in cursor.take(cursor.varlen()) if b not in (0xF0, 0xF7)]
            track.append(mido.Message("sysex", data=data, time=delta))
            continue
        if first < 0x80:
            if status is None:
                raise ValueError(f"data byte 0x{first:02X} at tick {now} without a status byte")
            peek = [first]
        else:
            status, peek = first, []
        if status not in SPEC_BY_STATUS or status >= 0xF0:
            raise ValueError(f"undefined status byte 0x{status:02X} at tick {now}")
        data = peek + list(cursor.take(SPEC_BY_STATUS[status]["length"] - 1 - len(peek)))
        if any(b > 127 for b in data):
            problems.append(f"{where}: data byte {max(data)} (MIDI allows 0–127) at tick {now} "
                            f"clipped to 127")
            data = [min(b, 127) for b in data]
        track.append(mido.Message.from_bytes([status] + data, time=delta))
    return track


def load_midi_file(path: str | Path) -> tuple[mido.MidiFile, list[str]]:
    """Read a Standard MIDI File: (mido.MidiFile, warnings about what was read leniently).

    Lenient and precise as in the module docstring. Raises MidiReadError("<path>: <problem>")."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MidiReadError(f"{path}: no such file") from None
    except OSError as err:
        raise MidiReadError(f"{path}: cannot open ({err.strerror or err})") from None
    if not data:
        raise MidiReadError(f"{path}: the file is empty (0 bytes)")
    if data[:4] != b"MThd":
        raise MidiReadError(f"{path}: not a MIDI file (starts with {data[:4]!r}, not b'MThd')")
    if len(data) < 14:
        raise MidiReadError(f"{path}: the file ends early, inside its 14-byte header "
                            f"({len(data)} bytes); it was probably cut off")
    header_size = struct.unpack(">L", data[4:8])[0]
    fmt, n_tracks, division = struct.unpack(">HHh", data[8:14])
    if division <= 0:
        raise MidiReadError(f"{path}: SMPTE time division ({division}) is not supported; "
                            f"re-export the file with ticks per quarter note")
    if fmt > 2:
        raise MidiReadError(f"{path}: unknown MIDI format {fmt} (expected 0, 1 or 2)")
    mid = mido.MidiFile(type=fmt, ticks_per_beat=division)
    problems: list[str] = []
    pos = 8 + max(header_size, 6)
    while len(mid.tracks) < n_tracks:
        where = f"{path}: track {len(mid.tracks)}"
        if pos + 8 > len(data):
            raise MidiReadError(f"{path}: the file ends early: the header announces {n_tracks} "
                                f"tracks, the file ({len(data)} bytes) holds {len(mid.tracks)}; "
                                f"it was probably cut off")
        kind, size = struct.unpack(">4sL", data[pos:pos + 8])
        if kind != b"MTrk":
            problems.append(f"{path}: unknown chunk {kind!r} of {size} bytes at byte {pos} skipped")
            pos += 8 + size
            continue
        if pos + 8 + size > len(data):
            raise MidiReadError(f"{path}: the file ends early: track {len(mid.tracks)} declares "
                                f"{size} bytes but the file ends after {len(data) - pos - 8} of "
                                f"them ({len(data)} bytes in all); it was probably cut off")
        try:
            mid.tracks.append(_read_track(_Bytes(data, pos + 8, pos + 8 + size), where, problems))
        except _EndsEarly:
            raise MidiReadError(f"{where}: the last event runs past the track's declared "
                                f"end ({size} bytes); the file is broken") from None
        except ValueError as err:
            raise MidiReadError(f"{where}: {err}") from None
        pos += 8 + size
    if pos < len(data):
        problems.append(f"{path}: {len(data) - pos} bytes after the last track ignored")
    if fmt == 0 and len(mid.tracks) > 1:
        problems.append(f"{path}: format 0 with {len(mid.tracks)} tracks; read as format 1")
        mid.type = 1
    return mid, problems


@dataclass
class ParsedMidi:
    resolution: int  # MIDI ticks per quarter
    notes: dict[str, np.ndarray]  # track name (upper case) -> (N, 3) int64: pitch, on, off ticks
    tempo_ticks: np.ndarray  # (C,) MIDI ticks of the tempo changes (first is 0)
    tempo_us: np.ndarray  # (C,) microseconds per quarter from that tick on
    # (S, 3) int64: tick, numerator, denominator of each time signature (first at tick 0)
    time_signatures: np.ndarray = field(
        default_factory=lambda: np.array([DEFAULT_TIME_SIGNATURE], dtype=np.int64))

    def _tempo_segments(self):
        ticks, us = self.tempo_ticks.astype(np.float64), self.tempo_us.astype(np.float64)
        sec_per_tick = us / 1e6 / self.resolution
        starts = np.concatenate([[0.0], np.cumsum(np.diff(ticks) * sec_per_tick[:-1])])
        return ticks, sec_per_tick, starts

    def seconds_to_ticks(self, seconds) -> np.ndarray:
        """Seconds -> (fractional) MIDI ticks through the tempo map."""
        seconds = np.asarray(seconds, dtype=np.float64)
        ticks, sec_per_tick, starts = self._tempo_segments()
        i = np.clip(np.searchsorted(starts, seconds, side="right") - 1, 0, len(starts) - 1)
        return ticks[i] + (seconds - starts[i]) / sec_per_tick[i]

    def ticks_to_seconds(self, ticks) -> np.ndarray:
        """(Fractional) MIDI ticks -> seconds through the tempo map (inverse of seconds_to_ticks)."""
        at = np.asarray(ticks, dtype=np.float64)
        ticks0, sec_per_tick, starts = self._tempo_segments()
        i = np.clip(np.searchsorted(ticks0, at, side="right") - 1, 0, len(ticks0) - 1)
        return starts[i] + (at - ticks0[i]) * sec_per_tick[i]

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"resolution": np.array(self.resolution), "tempo_ticks": self.tempo_ticks,
               "tempo_us": self.tempo_us, "track_names": np.array(list(self.notes)),
               "time_signatures": self.time_signatures}
        out.update({f"notes_{name}": n for name, n in self.notes.items()})
        return out

    @classmethod
    def from_arrays(cls, arrays) -> "ParsedMidi":
        names = [str(n) for n in arrays["track_names"]]
        signatures = (np.asarray(arrays["time_signatures"]) if "time_signatures" in arrays
                      else np.array([DEFAULT_TIME_SIGNATURE], dtype=np.int64))
        return cls(int(arrays["resolution"]), {n: arrays[f"notes_{n}"] for n in names},
                   np.asarray(arrays["tempo_ticks"]), np.asarray(arrays["tempo_us"]), signatures)


def track_notes(track) -> np.ndarray:
    """(N, 5) int64 notes of one mido track: channel, pitch, on tick, off tick, velocity.

    Ticks are absolute within the track. Note-on with velocity 0 counts as note-off. Note-offs
    close the earliest still-held note of the same channel and pitch (first in, first out), so
    overlapping same-pitch notes keep their lengths; a note-on and note-off on the same tick give
    a zero-length note (off == on); a note still held at the end of the track ends there.
    Sorted by onset, then pitch."""
    now, held, rows = 0, {}, []
    for msg in track:
        now += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            held.setdefault((msg.channel, msg.note), []).append((now, msg.velocity))
        elif msg.type in ("note_off", "note_on"):
            starts = held.get((msg.channel, msg.note))
            if starts:
                on, velocity = starts.pop(0)
                rows.append((msg.channel, msg.note, on, now, velocity))
    rows.extend((ch, pitch, on, now, vel) for (ch, pitch), ons in held.items() for on, vel in ons)
    rows.sort(key=lambda r: (r[2], r[1], r[3]))
    return np.array(rows, dtype=np.int64).reshape(-1, 5)


def meta_events(mid: mido.MidiFile, kind: str) -> list[tuple[int, object]]:
    """(absolute tick, message) of every meta event of `kind` in any track, sorted by tick."""
    found = []
    for track in mid.tracks:
        now = 0
        for msg in track:
            now += msg.time
            if msg.type == kind:
                found.append((now, msg))
    return sorted(found, key=lambda item: item[0])


def read_midi(path: str | Path) -> ParsedMidi:
    """Parse a MIDI file into per-track note arrays (MIDI ticks), its tempo map and meter.

    Tracks are named by their ``track_name`` meta message (upper-cased); an unnamed track with
    notes is called ``TRACK<i>``. Notes as in `track_notes`. Tempo and time-signature events are
    taken from every track (a later event at the same tick wins); defaults 120 bpm and 4/4 from
    tick 0. Leniencies of `load_midi_file` are reported with `warnings.warn`. Raises
    MidiReadError naming the file and the problem (type 2 files are not supported)."""
    mid, problems = load_midi_file(path)
    for problem in problems:
        warnings.warn(problem, stacklevel=2)
    if mid.type == 2:
        raise MidiReadError(f"{path}: MIDI type 2 (asynchronous tracks) is not supported")
    notes: dict[str, np.ndarray] = {}
    for i, track in enumerate(mid.tracks):
        rows = track_notes(track)
        if len(rows):
            name = next((m.name.strip().upper() for m in track if m.type == "track_name"), None)
            key = name or f"TRACK{i}"
            arr = rows[:, 1:4]
            merged = np.concatenate([notes[key], arr]) if key in notes else arr
            notes[key] = merged[np.lexsort((merged[:, 0], merged[:, 1]))]
    return timing_of(mid, notes)


def timing_of(mid: mido.MidiFile, notes: dict[str, np.ndarray] | None = None) -> ParsedMidi:
    """A ParsedMidi with the file's tempo map and time signatures (from any track; a later event
    at the same tick wins; defaults 120 bpm and 4/4 at tick 0) and the given notes (default none)."""
    tempo = {tick: msg.tempo for tick, msg in meta_events(mid, "set_tempo")}
    tempo.setdefault(0, DEFAULT_TEMPO_US)
    meter = {tick: (msg.numerator, msg.denominator) for tick, msg in meta_events(mid, "time_signature")}
    meter.setdefault(0, DEFAULT_TIME_SIGNATURE[1:])
    ticks = np.array(sorted(tempo), dtype=np.int64)
    signatures = np.array([(t, *meter[t]) for t in sorted(meter)], dtype=np.int64)
    return ParsedMidi(mid.ticks_per_beat, notes or {}, ticks,
                      np.array([tempo[t] for t in ticks], np.int64), signatures)


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
              path: str | Path = "", origin_tick: int | None = None) -> np.ndarray:
    """Binary (T, 128·len(tracks)) pianoroll, tracks side by side, starting at the first note.

    Onsets and offsets are rounded to the grid; a note shorter than one grid tick still covers
    one tick. T = the last rounded offset. `origin_tick` (MIDI ticks, at or before the first
    note) starts the roll there instead (harmonize: the first note's bar line)."""
    arrays = select_tracks(parsed, tracks, path)
    if origin_tick is None:
        origin_tick = first_note_tick(parsed, tracks)
    origin = int(to_grid(origin_tick, parsed.resolution, ticks_per_quarter))
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
