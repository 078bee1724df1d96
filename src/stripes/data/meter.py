"""Bars and beats of a MIDI file from its time signatures, counted from tick 0.

A bar starts at tick 0 and then every numerator × (4 / denominator) quarter notes; a time
signature event starts a new bar at its tick (a change in the middle of a bar cuts that bar short,
as notation programs do). The *main beats* of a bar are its numerator's beats, except compound
meters (6/8, 9/8, 12/8, …: numerator a multiple of 3 above 3, denominator 8 or 16), whose main
beat is the dotted beat (6/8 has two). Chords may change at *harmonic positions*: every bar line,
plus the middle of the bar when the bar has an even number of main beats and lasts at least three
quarter notes (4/4 and 2/2 → beats 1 and 3, 6/8 → beats 1 and 4, 12/8 → 1 and 7; 2/4, 3/4, 5/4,
9/8 → one chord per bar). POP909, which the model learnt from, changes chords about every two
beats of 4/4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Bars:
    """The bars covering [0, end) in MIDI ticks (B bars)."""

    start: np.ndarray  # (B,) int64 first MIDI tick of each bar (start[0] = 0)
    length: np.ndarray  # (B,) int64 bar lengths in MIDI ticks (the last may run past `end`)
    numerator: np.ndarray  # (B,) int64
    denominator: np.ndarray  # (B,) int64
    resolution: int  # MIDI ticks per quarter

    def beat_ticks(self) -> np.ndarray:
        """(B,) length of one notated beat (1/denominator note) in MIDI ticks (float)."""
        return self.resolution * 4.0 / self.denominator

    def main_beats(self) -> np.ndarray:
        """(B,) number of main beats per bar (compound meters count dotted beats)."""
        compound = (self.numerator % 3 == 0) & (self.numerator > 3) & (self.denominator >= 8)
        return np.where(compound, self.numerator // 3, self.numerator)

    def harmonic_positions(self) -> tuple[np.ndarray, np.ndarray]:
        """(MIDI tick (H,), bar index (H,)) of the positions where a chord may change (see module)."""
        split = (self.main_beats() % 2 == 0) & (self.length >= 3 * self.resolution)
        middle = self.start + self.length // 2
        ticks = np.concatenate([self.start, middle[split]])
        bars = np.concatenate([np.arange(len(self.start)), np.nonzero(split)[0]])
        order = np.argsort(ticks, kind="stable")
        return ticks[order], bars[order]

    def locate(self, ticks) -> tuple[np.ndarray, np.ndarray]:
        """MIDI ticks -> (bar number, 1-based; beat within the bar, 1-based, in notated beats)."""
        ticks = np.asarray(ticks, dtype=np.float64)
        i = np.clip(np.searchsorted(self.start, ticks, side="right") - 1, 0, len(self.start) - 1)
        return i + 1, 1.0 + (ticks - self.start[i]) / self.beat_ticks()[i]

    def meters(self) -> list[tuple[int, int, int, int]]:
        """Runs of equal meter: [(first bar, last bar (1-based, inclusive), numerator, denominator)]."""
        runs: list[tuple[int, int, int, int]] = []
        for b, (num, den) in enumerate(zip(self.numerator.tolist(), self.denominator.tolist())):
            if runs and runs[-1][2:] == (num, den):
                runs[-1] = (runs[-1][0], b + 1, num, den)
            else:
                runs.append((b + 1, b + 1, num, den))
        return runs


def bars_of(time_signatures: np.ndarray, resolution: int, end_tick: int) -> Bars:
    """The bars from tick 0 up to (and including the one containing) `end_tick` - 1.

    time_signatures: (S, 3) tick, numerator, denominator sorted by tick (as `ParsedMidi`); one
    at tick 0 is assumed 4/4 when absent. Raises ValueError for a zero numerator/denominator."""
    signatures = np.asarray(time_signatures, dtype=np.int64).reshape(-1, 3)
    if not len(signatures) or signatures[0, 0] > 0:
        signatures = np.concatenate([[[0, 4, 4]], signatures])
    if (signatures[:, 1:] <= 0).any():
        raise ValueError(f"time signature with a zero numerator or denominator: {signatures.tolist()}")
    starts, lengths, nums, dens = [], [], [], []
    tick, end_tick = 0, max(int(end_tick), 1)
    while tick < end_tick:
        k = int(np.searchsorted(signatures[:, 0], tick, side="right") - 1)
        num, den = int(signatures[k, 1]), int(signatures[k, 2])
        length = max(int(round(num * 4 * resolution / den)), 1)
        if k + 1 < len(signatures) and tick < signatures[k + 1, 0] < tick + length:
            length = int(signatures[k + 1, 0]) - tick  # a meter change cuts this bar short
        starts.append(tick), lengths.append(length), nums.append(num), dens.append(den)
        tick += length
    arr = lambda x: np.array(x, dtype=np.int64)  # noqa: E731
    return Bars(arr(starts), arr(lengths), arr(nums), arr(dens), int(resolution))
