"""Harmonize a user's melody with a smoke-trained run: output MIDI, timing, and every bad input."""

import json
import shutil
from pathlib import Path

import numpy as np
import pretty_midi
import pytest

from stripes.harmonize import HarmonizeError, chord_table, harmonize, main

PROJECT = Path(__file__).resolve().parents[1]
EXAMPLE = PROJECT / "examples" / "melody.mid"


@pytest.fixture(scope="module")
def run_dir(harmonize_run):
    return harmonize_run


def notes_of(instrument):
    return [(n.pitch, round(n.start, 4), round(n.end, 4)) for n in instrument.notes]


def test_example_melody_is_kept_and_piano_spans_the_piece(run_dir, fake_pop909_root, tmp_path):
    out = tmp_path / "out.mid"
    # threshold 0: every piano cell is on, so each pitch is one note over the whole grid – which
    # checks the grid <-> seconds mapping against the melody's own first onset and last offset
    summary = harmonize(EXAMPLE, run_dir, out, data_root=str(fake_pop909_root), threshold=0.0)
    source = pretty_midi.PrettyMIDI(str(EXAMPLE))
    result = pretty_midi.PrettyMIDI(str(out))
    assert [i.name for i in result.instruments] == ["MELODY", "PIANO"]
    assert notes_of(result.instruments[0]) == notes_of(source.instruments[0])
    piano = result.instruments[1].notes
    assert len(piano) == 128 and summary["context"] == "bin"
    first = min(n.start for n in source.instruments[0].notes)
    last = max(n.end for n in source.instruments[0].notes)
    sixteenth = 60 / 96 / 4  # the run's grid: 4 ticks per quarter at 96 BPM
    for note in piano:
        assert note.start == pytest.approx(first, abs=1e-6)
        assert abs(note.end - last) <= sixteenth / 2 + 1e-6
    assert Path(summary["png"]).exists()


def test_cli_on_a_generated_multitrack_file_picks_the_top_voice(run_dir, fake_pop909_root, tmp_path):
    midi = pretty_midi.PrettyMIDI(initial_tempo=120)
    lead = pretty_midi.Instrument(program=0, name="Lead")
    bass = pretty_midi.Instrument(program=33, name="Bass")
    drums = pretty_midi.Instrument(program=0, is_drum=True, name="Drums")
    for i in range(32):
        lead.notes.append(pretty_midi.Note(100, 72 + (i % 5), i * 0.25, i * 0.25 + 0.2))
        drums.notes.append(pretty_midi.Note(100, 36, i * 0.25, i * 0.25 + 0.1))
    for i in range(8):
        bass.notes.append(pretty_midi.Note(100, 40, i, i + 0.9))
    midi.instruments += [bass, lead, drums]
    src, out = tmp_path / "song.mid", tmp_path / "song_harmonized.mid"
    midi.write(str(src))
    code = main([str(src), "--checkpoint", str(run_dir), "--out", str(out), "--context", "bin",
                 "--data-root", str(fake_pop909_root)])
    assert code == 0
    result = pretty_midi.PrettyMIDI(str(out))
    assert [i.name for i in result.instruments] == ["Lead", "PIANO"]
    assert notes_of(result.instruments[0]) == notes_of(lead)


def write(path, instruments):
    midi = pretty_midi.PrettyMIDI()
    midi.instruments += instruments
    midi.write(str(path))
    return path


@pytest.mark.parametrize("case, message", [
    ("empty", "has no notes"),
    ("drums", "only drum parts"),
    ("garbage", "ends early"),
    ("missing", "no such file"),
])
def test_bad_melody_files(run_dir, tmp_path, case, message):
    path = tmp_path / f"{case}.mid"
    if case == "empty":
        write(path, [pretty_midi.Instrument(program=0, name="MELODY")])
    elif case == "drums":
        drums = pretty_midi.Instrument(program=0, is_drum=True)
        drums.notes.append(pretty_midi.Note(100, 36, 0, 0.5))
        write(path, [drums])
    elif case == "garbage":
        path.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00")  # truncated header
    with pytest.raises(HarmonizeError, match=message):
        harmonize(path, run_dir, tmp_path / "out.mid")
    assert main([str(path), "--checkpoint", str(run_dir), "--out", str(tmp_path / "out.mid")]) == 2
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(("out", ".out"))]  # nothing written


def test_a_drum_part_named_on_purpose_is_harmonized(run_dir, fake_pop909_root, tmp_path):
    drums = pretty_midi.Instrument(program=0, is_drum=True, name="Perc")
    drums.notes += [pretty_midi.Note(100, 60 + i % 3, i * 0.5, i * 0.5 + 0.4) for i in range(8)]
    path = write(tmp_path / "drums.mid", [drums])
    summary = harmonize(path, run_dir, tmp_path / "out.mid", melody_track="perc",
                        data_root=str(fake_pop909_root), say=lambda line: None)
    assert summary["melody"] == "Perc" and Path(summary["csv"]).exists()


def test_checkpoint_from_another_version_or_context(run_dir, tmp_path):
    other = tmp_path / "other_run"
    shutil.copytree(run_dir, other)
    info = json.loads((other / "run_info.json").read_text())
    with pytest.raises(HarmonizeError, match="trained with context 'bin', not 'key'"):
        harmonize(EXAMPLE, other, tmp_path / "out.mid", context="key")
    info["packages"]["stripes"] = "9.9.0"
    (other / "run_info.json").write_text(json.dumps(info))
    with pytest.raises(HarmonizeError, match="trained with stripes 9.9.0"):
        harmonize(EXAMPLE, other, tmp_path / "out.mid")
    info["packages"]["stripes"] = "0.1.0"
    (other / "run_info.json").write_text(json.dumps(info))
    config = (other / "config.yaml").read_text()
    (other / "config.yaml").write_text(config.replace("d_model: 16", "d_model: 32"))
    with pytest.raises(HarmonizeError, match="does not fit this version of the model"):
        harmonize(EXAMPLE, other, tmp_path / "out.mid")
    with pytest.raises(HarmonizeError, match="not a stripes run directory"):
        harmonize(EXAMPLE, tmp_path, tmp_path / "out.mid")


def test_chord_table_needs_chord_db_for_rep_and_key(tmp_path):
    triads = chord_table("bin", str(tmp_path / "nowhere"))
    assert triads.shape == (25, 13) and (triads[0] == 0).all()
    assert np.array_equal(triads[1, 1:], [1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0])  # C major
    with pytest.raises(HarmonizeError, match="chord_db.npz"):
        chord_table("key", str(tmp_path / "nowhere"))


def melody_file(path, meter=(4, 4), bars=4, pitches=(72, 76, 79, 77, 74, 71)):
    """A one-track melody (mido) in `meter`, quarter notes (eighths in x/8) at 480 ticks per quarter."""
    import mido

    mid = mido.MidiFile(ticks_per_beat=480)
    track = mid.add_track("Tune")
    track.append(mido.MetaMessage("time_signature", numerator=meter[0], denominator=meter[1]))
    step = 480 * 4 // meter[1]
    for i in range(bars * meter[0]):
        track.append(mido.Message("note_on", note=pitches[i % len(pitches)], velocity=90))
        track.append(mido.Message("note_off", note=pitches[i % len(pitches)], time=step))
    mid.save(path)
    return path


def test_six_eight_changes_on_dotted_beats_and_says_so(run_dir, tmp_path):
    lines = []
    path = melody_file(tmp_path / "jig.mid", meter=(6, 8), bars=4)
    summary = harmonize(path, run_dir, tmp_path / "jig_out.mid", say=lines.append)
    beats = {row["beat"] for row in summary["chords"]}
    assert beats <= {1.0, 4.0} and any("6/8" in line and "4/4" in line for line in lines)


def test_given_chords_replace_the_estimate(run_dir, tmp_path):
    path = melody_file(tmp_path / "tune.mid", bars=4)
    per_bar = tmp_path / "chords.txt"
    per_bar.write_text("# one chord per bar\nF:maj\nD:min7\n\nG:7\nC:maj\n")
    summary = harmonize(path, run_dir, tmp_path / "a.mid", chords_path=per_bar, say=lambda line: None)
    assert [(r["bar"], r["beat"], r["chord"]) for r in summary["chords"]] == [
        (1, 1, "F:maj"), (2, 1, "D:min7"), (3, 1, "G:7"), (4, 1, "C:maj")]
    positioned = tmp_path / "positions.txt"
    positioned.write_text("2:3 A:min\n1 C\n")
    summary = harmonize(path, run_dir, tmp_path / "b.mid", chords_path=positioned, say=lambda line: None)
    assert [(r["bar"], r["beat"], r["chord"]) for r in summary["chords"]] == [
        (1, 1, "C:maj"), (2, 3, "A:min")]
    assert summary["chords"][1]["start_seconds"] == pytest.approx(3.0)  # 120 bpm: bar 2 beat 3


def test_given_chords_feed_the_structure_context(run_dir, tmp_path, monkeypatch):
    import stripes.harmonize.cli as cli

    seen = []
    original = cli.positions_for
    monkeypatch.setattr(cli, "positions_for", lambda *a: seen.append(a) or original(*a))
    path = melody_file(tmp_path / "tune.mid", bars=2)
    chords = tmp_path / "chords.txt"
    chords.write_text("Eb:maj\nEb:maj\n")
    harmonize(path, run_dir, tmp_path / "c.mid", chords_path=chords, say=lambda line: None)
    (context, root, chroma, *_), = seen
    assert context == "bin" and (root == 3).all()
    assert (chroma == np.array([0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1, 0])).all()


@pytest.mark.parametrize("text, message", [
    ("C:maj\n1:1 G:maj\n", "mixes"), ("H:maj\n", "not a note name"), ("C:weird\n", "unknown chord quality"),
    ("9:1 C\n", "bar 9 is outside"), ("1:5 C\n", "beat 5 is outside bar 1"), ("\n# nothing\n", "no chords"),
])
def test_bad_chord_files(run_dir, tmp_path, text, message):
    path = melody_file(tmp_path / "tune.mid", bars=4)
    chords = tmp_path / "chords.txt"
    chords.write_text(text)
    with pytest.raises(HarmonizeError, match=f"chords.txt.*{message}"):
        harmonize(path, run_dir, tmp_path / "out.mid", chords_path=chords, say=lambda line: None)
    assert not (tmp_path / "out.mid").exists()


def test_long_piece_gets_several_pages(run_dir, tmp_path):
    path = melody_file(tmp_path / "long.mid", bars=90)
    summary = harmonize(path, run_dir, tmp_path / "long_out.mid", say=lambda line: None)
    assert [Path(p).name for p in summary["pngs"]] == ["long_out.png", "long_out-p2.png"]
    assert all(Path(p).exists() for p in summary["pngs"])


def test_polyphonic_melody_is_warned_about(run_dir, tmp_path):
    hands = pretty_midi.Instrument(program=0, name="Piano")
    for i in range(16):  # right hand thirds over a left-hand bass: two-hand piano
        hands.notes += [pretty_midi.Note(90, p, i * 0.5, i * 0.5 + 0.45) for p in (72 + i % 3, 76 + i % 3, 48)]
    path = write(tmp_path / "hands.mid", [hands])
    lines = []
    harmonize(path, run_dir, tmp_path / "out.mid", say=lines.append)
    assert any(line.startswith("warning: the melody part 'Piano' is polyphonic (100%") for line in lines)


def test_harmonization_and_input_audio_are_written(run_dir, fake_pop909_root, tmp_path):
    import soundfile

    from stripes.audio import clip_level

    summary = harmonize(EXAMPLE, run_dir, tmp_path / "h.mid", data_root=str(fake_pop909_root), say=lambda _: None)
    assert summary["audio"] == str(tmp_path / "h.ogg") and summary["melody_audio"] == str(tmp_path / "h.melody.ogg")
    full, rate = soundfile.read(summary["audio"], always_2d=True)
    alone, _ = soundfile.read(summary["melody_audio"], always_2d=True)
    assert full.shape == alone.shape and full.shape[1] == 2  # same length, stereo
    for clip in (full, alone):
        peak, rms = clip_level(clip)
        assert peak < 0 and rms > -40
