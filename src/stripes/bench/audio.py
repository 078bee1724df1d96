"""Audio rendering benchmark: seconds to write one sample window (MIDI, pianoroll PNG, ogg audio).

``python -m stripes.bench --only audio`` renders a POP909-like 16-bar and 64-bar window (a melody
note per beat, a 4-note piano chord per half-bar, 4 ticks per quarter, 80 bpm) ``repeats`` times
with :func:`stripes.eval.samples.write_sample`, times each part, and projects what rendering adds
to ``make reproduce`` (cpu profile): per selected (method, context) model the ``conf/plots.yaml``
windows, the ground truth once per context, and per evaluated run the ``conf/evaluate.yaml`` W&B
media windows. Writes ``<out>/audio.{csv,md}``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

K, BPM = 4, 80.0
CONF = Path(__file__).resolve().parents[3] / "conf"
CPU_MODELS, CPU_RUNS, CONTEXTS = 36, 108, 4  # cpu profile: (method, context) cells; training runs


def pop909_like(bars: int, seed: int = 0):
    """(melody, bridge, piano) (T, 128) bool rolls with POP909-like density."""
    rng = np.random.default_rng(seed)
    length = bars * 4 * K
    melody, bridge, piano = (np.zeros((length, 128), bool) for _ in range(3))
    for beat in range(0, length, K):
        melody[beat:beat + K - 1, 64 + rng.integers(0, 12)] = True
    for half in range(0, length, 2 * K):
        root = 48 + rng.integers(0, 12)
        piano[half:half + 2 * K - 1, [root, root + 4, root + 7, root + 12]] = True
    return melody, bridge, piano


def time_window(out: Path, bars: int) -> dict:
    """Seconds for the MIDI, the PNG and the audio of one window (separately, then together)."""
    from stripes.audio import render_to_file
    from stripes.eval.samples import plot_pianoroll, write_midi

    melody, bridge, piano = pop909_like(bars)
    tracks = {"MELODY": melody, "BRIDGE": bridge, "PIANO": piano}
    stem = out / f"bench-{bars}bars"
    times = {"bars": bars}
    start = time.perf_counter()
    write_midi(stem.with_suffix(".mid"), tracks, K, BPM)
    times["midi_s"] = time.perf_counter() - start
    start = time.perf_counter()
    plot_pianoroll(stem.with_suffix(".png"), melody, bridge, piano, "bench", K)
    times["png_s"] = time.perf_counter() - start
    start = time.perf_counter()
    rendered = render_to_file(stem.with_suffix(".ogg"), tracks, K, BPM)
    times["audio_s"] = time.perf_counter() - start
    times["audio_length_s"] = rendered.seconds
    times["renderer"] = rendered.renderer
    times["total_s"] = times["midi_s"] + times["png_s"] + times["audio_s"]
    return times


def run(out_dir: str | Path = "outputs/bench", repeats: int = 3) -> pd.DataFrame:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    time_window(out, 16)  # warm-up: imports, font cache, soundfont loading
    rows = [time_window(out, bars) for bars in (16, 64) for _ in range(repeats)]
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "audio.csv", index=False)
    per = frame.groupby("bars")[["midi_s", "png_s", "audio_s", "total_s", "audio_length_s"]].median()
    windows = dict(OmegaConf.load(CONF / "plots.yaml").samples.windows)
    media = dict(OmegaConf.load(CONF / "evaluate.yaml").wandb.media_windows)
    bars_of = {"test16": 16, "test64": 64}
    per_model = sum(n * per.loc[bars_of[s], "total_s"] for s, n in windows.items())
    per_run = sum(n * per.loc[bars_of[s], "total_s"] for s, n in media.items())
    samples_s = (CPU_MODELS + CONTEXTS) * per_model  # + the ground truth once per context
    media_s = CPU_RUNS * per_run
    lines = ["| window | MIDI (s) | PNG (s) | audio (s) | total (s) | audio length (s) | realtime factor |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for bars, r in per.iterrows():
        lines.append(f"| {bars} bars | {r.midi_s:.2f} | {r.png_s:.2f} | {r.audio_s:.2f} | {r.total_s:.2f} | "
                     f"{r.audio_length_s:.0f} | {r.audio_length_s / r.audio_s:.0f}x |")
    lines += ["", f"Median of {repeats} (renderer {frame['renderer'].iloc[0]}). Projected for the cpu "
              f"profile, one process: samples {samples_s / 60:.1f} min ({CPU_MODELS} models + {CONTEXTS} "
              f"ground truths x {windows}), W&B media {media_s / 60:.1f} min ({CPU_RUNS} runs x {media}); "
              f"total {(samples_s + media_s) / 60:.1f} min."]
    (out / "audio.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return frame
