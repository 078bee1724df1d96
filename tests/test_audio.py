"""Audio rendering: level (peak, RMS), pitch, stereo placement, renderer fallback and bad input."""

import numpy as np
import pytest
import soundfile

from stripes import audio
from stripes.audio import AudioError, clip_level, load_audio_config, normalize, pan_gains, render_to_file

K, BPM = 4, 120.0  # 4 ticks per quarter at 120 bpm: one tick = 0.125 s


def roll(notes, length=64):
    """(length, 128) bool roll from [(pitch, start tick, end tick)]."""
    out = np.zeros((length, 128), dtype=bool)
    for pitch, start, end in notes:
        out[start:end, pitch] = True
    return out


def dominant_hz(mono, rate):
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(mono.size)))
    return np.fft.rfftfreq(mono.size, 1 / rate)[np.argmax(spectrum)]


def test_pan_law_is_constant_power():
    for pan in (-1.0, -0.35, 0.0, 0.2, 1.0):
        left, right = pan_gains(pan)
        assert left ** 2 + right ** 2 == pytest.approx(1.0)
    assert pan_gains(-1) == pytest.approx((1.0, 0.0), abs=1e-12)
    assert pan_gains(0) == pytest.approx((2 ** -0.5, 2 ** -0.5))


def test_normalize_hits_the_rms_target_or_stops_at_the_peak_limit():
    t = np.arange(22050) / 22050
    sine = np.stack([np.sin(2 * np.pi * 440 * t)] * 2, axis=1).astype(np.float32)  # RMS 1/sqrt(2)
    peak, rms = clip_level(normalize(sine, -20.0, -1.0))
    assert rms == pytest.approx(-20.0, abs=0.01)
    assert peak == pytest.approx(-20.0 + 20 * np.log10(np.sqrt(2)), abs=0.01)  # crest factor 3.01 dB
    clicks = np.zeros((22050, 2), dtype=np.float32)
    clicks[::5000] = 0.3  # crest factor ~35 dB: the RMS target would clip, the peak limit wins
    peak, rms = clip_level(normalize(clicks, -20.0, -1.0))
    assert peak == pytest.approx(-1.0, abs=0.01) and rms < -20
    assert not normalize(np.zeros((10, 2), np.float32), -20, -1).any()


@pytest.mark.parametrize("renderer", ["soundfont", "additive"])
def test_rendered_file_level_pitch_length_and_stereo(renderer, tmp_path):
    cfg = {"renderer": renderer}
    # a held A4 (440 Hz) on the melody flute, 4 s; nothing else
    tracks = {"MELODY": roll([(69, 0, 32)]), "PIANO": roll([])}
    info = render_to_file(tmp_path / "a.ogg", tracks, K, BPM, cfg)
    assert info.renderer == renderer
    data, rate = soundfile.read(str(tmp_path / "a.ogg"), always_2d=True)
    assert rate == 22050 and data.shape[1] == 2
    assert data.shape[0] / rate == pytest.approx(64 * 0.125 + 1.0, abs=0.01)  # T ticks + 1 s tail
    peak, rms = clip_level(data)
    assert peak <= -0.5, "clipping or too close to full scale after encoding"
    assert rms == pytest.approx(-20.0, abs=1.5)  # target RMS, within the encoder's error
    assert dominant_hz(data[: 4 * rate].mean(1), rate) == pytest.approx(440.0, rel=0.03)
    # melody panned left (-0.35): the left channel is louder
    left, right = np.sqrt((data[: 4 * rate] ** 2).mean(0))
    assert left / right == pytest.approx(np.divide(*pan_gains(-0.35)), rel=0.15)
    # the piano sits right of centre (+0.2)
    info = render_to_file(tmp_path / "p.ogg", {"PIANO": roll([(48, 0, 8), (52, 8, 16)])}, K, BPM, cfg)
    data, _ = soundfile.read(str(info.path), always_2d=True)
    left, right = np.sqrt((data ** 2).mean(0))
    assert right > left


def test_chord_mix_never_clips(tmp_path):
    """A dense 10-note chord with a melody on top is scaled down, not clipped."""
    chord = [(p, 0, 64) for p in range(40, 80, 4)]
    info = render_to_file(tmp_path / "c.ogg", {"MELODY": roll([(84, 0, 64)]), "PIANO": roll(chord)}, K, BPM)
    data, _ = soundfile.read(str(info.path))
    assert np.abs(data).max() < 0.95 and info.peak_dbfs <= -1.0 + 1e-6


def test_silent_tracks_give_silence(tmp_path):
    info = render_to_file(tmp_path / "s.ogg", {"PIANO": roll([])}, K, BPM)
    assert info.renderer == "none (silent)"
    data, _ = soundfile.read(str(info.path))
    assert not np.abs(data).any()


def test_falls_back_to_additive_with_a_log_line(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise TypeError("Unable to convert function return value")  # what symusic 0.6.0 raises

    monkeypatch.setattr(audio, "soundfont_track", broken)
    monkeypatch.setattr(audio, "_FALLBACK_LOGGED", set())
    info = render_to_file(tmp_path / "f.ogg", {"MELODY": roll([(69, 0, 8)])}, K, BPM)
    assert info.renderer == "additive"
    assert "soundfont renderer unavailable" in capsys.readouterr().out
    with pytest.raises(AudioError, match="soundfont rendering failed"):
        render_to_file(tmp_path / "g.ogg", {"MELODY": roll([(69, 0, 8)])}, K, BPM, {"renderer": "soundfont"})


def test_bad_input_is_named(tmp_path):
    with pytest.raises(AudioError, match="one length"):
        render_to_file(tmp_path / "x.ogg", {"MELODY": roll([], 64), "PIANO": roll([], 32)}, K, BPM)
    with pytest.raises(AudioError, match="tempo"):
        render_to_file(tmp_path / "x.ogg", {"MELODY": roll([])}, K, 0.0)
    with pytest.raises(AudioError, match="renderer"):
        render_to_file(tmp_path / "x.ogg", {"MELODY": roll([(60, 0, 4)])}, K, BPM, {"renderer": "fluid"})
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(AudioError, match="cannot write audio"):
        render_to_file(blocked / "x.ogg", {"MELODY": roll([(60, 0, 4)])}, K, BPM)
    assert not list(tmp_path.glob(".*tmp"))


def test_config_overrides_merge_over_the_defaults():
    cfg = load_audio_config({"sample_rate": 16000, "instruments": {"PIANO": {"program": 4}}})
    assert cfg.sample_rate == 16000 and cfg.instruments.PIANO.program == 4
    assert cfg.instruments.PIANO.pan == 0.2 and cfg.instruments.MELODY.program == 73


def test_polyphony_cap_keeps_the_earliest_notes():
    from stripes.audio import cap_polyphony

    notes = [(60, 0, 8), (64, 0, 8), (67, 2, 8), (72, 4, 6), (48, 8, 9)]
    kept, dropped = cap_polyphony(notes, 2)
    assert kept == [(60, 0, 8), (64, 0, 8), (48, 8, 9)] and dropped == 2
    assert cap_polyphony(notes, 5) == (sorted(notes, key=lambda n: (n[1], n[0])), 0)
