"""Chords and keys: pitch-class names, chord codes, the global chord vocabulary (chord_db.npz).

A chord is a root pitch class (0 = C … 11 = B, -1 = no chord "N") and a 12-d binary chroma.
Per tick it is stored as one integer *chord code* = (root + 1) * 4096 + chroma bits
(bit i = pitch class i), so "no chord" is code 0. A key is a tonic pitch class and a mode
(0 = major, 1 = minor), stored per tick as *key code* = tonic + 12 * mode.

The global token id of a chord is its row in the authors' ``chord_db.npz`` (395 rows of
[root + 1, 12-d chroma], "no chord" = the all-zero row) [S §IV-D]. Chords absent from the
table (possible after transposing to C for the KEY context, or in a user's melody) get further
ids: first every transposition of a table row (in row, then shift order), then a fallback
``len + code`` that is unique per chord; so every chord has a deterministic id.
"""

from __future__ import annotations

import re

import numpy as np

PITCH_CLASS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
NOTE_NAMES = ["C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B"]
MODES = {"maj": 0, "min": 1, "major": 0, "minor": 1}
NO_CHORD = 0  # chord code of "N"
_BITS = 1 << np.arange(12)


class ChordParseError(ValueError):
    """A chord or key string that cannot be read."""


def pitch_class(name: str) -> int:
    """'C' -> 0, 'F#' -> 6, 'Gb' -> 6, 'B#' -> 0."""
    name = name.strip()
    if not name or name[0].upper() not in PITCH_CLASS or any(c not in "#b" for c in name[1:]):
        raise ChordParseError(f"not a note name: {name!r}")
    return (PITCH_CLASS[name[0].upper()] + name.count("#") - name[1:].count("b")) % 12


def parse_key(text: str) -> tuple[int, int]:
    """'E:min' -> (4, 1): (tonic pitch class, mode 0 = major / 1 = minor)."""
    parts = text.strip().split(":")
    if len(parts) != 2 or parts[1] not in MODES:
        raise ChordParseError(f"not a key (expected e.g. 'Gb:maj'): {text!r}")
    return pitch_class(parts[0]), MODES[parts[1]]


def key_name(tonic: int, mode: int) -> str:
    return f"{NOTE_NAMES[tonic % 12]}:{'min' if mode else 'maj'}"


def chroma_bits(chroma) -> np.ndarray:
    """(..., 12) binary chroma -> (...,) integer bit mask (bit i = pitch class i)."""
    return (np.asarray(chroma).astype(np.int64) != 0) @ _BITS


def bits_to_chroma(bits) -> np.ndarray:
    """(...,) bit masks -> (..., 12) uint8 chroma."""
    return ((np.asarray(bits, dtype=np.int64)[..., None] >> np.arange(12)) & 1).astype(np.uint8)


def chord_code(root, chroma) -> np.ndarray:
    """(root (...,) with -1 = no chord, chroma (..., 12)) -> (...,) chord codes.

    A chord with root -1 is "no chord" whatever its chroma (code 0)."""
    root = np.asarray(root, dtype=np.int64)
    code = (root + 1) * 4096 + chroma_bits(chroma)
    return np.where(root < 0, NO_CHORD, code)


def code_root(code) -> np.ndarray:
    """Chord codes -> roots (-1 = no chord)."""
    return np.asarray(code, dtype=np.int64) // 4096 - 1


def code_chroma(code) -> np.ndarray:
    """Chord codes -> (..., 12) uint8 chroma."""
    return bits_to_chroma(np.asarray(code, dtype=np.int64) % 4096)


def transpose_codes(code, shift) -> np.ndarray:
    """Transpose chords *down* by `shift` semitones (root r -> r - shift, chroma rotated).

    `shift` broadcasts with `code` (e.g. a per-tick key tonic). "No chord" stays "no chord".
    Example: E:min (root 4, {4, 7, 11}) down by 2 -> D:min (root 2, {2, 5, 9})."""
    code = np.asarray(code, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64) % 12
    root = code // 4096 - 1
    bits = code % 4096
    rotated = ((bits >> shift) | (bits << (12 - shift))) & 0xFFF
    new_root = (root - shift) % 12
    return np.where(root < 0, NO_CHORD, (new_root + 1) * 4096 + rotated)


class ChordVocabulary:
    """Global chord token ids from the chord table ``chord_db`` ((K, 13): root + 1, chroma)."""

    def __init__(self, chord_db: np.ndarray):
        table = np.asarray(chord_db)
        if table.ndim != 2 or table.shape[1] != 13:
            raise ValueError(f"chord_db must have shape (K, 13), got {table.shape}")
        roots = table[:, 0].astype(np.int64) - 1
        codes = chord_code(roots, table[:, 1:])
        self.table = table
        self._ids: dict[int, int] = {}
        for i, c in enumerate(codes.tolist()):
            self._ids.setdefault(c, i)
        # every transposition of a table chord, after the table
        for c in codes.tolist():
            for shift in range(1, 12):
                t = int(transpose_codes(c, shift))
                if t not in self._ids:
                    self._ids[t] = len(self._ids)
        self.n_table = len(table)
        self.n_known = len(self._ids)
        self.no_chord_id = self._ids.get(NO_CHORD)
        if self.no_chord_id is None:
            raise ValueError("chord_db has no all-zero 'no chord' row")

    def in_table(self, code) -> np.ndarray:
        """Whether each chord code is a row of chord_db itself."""
        return self.ids(code) < self.n_table

    def ids(self, code) -> np.ndarray:
        """Chord codes -> global token ids (int64), same shape."""
        code = np.asarray(code, dtype=np.int64)
        uniq, inverse = np.unique(code, return_inverse=True)
        mapped = np.array([self._ids.get(int(c), self.n_known + int(c)) for c in uniq], np.int64)
        return mapped[inverse].reshape(code.shape)


_CHORD_LINE = re.compile(r"^(?P<name>.*?)\s*\[(?P<tones>[^\]]*)\]\s*(?P<rest>.*)$")


def parse_chord_line(line: str) -> tuple[int, int]:
    """One ``finalized_chord.txt`` line -> (chord code, duration in quarters).

    Format ``name [tones] root duration`` (e.g. ``B:maj [3, 6, 11] 11 2``); an ``N`` line is no
    chord and may omit the root (``N []  7``). Raises ChordParseError naming the problem."""
    m = _CHORD_LINE.match(line.strip())
    if not m:
        raise ChordParseError(f"no '[tones]' in chord line {line.strip()!r}")
    rest = m["rest"].split()
    try:
        numbers = [int(x) for x in rest]
        tones = [int(x) for x in m["tones"].replace(",", " ").split()]
    except ValueError:
        raise ChordParseError(f"non-integer field in chord line {line.strip()!r}") from None
    if not numbers:
        raise ChordParseError(f"no duration in chord line {line.strip()!r}")
    duration = numbers[-1]
    if duration <= 0:
        raise ChordParseError(f"duration {duration} <= 0 in chord line {line.strip()!r}")
    if m["name"] == "N":
        return NO_CHORD, duration
    if len(numbers) != 2:
        raise ChordParseError(f"expected 'root duration' after the tones in {line.strip()!r}")
    root = numbers[0]
    if not 0 <= root < 12 or any(not 0 <= t < 12 for t in tones) or not tones:
        raise ChordParseError(f"pitch class out of 0..11 or no tones in {line.strip()!r}")
    chroma = np.zeros(12, np.uint8)
    chroma[tones] = 1
    return int(chord_code(root, chroma)), duration


# POP909 / Harte (2005) chord-quality shorthands, as intervals above the root
QUALITIES = {
    "maj": (0, 4, 7), "min": (0, 3, 7), "dim": (0, 3, 6), "aug": (0, 4, 8),
    "sus2": (0, 2, 7), "sus4": (0, 5, 7), "7": (0, 4, 7, 10), "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10), "minmaj7": (0, 3, 7, 11), "dim7": (0, 3, 6, 9), "hdim7": (0, 3, 6, 10),
    "maj6": (0, 4, 7, 9), "min6": (0, 3, 7, 9), "sus4(b7)": (0, 5, 7, 10), "9": (0, 2, 4, 7, 10),
    "maj9": (0, 2, 4, 7, 11), "min9": (0, 2, 3, 7, 10),
}
_QUALITY_OF = {shape: name for name, shape in QUALITIES.items()}
DEGREES = ["1", "b2", "2", "b3", "3", "4", "b5", "5", "b6", "6", "b7", "7"]  # Harte interval names
_DEGREE_BASE = {1: 0, 2: 2, 3: 4, 4: 5, 5: 7, 6: 9, 7: 11, 9: 2, 11: 5, 13: 9}


def chord_name(root: int, chroma) -> str:
    """(root pitch class, -1 = no chord; (12,) chroma) -> POP909/Harte name, e.g. 'A:min7', 'N'.

    A shape without a shorthand is written as Harte's interval list, e.g. ``C:(1,3,5,6,b7)``,
    or ``C:(2,5,b7)`` for a table row whose root is only the bass. Inverse of `parse_chord_name` (up to inversions, which chroma lacks)."""
    if root < 0 or not np.asarray(chroma).any():
        return "N"
    shape = tuple(sorted({(int(pc) - root) % 12 for pc in np.nonzero(np.asarray(chroma))[0]}))
    name = NOTE_NAMES[root % 12]
    if shape in _QUALITY_OF:
        return f"{name}:{_QUALITY_OF[shape]}"
    return f"{name}:({','.join(DEGREES[i] for i in shape)})"


def _degree(text: str) -> int:
    digits = text.lstrip("#b")
    if not digits.isdigit() or int(digits) not in _DEGREE_BASE:
        raise ChordParseError(f"not an interval: {text!r}")
    return (_DEGREE_BASE[int(digits)] + text.count("#") - text.count("b")) % 12


def parse_chord_name(text: str) -> tuple[int, np.ndarray]:
    """POP909/Harte chord name -> (root pitch class or -1 for 'N', (12,) uint8 chroma).

    Accepts 'C', 'C:maj', 'A:min7', 'Bb:sus4(b7)', 'F#:(1,b3,5)', 'G:7/b7' (the bass after '/'
    is added to the chroma), 'N'. Raises ChordParseError naming the text."""
    text = text.strip()
    if text in ("N", "X"):
        return -1, np.zeros(12, np.uint8)
    head, _, bass = text.partition("/")
    note, _, quality = head.partition(":")
    root = pitch_class(note)
    quality = quality or "maj"
    if quality in QUALITIES:
        shape = list(QUALITIES[quality])
    elif quality.startswith("(") and quality.endswith(")"):
        shape = [_degree(d.strip()) for d in quality[1:-1].split(",") if d.strip()]
    else:
        raise ChordParseError(f"unknown chord quality {quality!r} in {text!r} "
                              f"(known: {', '.join(QUALITIES)} or an interval list like (1,3,5))")
    if bass:
        shape.append(_degree(bass))
    chroma = np.zeros(12, np.uint8)
    chroma[[(root + i) % 12 for i in shape]] = 1
    return root, chroma
