"""Write `examples/melody.mid`: a 16-bar melody composed for this project (not from POP909).

A folk-like tune in G major over the progression | G | Em | C | D | (four times, the last phrase
ending on the tonic), 96 BPM, one instrument named MELODY. Run: `python examples/make_melody.py`.
"""

from pathlib import Path

import pretty_midi

BPM = 96
# (MIDI pitch or None for a rest, duration in eighth notes); each line is one bar (8 eighths).
PHRASE_A = [
    [(67, 2), (71, 2), (74, 3), (72, 1)],          # G: G B D C
    [(71, 2), (67, 2), (64, 4)],                   # Em: B G E
    [(72, 2), (76, 2), (74, 2), (72, 2)],          # C: C E D C
    [(71, 2), (69, 2), (66, 2), (69, 2)],          # D: B A F# A
]
PHRASE_B = [
    [(74, 3), (71, 1), (67, 2), (71, 2)],          # G
    [(76, 2), (74, 2), (71, 2), (None, 2)],        # Em
    [(72, 2), (69, 2), (72, 2), (76, 2)],          # C
    [(74, 4), (72, 2), (69, 2)],                   # D
]
ENDING = [
    [(67, 2), (71, 2), (74, 2), (79, 2)],          # G
    [(76, 3), (74, 1), (71, 4)],                   # Em
    [(72, 2), (71, 2), (69, 2), (66, 2)],          # C -> D
    [(67, 6), (None, 2)],                          # G
]
BARS = PHRASE_A + PHRASE_B + PHRASE_A + ENDING


def build() -> pretty_midi.PrettyMIDI:
    midi = pretty_midi.PrettyMIDI(initial_tempo=BPM)
    melody = pretty_midi.Instrument(program=73, name="MELODY")  # flute
    eighth = 60.0 / BPM / 2
    t = 0.0
    for bar in BARS:
        assert sum(d for _, d in bar) == 8, bar
        for pitch, duration in bar:
            if pitch is not None:
                melody.notes.append(pretty_midi.Note(90, pitch, t, t + duration * eighth * 0.95))
            t += duration * eighth
    midi.instruments.append(melody)
    return midi


if __name__ == "__main__":
    out = Path(__file__).with_name("melody.mid")
    build().write(str(out))
    print(f"wrote {out}")
