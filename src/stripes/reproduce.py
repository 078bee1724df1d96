"""`make reproduce`: the whole chain, stage by stage, then `outputs/REPORT.md`.

Each stage is one of the project's own entry points run as a subprocess (so a crash in one stage
is recorded and the report still names it), timed, and logged to
`<outputs>/reproduce/stages.json`. Re-running after an interruption is cheap because every stage
skips finished work itself: the data cache is keyed by its config hash, a run directory whose
`run_info.json` says "finished" is not trained again, and evaluation skips evaluated runs.

Usage::

    python -m stripes.reproduce profile=cpu            # the CPU reproduction (about an hour)
    python -m stripes.reproduce profile=cpu full=true  # + the [F] rows and the unpooled ablation
    python -m stripes.reproduce profile=smoke          # the same chain, tiny, in minutes
    python -m stripes.reproduce profile=paper          # paper scale (GPU)
    python -m stripes.reproduce profile=smoke data_root=/path/to/data only=[data,table1]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from stripes.machine import machine_description
from stripes.report import write_report


@dataclass
class Stage:
    """One step of the chain: a name, the `python -m ...` arguments, and whether it is fatal."""

    name: str
    args: list[str]
    fatal: bool = False
    status: str = "pending"
    seconds: float = 0.0
    log: str = ""


def build_stages(cfg: DictConfig) -> list[Stage]:
    """The ordered stages for `cfg.profile`, each with the overrides every entry point shares.

    Training sweeps: `cfg.experiments`, then `cfg.full_experiments` when `cfg.full` is true (the
    optional [F] rows and ablation that do not fit the cpu profile's time budget; issue 15). Each
    is `"<experiment> [override ...]"`: the overrides narrow that sweep (e.g. `pe=nope` trains the
    NoPE row of fstripe_table1 only; a later full sweep skips those finished runs)."""
    data = [f"data.root={cfg.data_root}"] if cfg.data_root else []
    profile = [f"profile={cfg.profile}"]
    extra = list(cfg.extra_overrides)
    stages = [
        Stage("data", ["stripes.data.preprocess", *profile, *data], fatal=True),
        Stage("table1", ["stripes.data.table1", *list(cfg.table1_overrides), *data]),
        Stage("toy", ["stripes.toy", *list(cfg.toy_overrides)]),
    ]
    experiments = list(cfg.experiments) + (list(cfg.full_experiments) if cfg.full else [])
    names = [str(sweep).split()[0] for sweep in experiments]
    for sweep in experiments:
        experiment, *overrides = str(sweep).split()
        narrowed = overrides and names.count(experiment) > 1  # e.g. train:fstripe_table1(pe=nope)
        name = f"train:{experiment}" + (f"({' '.join(overrides)})" if narrowed else "")
        stages.append(
            Stage(
                name,
                ["stripes.train", "-m", *profile, f"experiment={experiment}", *overrides, *data, *extra],
            )
        )
    stages += [
        Stage("evaluate", ["stripes.evaluate", *profile, *data]),
        Stage("tables", ["stripes.eval.tables"]),
        Stage("plots", ["stripes.eval.plots"]),
        Stage("site", ["stripes.site"]),
    ]
    if cfg.only:
        wanted = set(cfg.only)
        stages = [s for s in stages if s.name in wanted or s.name.split(":")[0] in wanted]
    return stages


def stage_estimates(cfg: DictConfig, previous: Path) -> tuple[dict[str, float], str]:
    """Expected seconds per stage name, and where they come from: the last run of this profile
    (``stages.json``, stages that finished "ok"), else ``conf/reproduce.yaml`` ``estimates_min``."""
    if previous.exists():
        try:
            record = json.loads(previous.read_text())
        except (OSError, json.JSONDecodeError):
            record = {}
        if record.get("profile") == cfg.profile:
            seconds = {s["name"]: float(s["seconds"]) for s in record.get("stages", []) if s.get("status") == "ok"}
            if seconds:
                return seconds, f"the last {cfg.profile} run"
    table = (cfg.get("estimates_min") or {}).get(str(cfg.profile)) or {}
    return {name: 60.0 * float(minutes) for name, minutes in table.items()}, "conf/reproduce.yaml estimates_min"


def progress_line(done: list[Stage], pending: list[Stage], elapsed: float, estimates: dict[str, float],
                  source: str) -> str:
    """One line after a stage: its outcome, the total elapsed time and an estimate of what remains."""
    stage = done[-1]
    n = len(done) + len(pending)
    line = (f"[reproduce] {len(done)}/{n} {stage.name}: {stage.status} in {stage.seconds / 60:.1f} min; "
            f"elapsed {elapsed / 60:.1f} min")
    if pending:
        known = [estimates[s.name] for s in pending if s.name in estimates]
        guess = f"~{sum(known) / 60:.0f} min" if known else "unknown"
        missing = len(pending) - len(known)
        line += (f"; {len(pending)} stage(s) left, {guess} remaining (from {source}"
                 + (f"; {missing} stage(s) without an estimate" if known and missing else "") + ")")
    return line


def run_stage(stage: Stage, log_dir: Path, cwd: Path) -> None:
    """Run one stage, streaming its output to a log file; record status and wall time."""
    log_path = log_dir / f"{stage.name.replace(':', '_')}.log"
    stage.log = str(log_path)
    command = [sys.executable, "-m", *stage.args]
    print(f"[reproduce] {stage.name}: {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    stage.seconds = time.perf_counter() - start
    stage.status = "ok" if code == 0 else f"failed (exit {code})"
    sweep = sweep_summary_line(log_path) if code else None  # "[sweep] k of n jobs failed (...)"
    if sweep:
        stage.status += ": " + sweep.removeprefix("[sweep] ")
    if code != 0:  # the progress line (main) reports the status; point at the log
        print(f"[reproduce] {stage.name}: see the log {log_path}", flush=True)


def sweep_summary_line(log_path: Path) -> str | None:
    """The last summary line that `stripes.sweep.SweepSummary` printed into a stage's log."""
    lines = [ln.strip() for ln in Path(log_path).read_text(errors="replace").splitlines()
             if ln.startswith("[sweep] ") and " jobs failed" in ln]
    return lines[-1] if lines else None


CONFIG = Path(__file__).resolve().parents[2] / "conf" / "reproduce.yaml"


def load_config(argv: list[str]) -> DictConfig:
    """`conf/reproduce.yaml` with `key=value` arguments merged in (OmegaConf dotlist syntax).

    Not a Hydra app on purpose: `profile` here is a plain string handed to every stage, while in
    Hydra's search path `profile` is a config group."""
    cfg = OmegaConf.load(CONFIG)
    unknown = [a for a in argv if a.split("=", 1)[0] not in cfg]
    if unknown:
        raise SystemExit(f"unknown reproduce option(s) {unknown}; known: {sorted(cfg)}")
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(argv))


def main(argv: list[str] | None = None) -> None:
    cfg = load_config(sys.argv[1:] if argv is None else argv)
    cwd = Path.cwd()
    outputs = cwd / "outputs"  # every stage writes below ./outputs
    log_dir = outputs / "reproduce"
    log_dir.mkdir(parents=True, exist_ok=True)
    stages = build_stages(cfg)
    estimates, source = stage_estimates(cfg, log_dir / "stages.json")
    started = time.time()
    for i, stage in enumerate(stages):
        run_stage(stage, log_dir, cwd)
        print(progress_line(stages[:i + 1], stages[i + 1:], time.time() - started, estimates, source),
              flush=True)
        if stage.fatal and stage.status != "ok":
            print(f"[reproduce] stopping: stage '{stage.name}' is required by all later stages; "
                  f"see {stage.log}", file=sys.stderr)
            break
    total = time.time() - started
    record = {
        "profile": cfg.profile,
        "machine": machine_description(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "total_seconds": total,
        "stages": [asdict(s) for s in stages],
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    (log_dir / "stages.json").write_text(json.dumps(record, indent=2))
    report = write_report(outputs, record)
    print(f"[reproduce] done in {total / 60:.1f} min; report: {report}")
    if any(s.status.startswith("failed") for s in stages):
        sys.exit(1)


if __name__ == "__main__":
    main()
