"""The one MIDI reader: lenient where players are, precise where a file is broken.

Files are built byte by byte here, so each test knows exactly what the file holds."""

import struct
import warnings

import mido
import numpy as np
import pytest

from stripes.data.midi import MidiReadError, load_midi_file, pianoroll, read_midi, track_notes


def varlen(value):
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.insert(0, (value & 0x7F) | 0x80)
        value >>= 7
    return bytes(out)


def track(*events):
    """MTrk chunk from (delta, raw event bytes) pairs; end-of-track appended."""
    body = b"".join(varlen(d) + e for d, e in events) + b"\x00\xff\x2f\x00"
    return b"MTrk" + struct.pack(">L", len(body)) + body


def smf(*tracks, fmt=1, division=480):
    return b"MThd" + struct.pack(">LHHh", 6, fmt, len(tracks), division) + b"".join(tracks)


TEMPO_90 = b"\xff\x51\x03" + (666667).to_bytes(3, "big")
NAME = lambda s: b"\xff\x03" + bytes([len(s)]) + s  # noqa: E731
ON = lambda ch, p, v=100: bytes([0x90 | ch, p, v])  # noqa: E731
OFF = lambda ch, p: bytes([0x80 | ch, p, 0])  # noqa: E731


def write(tmp_path, data, name="t.mid"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_tempo_on_a_later_track_counts(tmp_path):
    path = write(tmp_path, smf(track((0, NAME(b"conductor"))),
                               track((0, NAME(b"Melody")), (0, TEMPO_90), (0, ON(0, 60)), (480, OFF(0, 60)))))
    parsed = read_midi(path)
    assert parsed.tempo_us.tolist() == [666667]
    assert parsed.ticks_to_seconds(480) == pytest.approx(0.666667)
    assert mido.MidiFile(str(path)).length == pytest.approx(float(parsed.ticks_to_seconds(480)))


def test_out_of_range_data_byte_is_clipped_with_a_warning(tmp_path):
    cc = bytes([0xB0, 7, 255])  # volume 255
    path = write(tmp_path, smf(track((0, cc), (0, ON(0, 60)), (480, OFF(0, 60)))))
    mid, problems = load_midi_file(path)
    assert [m.value for m in mid.tracks[0] if m.type == "control_change"] == [127]
    assert len(problems) == 1 and "255" in problems[0] and str(path) in problems[0]
    with pytest.warns(UserWarning, match="clipped"):
        assert read_midi(path).notes["TRACK0"].tolist() == [[60, 0, 480]]


def test_malformed_key_signature_is_kept_as_unknown(tmp_path):
    bad_key = b"\xff\x59\x02\x09\x05"  # 9 sharps, mode 5: not a key
    path = write(tmp_path, smf(track((0, bad_key), (0, ON(0, 64)), (240, OFF(0, 64)))))
    mid, problems = load_midi_file(path)
    assert mid.tracks[0][0].type == "unknown_meta" and "0x59" in problems[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert read_midi(path).notes["TRACK0"].tolist() == [[64, 0, 240]]


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.9])
def test_truncated_file_says_it_ends_early(tmp_path, cut):
    data = smf(track((0, NAME(b"x"))), track(*[(120, ON(0, 60 + i % 5)) for i in range(40)]))
    path = write(tmp_path, data[:int(len(data) * cut)], "cut.mid")
    with pytest.raises(MidiReadError, match=r"cut\.mid: .*ends early"):
        read_midi(path)


@pytest.mark.parametrize("data, message", [
    (b"", "empty"), (b"RIFF1234", "not a MIDI file"), (b"MThd\x00\x00", "ends early"),
    (smf(division=-7936), "SMPTE"),
])
def test_broken_files_name_the_file_and_the_problem(tmp_path, data, message):
    path = write(tmp_path, data, "bad.mid")
    with pytest.raises(MidiReadError, match=rf"bad\.mid: .*{message}"):
        read_midi(path)
    with pytest.raises(MidiReadError, match="no such file"):
        read_midi(tmp_path / "absent.mid")


def test_overlapping_same_pitch_notes_keep_their_lengths_and_zero_length_stays_zero(tmp_path):
    # C on at 0, C again at 240, off at 480 (closes the first), off at 960 (closes the second);
    # a zero-length grace note E at 960
    path = write(tmp_path, smf(track((0, ON(0, 60)), (240, ON(0, 60)), (240, OFF(0, 60)),
                                     (480, OFF(0, 60)), (0, ON(0, 64)), (0, OFF(0, 64)))))
    notes = read_midi(path).notes["TRACK0"]
    assert notes.tolist() == [[60, 0, 480], [60, 240, 960], [64, 960, 960]]
    roll = pianoroll(read_midi(path), ("TRACK0",), 4)
    assert roll[8, 64] and roll[:, 64].sum() == 1 and roll.shape[0] == 9  # 960 ticks = grid 8: covers one tick


def test_huge_resolution_and_time_signatures(tmp_path):
    ts = b"\xff\x58\x04\x03\x02\x18\x08"  # 3/4
    path = write(tmp_path, smf(track((0, ts), (0, ON(0, 60)), (32767 * 240, OFF(0, 60))), division=32767))
    parsed = read_midi(path)
    assert parsed.resolution == 32767 and parsed.time_signatures.tolist() == [[0, 3, 4]]
    assert parsed.ticks_to_seconds(32767 * 240) == pytest.approx(120.0)


def test_type0_notes_by_channel(tmp_path):
    path = write(tmp_path, smf(track((0, ON(0, 72)), (0, ON(1, 48)), (480, OFF(0, 72)), (0, OFF(1, 48))),
                               fmt=0))
    (single,) = load_midi_file(path)[0].tracks
    notes = track_notes(single)
    assert notes[:, :4].tolist() == [[1, 48, 0, 480], [0, 72, 0, 480]]


def test_reader_agrees_with_mido_on_a_valid_file(tmp_path):
    mid = mido.MidiFile(ticks_per_beat=96)
    t = mid.add_track("Lead")
    rng = np.random.default_rng(1)
    for p in rng.integers(50, 80, 30).tolist():
        t.append(mido.Message("note_on", note=p, velocity=90, time=int(rng.integers(0, 50))))
        t.append(mido.Message("note_off", note=p, time=int(rng.integers(1, 50))))
    mid.save(tmp_path / "ok.mid")
    ours, problems = load_midi_file(tmp_path / "ok.mid")
    assert problems == [] and [str(m) for m in ours.tracks[0]] == [str(m) for m in mido.MidiFile(tmp_path / "ok.mid").tracks[0]]
