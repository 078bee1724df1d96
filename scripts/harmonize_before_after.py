"""Compare harmonize outputs of two code versions on the same inputs (for issue #12's closing note).

    python scripts/harmonize_before_after.py CASES_DIR BEFORE_DIR AFTER_DIR [--key C:maj]

For each ``CASES_DIR/<name>.mid`` with a ``<name>.mid`` in BEFORE_DIR and/or AFTER_DIR, prints
the PIANO track's out-of-key share of sounding time (pitch classes outside the key's scale,
weighted by duration in seconds) and its share of onsets on downbeats (within a 32nd note of
a bar line of the *input* file: bars from tick 0 through its time signatures). Reading, bars and
tempo maps all go through the project's own reader (`stripes.data.midi`, `stripes.data.meter`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from stripes.data.chords import parse_key
from stripes.data.meter import bars_of
from stripes.data.midi import MidiReadError, read_midi
from stripes.harmony import MAJOR_SCALE, MINOR_SCALE


def piano_stats(output: Path, source: Path, key: tuple[int, int]) -> tuple[float, float, float]:
    """(out-of-key share of piano time, downbeat share of piano onsets, output length in s)."""
    out, src = read_midi(output), read_midi(source)
    piano = out.notes.get("PIANO")
    length = float(out.ticks_to_seconds(max(n[:, 2].max() for n in out.notes.values())))
    if piano is None or not len(piano):
        return float("nan"), float("nan"), length
    scale = {(key[0] + d) % 12 for d in (MINOR_SCALE[:7] if key[1] else MAJOR_SCALE)}
    seconds = out.ticks_to_seconds(piano[:, 2]) - out.ticks_to_seconds(piano[:, 1])
    outside = np.array([p % 12 not in scale for p in piano[:, 0]])
    out_of_key = float(seconds[outside].sum() / max(seconds.sum(), 1e-9))
    onsets = out.ticks_to_seconds(piano[:, 1])
    end = int(max(n[:, 2].max() for n in src.notes.values()))
    bar_seconds = src.ticks_to_seconds(bars_of(src.time_signatures, src.resolution, end).start)
    tolerance = float(src.ticks_to_seconds(src.resolution / 8) - src.ticks_to_seconds(0))
    nearest = np.abs(onsets[:, None] - bar_seconds[None, :]).min(axis=1)
    return out_of_key, float((nearest <= tolerance).mean()), length


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", type=Path)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--key", default="C:maj")
    args = parser.parse_args(argv)
    key = parse_key(args.key)
    print("| case | out-of-key piano time, before → after | piano onsets on downbeats, before → after | length s, before → after |")
    print("|---|---:|---:|---:|")
    totals = {"before": [], "after": []}
    for source in sorted(args.cases.glob("*.mid")):
        cells = {}
        for side in ("before", "after"):
            path = getattr(args, side) / source.name
            try:
                cells[side] = piano_stats(path, source, key) if path.exists() else None
            except MidiReadError:
                cells[side] = None
            if cells[side] is not None:
                totals[side].append(cells[side])
        show = lambda c, i, pct: ("fails" if c is None else (f"{100 * c[i]:.0f} %" if pct else f"{c[i]:.1f}"))  # noqa: E731
        print(f"| {source.stem} | " + " | ".join(
            f"{show(cells['before'], i, i < 2)} → {show(cells['after'], i, i < 2)}" for i in range(3)) + " |")
    for side, rows in totals.items():
        if rows:
            arr = np.array(rows)
            print(f"{side}: {len(rows)} outputs, mean out-of-key {100 * np.nanmean(arr[:, 0]):.1f} %, "
                  f"mean downbeat share {100 * np.nanmean(arr[:, 1]):.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
