"""Weights & Biases logging for evaluation (offline by default, off when disabled).

* :func:`log_run_metrics` writes a run's validation and test metrics into that run's own W&B record,
  resumed by the id that training stored in ``run_info.json`` (``wandb_id``; ``wandb_run_id`` is also
  accepted). Without an id a new record is created and its id written back to ``run_info.json``.
  With ``cfg.media_windows`` (split -> count) it also logs those kept windows (the same window ids
  for every run, so runs compare side by side) as ``wandb.Audio`` + ``wandb.Image`` (pianoroll) +
  the MIDI file, written to ``<run_dir>/eval/media/`` with the binarization of best validation CS.
* :func:`log_summary` writes the tables (as ``wandb.Table``) and figures (as ``wandb.Image``) into one
  summary run per experiment (id ``summary-<experiment>``, resumed on every call), and the demo
  grid (:func:`sample_table`: a row per (context, window), audio + pianoroll per method).

Both do nothing when ``cfg.enabled`` is false or ``WANDB_MODE=disabled`` (tests), and always call
``wandb.finish()``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pandas as pd

from stripes.runs import read_run_info, write_run_info


def wandb_enabled(cfg) -> bool:
    return bool(cfg is not None and cfg.get("enabled", False)) and os.environ.get("WANDB_MODE") != "disabled"


def _init(cfg, run_id: str, directory: Path, name: str, job_type: str, group: str | None = None):
    import wandb

    directory.mkdir(parents=True, exist_ok=True)
    return wandb.init(project=cfg.get("project", "stripes"), entity=cfg.get("entity"), id=run_id,
                      resume="allow", dir=str(directory), name=name, job_type=job_type, group=group,
                      mode=os.environ.get("WANDB_MODE", cfg.get("mode", "offline")),
                      reinit="finish_previous")


def log_run_metrics(run_dir: str | Path, rows: pd.DataFrame, cfg) -> str | None:
    """Log ``rows`` (one run's store rows) as ``eval/<split>/<binarization>/<metric>`` summaries."""
    if not wandb_enabled(cfg) or rows.empty:
        return None
    import wandb

    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    run_id = info.get("wandb_id") or info.get("wandb_run_id")
    if not run_id:
        run_id = secrets.token_hex(4)  # W&B ids: lowercase letters and digits
        info["wandb_id"] = run_id
        write_run_info(run_dir, info)
    run = None
    try:
        run = _init(cfg, run_id, run_dir, run_dir.name, "train",
                    group=str(rows["experiment"].iloc[0]))
        values = {f"eval/{r.split}/{r.binarization}/{r.metric}": r.value for r in rows.itertuples()}
        run.summary.update(values)
        media = run_media(run_dir, rows, cfg)
        for _, item in media.iterrows():
            key = f"samples/{item['split']}-song{item['song']:03d}-t{item['start']}"
            values[f"{key}/audio"] = wandb.Audio(item["audio"], caption=item["caption"])
            values[f"{key}/pianoroll"] = wandb.Image(item["png"], caption=item["caption"])
            run.save(item["midi"], base_path=str(run_dir), policy="now")
        run.log(values)
    finally:
        if run is not None:
            wandb.finish()
    return run_id


def run_media(run_dir: Path, rows: pd.DataFrame, cfg) -> pd.DataFrame:
    """Write MIDI, pianoroll and audio of the run's ``cfg.media_windows`` kept windows (sample index
    rows, :data:`stripes.eval.samples.INDEX_COLUMNS`, plus a caption); empty when none configured.

    The binarization is the one with the best mean validation CS among ``rows`` (threshold when the
    run has no validation rows)."""
    from stripes.eval.samples import run_data_root, write_run_samples

    windows = dict(cfg.get("media_windows") or {})
    if not windows:
        return pd.DataFrame()
    val = rows[(rows["split"] == "val") & (rows["metric"] == "CS")] if "split" in rows else rows.iloc[:0]
    binarization = (str(val.sort_values("value", ascending=False)["binarization"].iloc[0])
                    if not val.empty else "threshold")
    media = pd.DataFrame(write_run_samples(
        run_dir, run_dir / "eval" / "media", binarization, float(cfg.get("threshold", 0.5)),
        float(cfg.get("merge_gap_sixteenths", 1)), run_dir.name, run_data_root(run_dir), windows,
        cfg.get("audio")))
    if not media.empty:
        media["caption"] = [f"{run_dir.name} · song {r.song:03d} from tick {r.start} ({r.bars} bars, "
                            f"{binarization})" for r in media.itertuples()]
    return media


def sample_table(samples: pd.DataFrame):
    """The demo grid as a ``wandb.Table``: one row per (context, split, window); per method (ground
    truth first) an audio column and a pianoroll column. ``samples`` has the sample index columns."""
    import wandb

    from stripes.eval.samples import GROUND_TRUTH

    methods = sorted(set(samples["method"]), key=lambda m: (m != GROUND_TRUTH, m))
    columns = ["context", "window"] + [f"{m} {kind}" for m in methods for kind in ("audio", "pianoroll")]
    table = wandb.Table(columns=columns)
    for (context, split, song, start), cells in samples.groupby(["context", "split", "song", "start"], sort=True):
        by_method = {r.method: r for r in cells.itertuples()}
        row = [context, f"{split} song {int(song):03d} tick {int(start)}"]
        for m in methods:
            r = by_method.get(m)
            row += ([wandb.Audio(r.audio, caption=f"{m} / {context}"), wandb.Image(r.png)] if r is not None
                    else [None, None])
        table.add_data(*row)
    return table


def log_summary(experiment: str, tables: dict[str, pd.DataFrame], images: dict[str, Path], cfg,
                directory: str | Path = "outputs", samples: pd.DataFrame | None = None) -> str | None:
    """One summary run per experiment carrying tables, figures and (when given) the sample grid."""
    if not wandb_enabled(cfg):
        return None
    import wandb

    run_id = f"summary-{experiment}".replace("/", "-")
    run = None
    try:
        run = _init(cfg, run_id, Path(directory), f"summary {experiment}", "summary")
        payload = {}
        for name, frame in tables.items():
            payload[f"tables/{name}"] = wandb.Table(dataframe=frame.astype(str))
        for name, path in images.items():
            if Path(path).exists():
                payload[f"figures/{name}"] = wandb.Image(str(path))
        if samples is not None and not samples.empty:
            payload["samples/grid"] = sample_table(samples)
        if payload:
            run.log(payload)
    finally:
        if run is not None:
            wandb.finish()
    return run_id
