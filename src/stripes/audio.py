"""Audio for pianorolls: a stereo mix through a General MIDI soundfont, written as ogg/vorbis.

Every sample window and every ``harmonize`` output is rendered from the project's own binary
pianorolls (one (T, 128) roll per named track, ``ticks_per_quarter`` ticks per quarter note), never
by reading a MIDI file back. Each track is synthesized on its own instrument (``conf/audio/
default.yaml``: melody on a flute, the bridge on soft strings, the piano on an acoustic grand),
panned with the constant-power law and mixed; the mix is scaled to a target RMS level, lowered
when needed so that its peak stays below ``peak_dbfs`` (no clipping).

Renderers, chosen by ``renderer``:

* ``soundfont``: symusic's synthesizer (pinned 0.5.9; 0.6.0's ``render`` returns no array) with
  pretty_midi's bundled ``TimGM6mb.sf2`` (General MIDI, shipped in pretty_midi's wheel: no system
  library and nothing downloaded);
* ``additive``: a few decaying harmonics per note, no dependency;
* ``auto`` (default): ``soundfont``, falling back to ``additive`` with one log line saying why.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

CONFIG = Path(__file__).resolve().parents[2] / "conf" / "audio" / "default.yaml"


class AudioError(RuntimeError):
    """Audio cannot be rendered or written (bad configuration, unwritable path, bad input)."""


@dataclass
class Rendered:
    """One written clip: its path, length (seconds), level (dBFS of peak and RMS) and renderer."""

    path: Path
    seconds: float
    peak_dbfs: float
    rms_dbfs: float
    renderer: str


def load_audio_config(cfg=None) -> DictConfig:
    """``conf/audio/default.yaml`` with the keys of ``cfg`` (a mapping or DictConfig) merged over it."""
    base = OmegaConf.load(CONFIG)
    return OmegaConf.merge(base, cfg) if cfg is not None else base


def default_soundfont() -> Path:
    """pretty_midi's bundled General MIDI soundfont ``TimGM6mb.sf2``."""
    import pretty_midi

    return Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"


def dbfs(x: float) -> float:
    """Amplitude (full scale 1.0) -> dBFS; -inf for silence."""
    return float(20 * np.log10(x)) if x > 0 else float("-inf")


def clip_level(audio: np.ndarray) -> tuple[float, float]:
    """(peak, RMS) of a (N, C) clip in dBFS, over all samples and channels."""
    audio = np.asarray(audio, dtype=np.float64)
    if audio.size == 0:
        return float("-inf"), float("-inf")
    return dbfs(float(np.abs(audio).max())), dbfs(float(np.sqrt(np.mean(audio ** 2))))


# -- synthesis of one track: notes (pitch, start tick, end tick) -> mono float32 -------------------


@functools.lru_cache(maxsize=4)
def _synthesizer(soundfont: str, sample_rate: int):
    from symusic import Synthesizer

    return Synthesizer(soundfont, sample_rate=sample_rate)


def soundfont_track(notes, ticks_per_quarter: int, bpm: float, program: int, velocity: int,
                    n_samples: int, sample_rate: int, soundfont: str) -> np.ndarray:
    """Mono (n_samples,) float32 rendering of one track through the soundfont (symusic)."""
    from symusic import Note, Score, Tempo, Track

    score = Score(int(ticks_per_quarter))
    score.tempos.append(Tempo(0, qpm=float(bpm)))
    track = Track("part", program=int(program))
    for pitch, start, end in notes:
        track.notes.append(Note(int(start), int(end - start), int(pitch), int(velocity)))
    score.tracks.append(track)
    stereo = _synthesizer(str(soundfont), int(sample_rate)).render(score, stereo=True)
    stereo = np.asarray(stereo, dtype=np.float32)
    if stereo.ndim != 2 or not np.isfinite(stereo).all():
        raise AudioError(f"symusic returned {type(stereo).__name__} of shape {stereo.shape}")
    mono = stereo.mean(axis=0)
    out = np.zeros(n_samples, dtype=np.float32)
    out[:min(n_samples, mono.size)] = mono[:n_samples]
    return out


HARMONICS = {  # relative amplitudes of harmonics 1, 2, ... and decay time constant (s)
    "sustained": (np.array([1.0, 0.35, 0.12, 0.05]), None),  # flute-like: held while the note lasts
    "struck": (np.array([1.0, 0.5, 0.25, 0.12, 0.06]), 0.6),  # piano-like: exponential decay
}


def additive_track(notes, ticks_per_quarter: int, bpm: float, program: int, velocity: int,
                   n_samples: int, sample_rate: int) -> np.ndarray:
    """Mono (n_samples,) float32: each note a sum of harmonics with a 5 ms attack, 50 ms release.

    GM programs 0–31 (pianos, chromatic percussion, organs, guitars) decay like a struck string;
    the rest are sustained."""
    amplitudes, decay = HARMONICS["struck" if program < 32 else "sustained"]
    seconds_per_tick = 60.0 / bpm / ticks_per_quarter
    out = np.zeros(n_samples, dtype=np.float64)
    attack, release = int(0.005 * sample_rate), int(0.05 * sample_rate)
    gain = 0.25 * velocity / 127
    for pitch, start, end in notes:
        first = int(round(start * seconds_per_tick * sample_rate))
        held = max(int(round((end - start) * seconds_per_tick * sample_rate)), attack + 1)
        last = min(first + held + release, n_samples)
        if first >= last:
            continue
        t = np.arange(last - first) / sample_rate
        freq = 440.0 * 2 ** ((pitch - 69) / 12)
        ks = np.arange(1, len(amplitudes) + 1)[:, None]
        amps = np.where(ks[:, 0] * freq < sample_rate / 2, amplitudes, 0.0)[:, None]
        wave = (amps * np.sin(2 * np.pi * freq * ks * t)).sum(axis=0)
        envelope = np.minimum(np.arange(t.size) / attack, 1.0)
        if decay is not None:
            envelope = envelope * np.exp(-t / decay)
        tail = np.arange(t.size) - held
        envelope = envelope * np.clip(1 - tail / release, 0, 1)
        out[first:last] += gain * envelope * wave
    return out.astype(np.float32)


_FALLBACK_LOGGED: set[str] = set()


def _log_fallback(reason: str) -> None:
    if reason not in _FALLBACK_LOGGED:
        _FALLBACK_LOGGED.add(reason)
        print(f"[audio] soundfont renderer unavailable ({reason}); using additive synthesis", flush=True)


def synthesize(notes, ticks_per_quarter: int, bpm: float, program: int, velocity: int,
               n_samples: int, cfg: DictConfig) -> tuple[np.ndarray, str]:
    """One track as mono float32 and the name of the renderer used (see the module docstring)."""
    if cfg.renderer not in ("auto", "soundfont", "additive"):
        raise AudioError(f"conf/audio renderer={cfg.renderer!r}: expected auto, soundfont or additive")
    if cfg.renderer != "additive":
        soundfont = Path(cfg.soundfont) if cfg.get("soundfont") else default_soundfont()
        try:
            if not soundfont.exists():
                raise AudioError(f"soundfont {soundfont} not found")
            return soundfont_track(notes, ticks_per_quarter, bpm, program, velocity, n_samples,
                                   int(cfg.sample_rate), str(soundfont)), "soundfont"
        except Exception as err:  # import error, unreadable soundfont, a synthesizer that fails
            if cfg.renderer == "soundfont":
                raise AudioError(f"soundfont rendering failed: {type(err).__name__}: {err}") from err
            _log_fallback(f"{type(err).__name__}: {err}")
    return additive_track(notes, ticks_per_quarter, bpm, program, velocity, n_samples,
                          int(cfg.sample_rate)), "additive"


def cap_polyphony(notes, max_voices: int) -> tuple[list, int]:
    """Keep at most ``max_voices`` notes sounding at once (earliest onsets first, then lower pitch);
    returns the kept notes and how many were dropped. An untrained model can hold half the keyboard
    for minutes, which costs the synthesizer minutes and sounds like noise either way."""
    kept, ends, dropped = [], [], 0
    for pitch, start, end in sorted(notes, key=lambda n: (n[1], n[0])):
        ends = [e for e in ends if e > start]
        if len(ends) >= max_voices:
            dropped += 1
            continue
        ends.append(end)
        kept.append((pitch, start, end))
    return kept, dropped


# -- the mix ------------------------------------------------------------------------------------


def pan_gains(pan: float) -> tuple[float, float]:
    """Constant-power pan law: pan in [-1, 1] -> (left, right) gains with left² + right² = 1."""
    angle = (float(np.clip(pan, -1, 1)) + 1) * np.pi / 4
    return float(np.cos(angle)), float(np.sin(angle))


def normalize(mix: np.ndarray, target_rms_dbfs: float, peak_dbfs: float) -> np.ndarray:
    """Scale to the target RMS, or less so that the peak stays at ``peak_dbfs``; silence stays 0."""
    peak = float(np.abs(mix).max()) if mix.size else 0.0
    if peak == 0:
        return mix
    rms = float(np.sqrt(np.mean(mix.astype(np.float64) ** 2)))
    scale = min(10 ** (target_rms_dbfs / 20) / rms, 10 ** (peak_dbfs / 20) / peak)
    return (mix * scale).astype(np.float32)


def render_tracks(tracks: dict[str, np.ndarray], ticks_per_quarter: int, bpm: float,
                  cfg=None) -> tuple[np.ndarray, str]:
    """Stereo mix (N, 2) float32 of named binary (T, 128) rolls, and the renderer used.

    N = T ticks at ``bpm`` plus ``tail_seconds``, at ``sample_rate``. Instruments, pans and gains
    come from ``cfg.instruments`` by track name (``default`` for other names); each track sounds at
    most ``cfg.max_voices`` notes at once (:func:`cap_polyphony`). Raises AudioError
    for rolls that are not (T, 128) or do not share T, or a non-positive tempo."""
    from stripes.eval.samples import roll_to_notes

    cfg = load_audio_config(cfg)
    if not tracks:
        raise AudioError("no track to render")
    lengths = {name: np.shape(roll) for name, roll in tracks.items()}
    if any(len(s) != 2 or s[1] != 128 for s in lengths.values()) or len({s[0] for s in lengths.values()}) != 1:
        raise AudioError(f"tracks must be (T, 128) rolls of one length T, got {lengths}")
    if not bpm > 0:
        raise AudioError(f"tempo must be positive, got {bpm} bpm")
    n_ticks = next(iter(lengths.values()))[0]
    rate = int(cfg.sample_rate)
    n_samples = int(round((n_ticks * 60.0 / bpm / ticks_per_quarter + cfg.tail_seconds) * rate))
    mix = np.zeros((n_samples, 2), dtype=np.float32)
    used = set()
    for name, roll in tracks.items():
        part = cfg.instruments.get(name.upper(), cfg.instruments.default)
        notes, dropped = cap_polyphony(roll_to_notes(roll), int(cfg.max_voices))
        if dropped:
            print(f"[audio] {name}: {dropped} notes above {cfg.max_voices} voices not rendered "
                  "(the MIDI keeps them)", flush=True)
        if not notes:
            continue
        mono, renderer = synthesize(notes, ticks_per_quarter, bpm, int(part.program), int(part.velocity),
                                    n_samples, cfg)
        used.add(renderer)
        left, right = pan_gains(part.pan)
        mix += float(part.gain) * mono[:, None] * np.array([left, right], dtype=np.float32)
    mix = normalize(mix, float(cfg.target_rms_dbfs), float(cfg.peak_dbfs))
    return mix, "+".join(sorted(used)) or "none (silent)"


WRITE_BLOCK = 65536  # frames per write (python-soundfile issue: long single vorbis writes segfault)


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int) -> Path:
    """Write (N, C) float audio as ogg/vorbis, atomically (a temporary file, then a rename)."""
    import soundfile

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        audio = np.clip(np.asarray(audio, dtype=np.float32), -1, 1)
        channels = 1 if audio.ndim == 1 else audio.shape[1]
        with soundfile.SoundFile(str(tmp), "w", int(sample_rate), channels, format="OGG", subtype="VORBIS") as f:
            for start in range(0, len(audio), WRITE_BLOCK):  # one big write crashes libsndfile's vorbis
                f.write(audio[start:start + WRITE_BLOCK])
        os.replace(tmp, path)
    except Exception as err:
        if tmp.is_file():
            tmp.unlink()
        raise AudioError(f"{path}: cannot write audio ({type(err).__name__}: {err})") from err
    return path


def render_to_file(path: str | Path, tracks: dict[str, np.ndarray], ticks_per_quarter: int, bpm: float,
                   cfg=None) -> Rendered:
    """Render ``tracks`` (see :func:`render_tracks`) to ``path`` (.ogg); returns what was written."""
    cfg = load_audio_config(cfg)
    mix, renderer = render_tracks(tracks, ticks_per_quarter, bpm, cfg)
    written = write_audio(path, mix, int(cfg.sample_rate))
    peak, rms = clip_level(mix)
    return Rendered(written, mix.shape[0] / int(cfg.sample_rate), peak, rms, renderer)
