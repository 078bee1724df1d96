"""The user-reported harmonize cases of ../shared/cases/harmonize (its README says what a user
expects of each). Read from there, never copied; skipped when the folder is absent.

The run is the tiny smoke model (its accompaniment is noise), so these tests check what does not
depend on the model's quality: reading, part choice, bars, chords, key, timing, messages, and
that the input's melody, tempo map and length come back unchanged. Timing is checked against
mido's own playback clock (`mido.MidiFile` iteration), an implementation independent of ours."""

from pathlib import Path

import mido
import numpy as np
import pandas as pd
import pytest

from stripes.data.chords import parse_chord_name
from stripes.harmonize import HarmonizeError, harmonize, main

CASES = Path(__file__).resolve().parents[2] / "shared" / "cases" / "harmonize"
C_MAJOR = {0, 2, 4, 5, 7, 9, 11}
pytestmark = [pytest.mark.skipif(not CASES.is_dir(), reason=f"{CASES} not found (shared cases absent)"),
              pytest.mark.usefixtures("one_torch_thread")]


def played_notes(path: Path, channels=None) -> list[tuple]:
    """(channel, pitch, start s, end s, velocity) by mido's playback clock (tempo from any track)."""
    now, held, notes = 0.0, {}, []
    for msg in mido.MidiFile(str(path), clip=True):
        now += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            held.setdefault((msg.channel, msg.note), []).append((now, msg.velocity))
        elif msg.type in ("note_on", "note_off") and held.get((msg.channel, msg.note)):
            start, velocity = held[(msg.channel, msg.note)].pop(0)
            notes.append((msg.channel, msg.note, round(start, 6), round(now, 6), velocity))
    return sorted(n for n in notes if channels is None or n[0] in channels)


@pytest.fixture(scope="module")
def run(harmonize_run):
    return harmonize_run


def run_case(run, tmp_path, name, **options):
    lines = []
    out = tmp_path / f"{name}_out.mid"
    summary = harmonize(CASES / f"{name}.mid", run, out, say=lines.append, **options)
    chords = pd.read_csv(summary["csv"])
    return summary, chords, "\n".join(lines), out


def assert_diatonic(chords):
    for name in chords["chord"]:
        root, chroma = parse_chord_name(name)
        assert set(np.nonzero(chroma)[0].tolist()) <= C_MAJOR, f"{name} is not diatonic to C major"


def assert_melody_kept(source, out, channel=0, out_channel=None):
    expected = np.array([n[1:] for n in played_notes(source, {channel})])
    got = np.array([n[1:] for n in played_notes(out, {channel if out_channel is None else out_channel})])
    assert got.shape == expected.shape and len(got)
    assert (got[:, [0, 3]] == expected[:, [0, 3]]).all()  # pitch, velocity
    assert np.allclose(got[:, 1:3], expected[:, 1:3], atol=1e-5)  # seconds (float sums differ)


def piano_of(out):
    return [t for t in mido.MidiFile(str(out)).tracks if t.name == "PIANO"]


def test_c01_plain_c_major(run, tmp_path):
    summary, chords, text, out = run_case(run, tmp_path, "c01_cmajor_44")
    assert summary["key"] == (0, 0) and (chords["key"] == "C:maj").all()
    assert_diatonic(chords)
    assert set(chords["beat"]) <= {1, 3} and chords["bar"].between(1, 16).all()
    assert mido.MidiFile(str(out)).length == pytest.approx(32.0, abs=0.01)
    assert_melody_kept(CASES / "c01_cmajor_44.mid", out)
    assert len(piano_of(out)) == 1 and "smoke run" in text
    markers = [m.text for m in mido.MidiFile(str(out)).tracks[0] if m.type == "marker"]
    assert markers == chords["chord"].tolist()
    assert chords["start_seconds"].iloc[0] == 0 and chords["end_seconds"].iloc[-1] == pytest.approx(32.0)


def test_c02_waltz_changes_on_three_four_bar_lines(run, tmp_path):
    summary, chords, text, out = run_case(run, tmp_path, "c02_waltz_34")
    assert (chords["beat"] == 1).all() and chords["bar"].max() <= 16
    assert np.allclose(chords["start_seconds"] % 1.5, 0)  # 3/4 at 120 bpm: a bar is 1.5 s
    assert mido.MidiFile(str(out)).length == pytest.approx(24.0, abs=0.01)
    assert "3/4" in text and "4/4" in text and "trained" in text
    assert_diatonic(chords)
    signatures = [(m.numerator, m.denominator) for m in mido.MidiFile(str(out)).tracks[0]
                  if m.type == "time_signature"]
    assert signatures == [(3, 4)]


def test_c06_tempo_on_the_melody_track(run, tmp_path):
    summary, chords, text, out = run_case(run, tmp_path, "c06_tempo_on_track1")
    assert mido.MidiFile(str(out)).length == pytest.approx(42.667, abs=0.01)
    assert chords["end_seconds"].iloc[-1] == pytest.approx(42.667, abs=0.01)
    assert_melody_kept(CASES / "c06_tempo_on_track1.mid", out)


def test_c07_pickup_keeps_the_file_bar_lines(run, tmp_path):
    # threshold 0: every piano cell is on, so piano notes start where the model's grid starts
    summary, chords, text, out = run_case(run, tmp_path, "c07_pickup_rest", threshold=0.0)
    assert set(chords["beat"]) <= {1, 3} and chords["bar"].max() == 17
    assert np.allclose(chords["start_seconds"] % 1.0, 0)  # beats 1/3 at 120 bpm: whole seconds
    piano = played_notes(out, {1})
    assert piano and min(n[2] for n in piano) == 0.0  # the grid starts at bar 1, not at the pickup
    first_melody = min(n[2] for n in played_notes(CASES / "c07_pickup_rest.mid"))
    assert first_melody == pytest.approx(1.5)  # the pickup: beat 4 of bar 1
    assert_melody_kept(CASES / "c07_pickup_rest.mid", out)


def test_c09_type0_melody_channel_is_found_and_named(run, tmp_path):
    summary, chords, text, out = run_case(run, tmp_path, "c09_type0_multichannel")
    assert summary["melody"].endswith("ch1") and "melody: 'Song ch1'" in text
    assert "not in the output" in text and "ch2" in text and "ch3" in text and "ch10" in text
    result = mido.MidiFile(str(out))
    channels = {m.channel for t in result.tracks for m in t if m.type == "note_on"}
    assert len(channels) == 2 and 9 not in channels  # the melody's channel and the new piano's
    assert_melody_kept(CASES / "c09_type0_multichannel.mid", out)
    assert_diatonic(chords)


def test_c09_another_channel_can_be_named(run, tmp_path):
    summary, chords, text, out = run_case(run, tmp_path, "c09_type0_multichannel", melody_track="song ch3")
    assert summary["melody"] == "Song ch3" and "named by --melody-track" in text
    assert_melody_kept(CASES / "c09_type0_multichannel.mid", out, channel=2)


def test_c13_huge_resolution(run, tmp_path):
    summary, chords, text, out = run_case(run, tmp_path, "c13_ppq32767_80bars")
    result = mido.MidiFile(str(out))
    assert result.ticks_per_beat == 32767 and result.length == pytest.approx(160.0, abs=0.01)
    assert chords["bar"].max() == 80
    assert_melody_kept(CASES / "c13_ppq32767_80bars.mid", out)
    import matplotlib.image

    (png,) = summary["pngs"]  # 80 bars: 10 rows of 8 bars, one page
    assert matplotlib.image.imread(png).shape[0] > 1500


def test_c16b_data_byte_255_is_read_leniently(run, tmp_path):
    summary, chords, text, out = run_case(run, tmp_path, "c16b_data_byte_255")
    assert "clipped" in text and "255" in text
    _, reference, _, _ = run_case(run, tmp_path, "c01_cmajor_44")
    assert chords["chord"].tolist() == reference["chord"].tolist()
    assert_melody_kept(CASES / "c16b_data_byte_255.mid", out)


def test_c17_truncated_file(run, tmp_path, capsys):
    out = tmp_path / "c17_out.mid"
    with pytest.raises(HarmonizeError, match=r"c17_truncated\.mid: .*ends early"):
        harmonize(CASES / "c17_truncated.mid", run, out, say=lambda line: None)
    assert main([str(CASES / "c17_truncated.mid"), "--checkpoint", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "c17_truncated.mid" in err[0] and "ends early" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_c20_melody_below_a_string_pad(run, tmp_path):
    summary, chords, text, out = run_case(run, tmp_path, "c20_melody_not_highest")
    assert summary["melody"] == "Vox" and "melody: 'Vox'" in text
    names = [t.name for t in mido.MidiFile(str(out)).tracks]
    assert "Vox" in names and "Str" not in names
    assert_melody_kept(CASES / "c20_melody_not_highest.mid", out)


def test_c25_whole_notes_c_g_a_c(run, tmp_path):
    summary, chords, text, out = run_case(run, tmp_path, "c25_whole_notes_C_G_A_C")
    assert summary["key"] == (0, 0)
    per_bar = {int(bar): name for bar, name in zip(chords["bar"], chords["chord"])}
    bar_chord = [per_bar.get(b, None) for b in range(1, 5)]
    for b in range(2, 5):  # a bar without a change keeps the previous chord
        bar_chord[b - 1] = bar_chord[b - 1] or bar_chord[b - 2]
    assert bar_chord[0] == "C:maj" and bar_chord[1] in ("G:maj", "C:maj", "E:min")
    assert bar_chord[2] in ("A:min", "F:maj") and bar_chord[3] == "C:maj"
    assert not any(name.startswith(("Ab", "G#")) or name == "G:min" for name in chords["chord"])
