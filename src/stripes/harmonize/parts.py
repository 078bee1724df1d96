"""The parts of a user's MIDI file and the choice of the melody (and bridge) among them.

A *part* is the notes of one track on one MIDI channel: a track that plays on several channels
(every type-0 file, some type-1 files) is split by channel, so each instrument of a type-0 file is
its own part (named ``<track name> ch<channel>``, channels counted 1–16 as players show them).
Channel 10 is drums.

The melody is, in this order: the part named by ``--melody-track`` (case-insensitive, a drum part
too when named on purpose); a part named MELODY; else the best-scoring pitched part, where the
score (`melody_score`) prefers a monophonic line (little time with two or more notes sounding), a
melody range (mean pitch within C4–G5, MIDI 60–79; a pad two octaves up or a bass line scores
low) and a melody-like name (vocal, vox, voice, lead, melody, sing, solo). Every choice comes with
its reasons, which harmonize prints. The bridge is ``--bridge-track`` or a part named BRIDGE.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stripes.data.midi import track_notes

DRUM_CHANNEL = 9  # channel 10 as players count
MELODY_RANGE = (60, 79)  # C4–G5
MELODY_WORDS = ("melody", "vocal", "vox", "voice", "lead", "sing", "solo")
NOTE_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]


def note_name(pitch: int) -> str:
    """MIDI pitch -> scientific name, 60 -> 'C4'."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


@dataclass
class Part:
    """One track × channel with notes."""

    name: str
    track: int  # index in the file
    channel: int  # 0–15
    split: bool  # the track plays on several channels: this part keeps only `channel`
    notes: np.ndarray  # (N, 5) channel, pitch, on, off (MIDI ticks), velocity (`track_notes`)
    reasons: list[str] = field(default_factory=list)

    @property
    def is_drum(self) -> bool:
        return self.channel == DRUM_CHANNEL

    def polyphony(self) -> float:
        """Share of the part's sounding time (MIDI ticks) with two or more notes at once."""
        on, off = self.notes[:, 2], self.notes[:, 3]
        events = np.concatenate([np.column_stack([on, np.ones_like(on)]),
                                 np.column_stack([off, -np.ones_like(off)])])
        events = events[np.lexsort((events[:, 1], events[:, 0]))]  # offs before ons at a tick
        count = np.cumsum(events[:, 1])[:-1]
        spans = np.diff(events[:, 0])
        sounding = spans[count >= 1].sum()
        return float(spans[count >= 2].sum() / sounding) if sounding else 0.0

    def describe(self) -> str:
        pitches = self.notes[:, 1]
        kind = "drums" if self.is_drum else f"{note_name(int(pitches.min()))}–{note_name(int(pitches.max()))}"
        return (f"'{self.name}' (track {self.track}, channel {self.channel + 1}, {len(self.notes)} "
                f"notes, {kind}, {100 * self.polyphony():.0f}% polyphonic)")


def split_parts(mid) -> list[Part]:
    """Every track × channel with notes of a mido.MidiFile, in file order."""
    parts = []
    for i, track in enumerate(mid.tracks):
        notes = track_notes(track)
        if not len(notes):
            continue
        title = next((m.name.strip() for m in track if m.type == "track_name" and m.name.strip()),
                     f"track {i}")
        channels = sorted(set(notes[:, 0].tolist()))
        for ch in channels:
            name = f"{title} ch{ch + 1}" if len(channels) > 1 else title
            parts.append(Part(name, i, ch, len(channels) > 1, notes[notes[:, 0] == ch]))
    return parts


def melody_score(part: Part) -> float:
    """Higher = more melody-like (module docstring); -inf for drums."""
    if part.is_drum:
        return -np.inf
    mean = float(part.notes[:, 1].mean())
    low, high = MELODY_RANGE
    out_of_range = max(low - mean, mean - high, 0.0) / 6.0  # per half-octave
    named = any(word in part.name.lower() for word in MELODY_WORDS)
    return -4.0 * part.polyphony() - out_of_range + (1.0 if named else 0.0)


def _named(parts: list[Part], name: str) -> Part | None:
    matches = [p for p in parts if p.name.strip().upper() == name.strip().upper()]
    return matches[0] if matches else None


def choose_parts(parts: list[Part], melody_name: str | None, bridge_name: str | None,
                 path) -> tuple[Part, Part | None, list[str]]:
    """(melody, bridge or None, messages for the user). Raises ValueError with the problem.

    The messages say which part was chosen and why, warn when the melody is polyphonic, and
    list the parts left out of the output."""
    pitched = [p for p in parts if not p.is_drum]
    listing = ", ".join(repr(p.name) for p in parts)
    if melody_name:
        melody = _named(parts, melody_name)
        if melody is None:
            raise ValueError(f"{path}: no part named {melody_name!r}; parts: {listing}")
        why = "named by --melody-track"
    elif not pitched:
        what = "only drum parts (channel 10)" if parts else "no notes"
        raise ValueError(f"{path}: has {what}; a melody needs a pitched part with notes "
                         f"(or name a part with --melody-track)")
    elif _named(pitched, "MELODY"):
        melody, why = _named(pitched, "MELODY"), "named MELODY"
    else:
        ranked = sorted(pitched, key=melody_score, reverse=True)
        melody = ranked[0]
        poly, mean = melody.polyphony(), float(melody.notes[:, 1].mean())
        reasons = ["monophonic" if poly < 0.1 else f"the least polyphonic ({100 * poly:.0f}%)"]
        reasons.append(f"mean pitch {note_name(round(mean))} "
                       + ("in the melody range C4–G5" if MELODY_RANGE[0] <= mean <= MELODY_RANGE[1]
                          else "closest to the melody range C4–G5"))
        if any(w in melody.name.lower() for w in MELODY_WORDS):
            reasons.append("its name suggests a melody")
        why = ", ".join(reasons) + (f"; among {len(pitched)} pitched parts" if len(pitched) > 1 else "")
    messages = [f"melody: {melody.describe()}: {why}"]
    if melody.polyphony() >= 0.1:
        messages.append(f"warning: the melody part '{melody.name}' is polyphonic "
                        f"({100 * melody.polyphony():.0f}% of its time has two or more notes); the "
                        f"model was trained on one-voice melodies (use --melody-track to choose)")
    bridge = _named(parts, bridge_name) if bridge_name else _named(pitched, "BRIDGE")
    if bridge_name and bridge is None:
        raise ValueError(f"{path}: no part named {bridge_name!r}; parts: {listing}")
    if bridge is melody:
        bridge = None
    if bridge is not None:
        messages.append(f"bridge: {bridge.describe()}")
    left = [p for p in parts if p is not melody and p is not bridge]
    if left:
        messages.append("not in the output (the new PIANO part replaces them): "
                        + "; ".join(p.describe() for p in left))
    return melody, bridge, messages
