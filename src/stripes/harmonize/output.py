"""What harmonize writes: the MIDI file (mido), the chords CSV and the pianoroll pages (PNG).

* **MIDI** (type 1, the input's ticks per quarter): a conductor track with every tempo, time
  signature, key signature and SMPTE-offset event of the input (from any track, same ticks) and
  one ``marker`` event per chord change (POP909 chord name); the melody (and bridge) track with
  the input's own events, unchanged (a part split from a multi-channel track keeps only its
  channel's events, plus the track's meta events); and a PIANO track with the generated notes. The
  tempo map, the meter and every melody note (onset, duration, velocity) are therefore the
  input's, to the tick.
* **CSV** ``<out stem>.chords.csv``: one row per chord, ``start_seconds, end_seconds, bar, beat,
  chord, key`` (bar and beat 1-based, bars from tick 0, beats in the time signature's unit; chords
  and key in POP909 notation).
* **PNG**: the pianoroll (melody red, accompaniment blue) with bar lines, bar numbers and chord
  names, eight 4/4 bars (32 quarter notes) per row, at most ten rows per page; a longer piece gets
  ``<png stem>-p2.png``, ``-p3`` …

`write_all` writes every file to a temporary name beside its target and renames them only when
all are written, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import mido
import numpy as np

GLOBAL_META = ("set_tempo", "time_signature", "key_signature", "smpte_offset")
PIANO_VELOCITY = 80
QUARTERS_PER_ROW = 32
ROWS_PER_PAGE = 10


def absolute(track) -> list[tuple[int, object]]:
    """[(absolute tick, message)] of a mido track."""
    now, out = 0, []
    for msg in track:
        now += msg.time
        out.append((now, msg))
    return out


def to_track(events: list[tuple[int, object]], name: str | None = None) -> mido.MidiTrack:
    """A mido track from (absolute tick, message) pairs (stable-sorted by tick; end_of_track
    events dropped, mido appends one when saving); `name` puts a track_name first."""
    track = mido.MidiTrack()
    if name is not None:
        track.append(mido.MetaMessage("track_name", name=name, time=0))
    now = 0
    for tick, msg in sorted(events, key=lambda e: e[0]):
        if msg.type == "end_of_track" or (name is not None and msg.type == "track_name"):
            continue
        track.append(msg.copy(time=int(tick) - now))
        now = int(tick)
    return track


def part_track(mid: mido.MidiFile, part) -> mido.MidiTrack:
    """The part's own events, unchanged (see module docstring)."""
    kept = [(t, m) for t, m in absolute(mid.tracks[part.track])
            if (m.is_meta and m.type not in GLOBAL_META)
            or (not m.is_meta and (not part.split or getattr(m, "channel", None) == part.channel))]
    return to_track(kept, name=part.name if part.split else None)


def build_midi(mid: mido.MidiFile, parts: list, piano: list[tuple[int, int, int]],
               markers: list[tuple[int, str]]) -> mido.MidiFile:
    """The output file: conductor (+ chord markers), the given parts, PIANO.

    piano: (pitch, on, off) in MIDI ticks; markers: (MIDI tick, text)."""
    out = mido.MidiFile(type=1, ticks_per_beat=mid.ticks_per_beat)
    conductor = [(t, m) for track in mid.tracks for t, m in absolute(track) if m.type in GLOBAL_META]
    conductor += [(t, mido.MetaMessage("marker", text=text)) for t, text in markers]
    out.tracks.append(to_track(conductor, name="conductor"))
    out.tracks += [part_track(mid, p) for p in parts]
    used = {p.channel for p in parts}
    channel = next(c for c in range(16) if c not in used and c != 9)
    events = [(0, mido.Message("program_change", channel=channel, program=0))]
    for pitch, on, off in piano:  # note-offs sort before note-ons at the same tick
        events.append((off, mido.Message("note_off", channel=channel, note=pitch, velocity=0)))
        events.append((on, mido.Message("note_on", channel=channel, note=pitch, velocity=PIANO_VELOCITY)))
    events.sort(key=lambda e: (e[0], e[1].type == "note_on"))
    out.tracks.append(to_track(events, name="PIANO"))
    return out


def chords_csv(rows: list[dict]) -> str:
    """CSV text of the chord rows (keys: start_seconds, end_seconds, bar, beat, chord, key)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ["start_seconds", "end_seconds", "bar", "beat", "chord", "key"],
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "start_seconds": f"{row['start_seconds']:.4f}",
                         "end_seconds": f"{row['end_seconds']:.4f}", "beat": f"{row['beat']:g}"})
    return buffer.getvalue()


def plot_pages(melody: np.ndarray, piano: np.ndarray, tpq: int, bar_ticks: list[int],
               bar_numbers: list[int], chords: list[tuple[int, str]], title: str) -> list[bytes]:
    """PNG pages (bytes) of the pianoroll: (T, 128) melody and piano rolls on the grid; bar lines
    at grid ticks `bar_ticks` labelled `bar_numbers`; chords (grid tick, name)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = np.ones(melody.shape + (3,))
    image[piano] = (0.15, 0.35, 0.85)
    image[melody] = (0.85, 0.1, 0.1)
    active = np.nonzero(melody.any(0) | piano.any(0))[0]
    low, high = (max(active.min() - 2, 0), min(active.max() + 2, 127)) if active.size else (0, 127)
    per_row = QUARTERS_PER_ROW * tpq
    rows = max(1, -(-len(melody) // per_row))
    pages = []
    for first in range(0, rows, ROWS_PER_PAGE):
        count = min(ROWS_PER_PAGE, rows - first)
        fig, axes = plt.subplots(count, 1, figsize=(12, 0.6 + 1.9 * count), squeeze=False)
        for r, ax in zip(range(first, first + count), axes[:, 0]):
            a, b = r * per_row, (r + 1) * per_row
            ax.imshow(image[a:b].transpose(1, 0, 2), origin="lower", aspect="auto",
                      interpolation="nearest", extent=(a, a + len(image[a:b]), 0, 128))
            ax.set_xlim(a, b)
            ax.set_ylim(low, high + 1)
            ax.set_yticks([])
            ax.set_xticks([])
            for tick, number in zip(bar_ticks, bar_numbers):
                if a <= tick < b:
                    ax.axvline(tick, color="0.35", lw=0.8)
                    ax.text(tick + 0.3, low + 0.3, str(number), fontsize=6, color="0.35", va="bottom")
            for tick, name in chords:
                if a <= tick < b:
                    ax.text(tick + 0.3, high + 1.5, name, fontsize=7, va="bottom", clip_on=False)
        axes[0, 0].set_title(title + (f" (page {first // ROWS_PER_PAGE + 1})" if rows > ROWS_PER_PAGE else ""),
                             fontsize=9, pad=14)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90)
        plt.close(fig)
        pages.append(buffer.getvalue())
    return pages


def page_paths(png: Path, count: int) -> list[Path]:
    """png, png stem-p2.png, ... for `count` pages."""
    return [png] + [png.with_name(f"{png.stem}-p{i}{png.suffix}") for i in range(2, count + 1)]


def write_all(files: dict[Path, bytes]) -> None:
    """Write every file to a temporary sibling, then rename all into place (nothing half-written)."""
    temps = {}
    try:
        for path, data in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            temp.write_bytes(data)
            temps[path] = temp
    except BaseException:
        for temp in temps.values():
            temp.unlink(missing_ok=True)
        raise
    for path, temp in temps.items():
        os.replace(temp, path)


def midi_bytes(midi: mido.MidiFile) -> bytes:
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()
