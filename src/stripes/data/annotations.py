"""Readers of the annotation and alignment files (formats: spec §2, pop909_structure/README.txt).

Every reader raises `AnnotationError` whose message names the file and the problem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stripes.data.chords import ChordParseError, parse_chord_line, parse_key


class AnnotationError(ValueError):
    """An annotation/alignment file that is missing or cannot be read."""


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise AnnotationError(f"{path}: file missing")
    try:
        return [line for line in path.read_text(encoding="utf-8", errors="strict").splitlines()
                if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{path}: cannot read ({err})") from None


def read_chords(path: Path) -> np.ndarray:
    """finalized_chord.txt -> (N, 2) int64 rows (chord code, duration in quarters)."""
    rows = []
    for i, line in enumerate(_lines(path), 1):
        try:
            rows.append(parse_chord_line(line))
        except ChordParseError as err:
            raise AnnotationError(f"{path}: line {i}: {err}") from None
    if not rows:
        raise AnnotationError(f"{path}: no chords")
    return np.array(rows, dtype=np.int64)


def read_melody(path: Path) -> np.ndarray:
    """melody.txt -> (N, 3) int64 notes (pitch, onset, offset) in 16th notes from the start;
    rests (pitch 0) advance time and are not returned."""
    notes, now = [], 0
    for i, line in enumerate(_lines(path), 1):
        parts = line.split()
        try:
            pitch, duration = (int(float(x)) for x in parts)
        except ValueError:
            raise AnnotationError(f"{path}: line {i}: expected 'pitch duration', got {line!r}") from None
        if duration < 0 or not 0 <= pitch < 128:
            raise AnnotationError(f"{path}: line {i}: pitch or duration out of range in {line!r}")
        if pitch > 0 and duration > 0:
            notes.append((pitch, now, now + duration))
        now += duration
    if not notes:
        raise AnnotationError(f"{path}: no melody notes")
    return np.array(notes, dtype=np.int64)


def read_key_segments(path: Path) -> list[tuple[float, float, int, int]]:
    """key_audio.txt -> [(start s, end s, tonic, mode)], sorted by start."""
    segments = []
    for i, line in enumerate(_lines(path), 1):
        parts = line.split()
        try:
            if len(parts) != 3:
                raise ValueError("expected 'start end key'")
            tonic, mode = parse_key(parts[2])
            segments.append((float(parts[0]), float(parts[1]), tonic, mode))
        except (ValueError, ChordParseError) as err:
            raise AnnotationError(f"{path}: line {i}: {err}") from None
    if not segments:
        raise AnnotationError(f"{path}: no key segments")
    return sorted(segments)


def read_startpos(path: Path) -> dict[int, int]:
    """startpos.csv -> {song number: Position (ticks at 16 per quarter)}."""
    lines = _lines(path)
    header = [h.strip() for h in lines[0].split(",")]
    if header[:2] != ["ID", "Position"]:
        raise AnnotationError(f"{path}: header must start with 'ID,Position', got {lines[0]!r}")
    out = {}
    for i, line in enumerate(lines[1:], 2):
        parts = line.split(",")
        try:
            out[int(parts[0])] = int(round(float(parts[1])))
        except (ValueError, IndexError):
            raise AnnotationError(f"{path}: line {i}: cannot read {line!r}") from None
    return out


def read_split(path: Path) -> dict[str, np.ndarray]:
    """split.npz -> {"train": numbers, "val": numbers, "test": numbers}."""
    try:
        with np.load(path) as z:
            return {name: np.asarray(z[f"{name}_idx"], dtype=np.int64) for name in ("train", "val", "test")}
    except (OSError, KeyError, ValueError) as err:
        raise AnnotationError(f"{path}: needs arrays train_idx, val_idx, test_idx ({err})") from None


def read_chord_db(path: Path) -> np.ndarray:
    """chord_db.npz -> (K, 13) table: root + 1 (0 = no chord), 12-d chroma."""
    try:
        with np.load(path) as z:
            return np.asarray(z["chord_db"])
    except (OSError, KeyError, ValueError) as err:
        raise AnnotationError(f"{path}: needs array chord_db ({err})") from None
