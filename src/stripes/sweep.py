"""Sweep bookkeeping: every job's outcome, a summary at the end, a non-zero exit on failure.

A failing training job is recorded as ``failed`` in its run directory and the sweep goes on
(issue 14, item 6); :class:`SweepSummary`, a Hydra callback (``hydra.callbacks`` in
conf/train.yaml), makes the sweep *say* so. ``on_multirun_start`` gives the sweep an id
(``$STRIPES_SWEEP_ID``, inherited by joblib workers and Slurm jobs), each job writes its outcome
to ``<sweep dir>/.sweeps/<id>/job-<n>.json`` (:func:`record_job`, called by ``stripes.train``),
and ``on_multirun_end`` prints one line per failed job, writes ``summary.json`` beside the
records and exits with status 1 when any job failed. A job that dies without a record (killed
by the OS) makes its launcher raise, which Hydra also reports as a non-zero exit.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from stripes.atomic import atomic_write_text

SWEEP_ENV = "STRIPES_SWEEP_ID"
RECORDS = ".sweeps"
FAILED = ("failed", "refused")


def records_dir(sweep_dir: str | Path, sweep_id: str) -> Path:
    return Path(sweep_dir) / RECORDS / sweep_id


def record_job(sweep_dir: str | Path, job_num: int, outcome: dict[str, Any]) -> Path | None:
    """Write this job's outcome (status, run_dir, error) when running inside a summarised sweep."""
    sweep_id = os.environ.get(SWEEP_ENV)
    if not sweep_id:
        return None
    keep = ("status", "outcome", "run_dir", "error", "failed_step")
    record = {k: outcome[k] for k in keep if k in outcome} | {"job": int(job_num)}
    return atomic_write_text(records_dir(sweep_dir, sweep_id) / f"job-{int(job_num)}.json",
                             json.dumps(record, indent=1, default=str))


def summarize(sweep_dir: str | Path, sweep_id: str) -> dict[str, Any]:
    """{"jobs": n, "counts": {outcome: n}, "failed": [records]} from the jobs' records."""
    folder = records_dir(sweep_dir, sweep_id)
    records = []
    for path in sorted(folder.glob("job-*.json"), key=lambda p: int(p.stem.split("-")[1])):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as err:
            records.append({"job": path.stem, "outcome": "failed", "error": f"{path}: unreadable ({err})"})
    counts: dict[str, int] = {}
    for record in records:
        counts[record.get("outcome", "?")] = counts.get(record.get("outcome", "?"), 0) + 1
    failed = [r for r in records if r.get("outcome") in FAILED]
    return {"sweep_id": sweep_id, "jobs": len(records), "counts": counts, "failed": failed}


def summary_line(summary: dict[str, Any]) -> str:
    """'[sweep] 2 of 8 jobs failed (5 trained, 1 skipped)' — `make reproduce` reads this line."""
    others = ", ".join(f"{n} {k}" for k, n in sorted(summary["counts"].items()) if k not in FAILED)
    return (f"[sweep] {len(summary['failed'])} of {summary['jobs']} jobs failed"
            + (f" ({others})" if others else ""))


class SweepSummary(Callback):
    """Hydra callback: sweep id at the start; summary and exit status 1 on failures at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ[SWEEP_ENV] = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_id = os.environ.get(SWEEP_ENV)
        if not sweep_id:
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        summary = summarize(sweep_dir, sweep_id)
        atomic_write_text(records_dir(sweep_dir, sweep_id) / "summary.json",
                          json.dumps(summary, indent=1, default=str))
        print(summary_line(summary), flush=True)
        for record in summary["failed"]:
            print(f"[sweep]   job {record.get('job')}: {record.get('run_dir')}: {record.get('error')}",
                  flush=True)
        if summary["failed"]:
            raise SystemExit(1)
