"""Reading one POP909 song: MIDI tracks, aligned chord annotations and keys, per tick.

A song becomes (at ``ticks_per_quarter`` k):
- ``roll``: (T, 384) binary pianoroll MELODY ⊕ BRIDGE ⊕ PIANO, tick 0 = the earliest note;
- ``chord_code``: (T,) chord per tick (see `stripes.data.chords`): chord i of
  finalized_chord.txt covers ``duration × k`` ticks starting ``Position`` (startpos.csv, rescaled
  from 16 to k per quarter) after tick 0; ticks outside the annotations are "no chord";
- ``key_code``: (T,) key per tick from key_audio.txt segments (seconds → ticks by the MIDI's tempo
  map); ticks before the first segment take the first key, gaps keep the previous one.

Any problem raises `SongError` naming the song, the file and the reason; the caller skips the song.
Helper: `stripes.data.midi.midi_to_pianoroll` (a MIDI file → binary roll at k ticks per quarter).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stripes.data.align import AlignmentCheck, check_alignment
from stripes.data.annotations import AnnotationError, read_chords, read_key_segments, read_melody
from stripes.data.midi import (TRACKS, MidiReadError, ParsedMidi, first_note_tick, midi_to_pianoroll,
                               pianoroll, read_midi, select_tracks, to_grid)

__all__ = ["Song", "SongError", "SongSources", "build_song", "read_sources", "song_files",
           "midi_to_pianoroll", "ANNOTATION_TPQ"]

ANNOTATION_TPQ = 16  # startpos.csv offsets are in ticks at 16 per quarter
ALIGNMENT_POLICIES = ("startpos", "best", "skip")


class SongError(Exception):
    """A song that must be skipped: `str()` is one line naming the file and the reason."""

    def __init__(self, number: int, path: Path | str, reason: str):
        self.number, self.path, self.reason = number, str(path), reason
        super().__init__(f"song {number:03d}: {path}: {reason}")


def song_files(root: Path, number: int) -> dict[str, Path]:
    tag = f"{number:03d}"
    ann = root / "pop909_structure" / "POP909" / tag
    return {
        "midi": root / "POP909" / tag / f"{tag}.mid",
        "key": root / "POP909" / tag / "key_audio.txt",
        "chords": ann / "finalized_chord.txt",
        "melody": ann / "melody.txt",
    }


@dataclass
class SongSources:
    """The raw inputs of one song, parsed but not yet put on a grid."""

    number: int
    midi: ParsedMidi
    chords: np.ndarray  # (N, 2): chord code, duration in quarters
    melody: np.ndarray  # (N, 3): pitch, on, off in 16ths from the annotation start
    keys: list  # [(start s, end s, tonic, mode)]
    position: int  # startpos.csv Position (ticks at 16 per quarter)


def read_sources(root: Path, number: int, startpos: dict[int, int],
                 midi: ParsedMidi | None = None) -> SongSources:
    """Read every input of song `number` (pass `midi` to reuse a cached parse)."""
    files = song_files(root, number)
    rel = {k: p.relative_to(root) if p.is_relative_to(root) else p for k, p in files.items()}
    if number not in startpos:
        raise SongError(number, "pop909_alignment/startpos.csv", "song has no row in startpos.csv")
    if midi is None:
        if not files["midi"].is_file():
            raise SongError(number, rel["midi"], "MIDI file missing")
        try:
            midi = read_midi(files["midi"])
        except MidiReadError as err:
            raise SongError(number, rel["midi"], str(err).split(": ", 1)[-1]) from None
    try:
        select_tracks(midi, TRACKS)
    except MidiReadError as err:
        raise SongError(number, rel["midi"], str(err).split(": ", 1)[-1]) from None
    parsed = {}
    for kind, reader in (("chords", read_chords), ("melody", read_melody), ("key", read_key_segments)):
        try:
            parsed[kind] = reader(files[kind])
        except AnnotationError as err:
            raise SongError(number, rel[kind], str(err).split(": ", 1)[-1]) from None
    return SongSources(number, midi, parsed["chords"], parsed["melody"], parsed["key"],
                       startpos[number])


@dataclass
class Song:
    number: int
    roll: np.ndarray  # (T, 384) bool
    chord_code: np.ndarray  # (T,) int64
    key_code: np.ndarray  # (T,) int64: tonic + 12 * mode
    offset: int  # annotation offset used, ticks at 16 per quarter
    alignment: AlignmentCheck

    @property
    def n_ticks(self) -> int:
        return len(self.roll)


def chords_per_tick(chords: np.ndarray, origin: int, length: int, ticks_per_quarter: int) -> np.ndarray:
    """(N, 2) chords -> (length,) chord codes; the first chord starts at tick `origin`."""
    expanded = np.repeat(chords[:, 0], chords[:, 1] * ticks_per_quarter)
    out = np.zeros(length, dtype=np.int64)
    a, b = max(origin, 0), min(origin + len(expanded), length)
    if b > a:
        out[a:b] = expanded[a - origin : b - origin]
    return out


def keys_per_tick(keys: list, midi: ParsedMidi, length: int, ticks_per_quarter: int) -> np.ndarray:
    """Key segments (seconds) -> (length,) key codes on the roll's grid."""
    origin = to_grid(first_note_tick(midi), midi.resolution, ticks_per_quarter)
    starts = to_grid(midi.seconds_to_ticks([k[0] for k in keys]), midi.resolution,
                     ticks_per_quarter) - origin
    codes = np.array([tonic + 12 * mode for _, _, tonic, mode in keys], dtype=np.int64)
    index = np.clip(np.searchsorted(starts, np.arange(length), side="right") - 1, 0, len(keys) - 1)
    return codes[index]


def build_song(src: SongSources, ticks_per_quarter: int, policy: str = "startpos",
               search_ticks: int = 64, min_gain: float = 0.2) -> Song:
    """Put one song on the grid (see module doc). `policy` decides what a disagreeing alignment
    does: "startpos" keeps the file's offset, "best" uses the best-matching one, "skip" raises."""
    if policy not in ALIGNMENT_POLICIES:
        raise ValueError(f"alignment policy {policy!r} not in {ALIGNMENT_POLICIES}")
    roll16 = pianoroll(src.midi, TRACKS, ANNOTATION_TPQ)
    check = check_alignment(src.melody, roll16[:, :128], src.position, search_ticks)
    offset = src.position
    if check.disagrees(min_gain):
        if policy == "skip":
            raise SongError(src.number, "pop909_alignment/startpos.csv",
                            f"annotated melody agrees best at offset {check.best_offset} "
                            f"({check.best_score:.0%}), not at {check.file_offset} "
                            f"({check.file_score:.0%})")
        if policy == "best":
            offset = check.best_offset
    roll = roll16 if ticks_per_quarter == ANNOTATION_TPQ else pianoroll(src.midi, TRACKS,
                                                                          ticks_per_quarter)
    length = len(roll)
    origin = int(round(offset * ticks_per_quarter / ANNOTATION_TPQ))
    chord = chords_per_tick(src.chords, origin, length, ticks_per_quarter)
    key = keys_per_tick(src.keys, src.midi, length, ticks_per_quarter)
    return Song(src.number, roll, chord, key, offset, check)
