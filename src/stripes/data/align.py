"""Alignment of the annotations with the MIDI, and its check by cross-correlation.

The annotations (chords, melody.txt) start `Position` ticks (16 per quarter) after the first note
of the MIDI pianoroll (`startpos.csv`) [S §IV-A]. The check cross-correlates the annotated melody
with the MIDI MELODY track: for each candidate offset o the score is

    c(o) = Σ_t Σ_p A[t, p] · M[t + o, p] / Σ_t Σ_p A[t, p],

A = annotated melody roll, M = MIDI melody roll (both binary, 16 ticks per quarter), i.e. the
fraction of annotated melody ticks whose pitch sounds in the MIDI melody o ticks later.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AlignmentCheck:
    file_offset: int  # startpos.csv, ticks at 16 per quarter
    best_offset: int  # argmax of the cross-correlation (ties: closest to file_offset)
    file_score: float  # c(file_offset)
    best_score: float  # c(best_offset)

    def disagrees(self, min_gain: float) -> bool:
        """True when another offset matches the MIDI melody better by more than `min_gain`."""
        return self.best_offset != self.file_offset and self.best_score - self.file_score > min_gain


def melody_ticks(notes: np.ndarray, ticks_per_16th: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) notes (pitch, on, off in 16ths) -> (ticks, pitches) of every sounding tick."""
    ticks, pitches = [], []
    for pitch, on, off in notes:
        t = np.arange(on * ticks_per_16th, off * ticks_per_16th)
        ticks.append(t)
        pitches.append(np.full_like(t, pitch))
    return np.concatenate(ticks), np.concatenate(pitches)


def cross_correlation(notes: np.ndarray, midi_melody: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """c(o) for each offset (see module doc); `midi_melody` is (T, 128) binary at 16 per quarter."""
    ticks, pitches = melody_ticks(notes)
    shifted = ticks[None, :] + np.asarray(offsets)[:, None]  # (O, n)
    valid = (shifted >= 0) & (shifted < len(midi_melody))
    hits = np.zeros(shifted.shape, dtype=bool)
    hits[valid] = midi_melody[shifted[valid], np.broadcast_to(pitches, shifted.shape)[valid]]
    return hits.sum(axis=1) / max(len(ticks), 1)


def check_alignment(notes: np.ndarray, midi_melody: np.ndarray, file_offset: int,
                    search_ticks: int = 64) -> AlignmentCheck:
    """Cross-correlate around `file_offset` (± `search_ticks`) and report the best offset."""
    offsets = np.arange(file_offset - search_ticks, file_offset + search_ticks + 1)
    scores = cross_correlation(notes, midi_melody, offsets)
    best = scores.max()
    candidates = offsets[scores == best]
    best_offset = int(candidates[np.argmin(np.abs(candidates - file_offset))])
    return AlignmentCheck(int(file_offset), best_offset, float(scores[search_ticks]), float(best))
