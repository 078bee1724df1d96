"""``python -m stripes.gpu.check`` (= ``make gpu-check``): the GPU path, measured, in ≤ 8 minutes.

Runs on a CUDA machine without network that received the repository and ``.gpu/`` (written by
``make gpu-pack``). Without CUDA it stops at once (non-zero exit, one-line reason), before installing or
writing anything.

1. installs the carried wheels into ``.gpu/site`` (``pip --no-index --no-deps``; the machine's own
   PyTorch and Lightning are used as they are, the project from ``src/``), unpacks the data into
   ``.gpu/data`` (``$STRIPES_DATA``) and preprocesses it for the paper profile in the background;
2. section 1: CUDA attention vs float64 (``stripes.gpu.correctness``);
3. section 2: attention benchmark, section 3: training throughput and K runs per GPU
   (``stripes.gpu.throughput``, reusing ``stripes.bench``);
4. section 4: the paper-scale spot check (``stripes.gpu.spot``) in the time left;
5. section 5: the projected wall time of the paper grid (``stripes.gpu.projection``);
and writes ``outputs/gpu_check/REPORT.md`` + one CSV per table + ``check.json``. A section that
fails is recorded (with its error) and the others still run. Options: ``--budget`` seconds
(default 470), ``--sections 1 2 3 4 5``, ``--pack .gpu``, ``--out outputs/gpu_check``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_PACK = PROJECT_ROOT / ".gpu"
DEFAULT_OUT = Path("outputs/gpu_check")
DEFAULT_BUDGET_S = 470.0
EVAL_RESERVE_S = 90.0     # evaluation of the three spot-check runs (val, test16, test64) + report
TRAIN_STARTUP_S = 35.0    # Hydra + K processes importing torch, loading data, first compilations
NEEDS_CUDA = ("make gpu-check needs a CUDA GPU: {why}. Nothing was installed or written. Run it on "
              "the GPU machine with the repository and .gpu/ (written here by `make gpu-pack`).")


def require_cuda() -> str:
    """The GPU's name, or SystemExit with a clear message (no torch, or no CUDA device)."""
    try:
        import torch
    except ImportError as err:
        raise SystemExit(NEEDS_CUDA.format(why=f"{sys.executable} cannot import torch ({err})")) from None
    if not torch.cuda.is_available():
        raise SystemExit(NEEDS_CUDA.format(
            why=f"torch {torch.__version__} on {socket.gethostname()} sees no CUDA device"))
    return torch.cuda.get_device_name(0)


def prepare(pack: Path, log=print) -> dict:
    """Install the carried wheels, unpack the data; set PYTHONPATH and STRIPES_DATA. Returns facts."""
    manifest_path = pack / "MANIFEST.json"
    wheels = sorted((pack / "wheels").glob("*.whl"))
    archive = pack / "data.tar.gz"
    if not manifest_path.is_file() or not wheels or not archive.is_file():
        raise SystemExit(f"make gpu-check: {pack} is incomplete (MANIFEST.json, wheels/*.whl and data.tar.gz "
                         "expected); run `make gpu-pack` on a machine with network and carry the folder")
    site = pack / "site"
    started = time.perf_counter()
    got = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                          "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, wheels)],
                         capture_output=True, text=True)
    if got.returncode != 0:
        raise SystemExit(f"make gpu-check: installing the wheels of {pack / 'wheels'} failed:\n{got.stderr[-3000:]}")
    paths = [str(PROJECT_ROOT / "src"), str(site)]
    sys.path[:0] = [p for p in paths if p not in sys.path]
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in paths]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + inherited)
    data = pack / "data"
    manifest = json.loads(manifest_path.read_text())
    if not (data / ".complete").is_file():
        with tarfile.open(archive) as tar:
            tar.extractall(data, filter="data")
        (data / ".complete").write_text(manifest.get("data", {}).get("sha256", ""))
    os.environ["STRIPES_DATA"] = str(data.resolve())
    log(f"[gpu-check] {len(wheels)} wheels installed into {site}, data in {data} "
        f"({time.perf_counter() - started:.1f} s)")
    return {"wheels": [w.name for w in wheels], "data": str(data)}


class Stages:
    """Runs named stages against a deadline; records status, seconds and errors (never raises)."""

    def __init__(self, budget_s: float):
        self.start = time.perf_counter()
        self.deadline = self.start + budget_s
        self.records: list[dict] = []

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def run(self, name: str, fn, needs_s: float = 0.0):
        if self.left() < needs_s:
            self.records.append({"name": name, "status": "skipped", "seconds": 0.0,
                                 "note": f"{self.left():.0f} s left of the budget, {needs_s:.0f} s needed"})
            return None
        started = time.perf_counter()
        try:
            value = fn()
            self.records.append({"name": name, "status": "ok", "seconds": time.perf_counter() - started, "note": ""})
            return value
        except Exception as err:  # noqa: BLE001 - one failing section must not hide the others
            traceback.print_exc()
            self.records.append({"name": name, "status": "failed", "seconds": time.perf_counter() - started,
                                 "note": f"{type(err).__name__}: {str(err)[:300]}"})
            return None


def _save(frame, path: Path) -> None:
    if frame is not None:
        frame.to_csv(path, index=False)


def _release_workers() -> None:
    """End joblib's reusable loky workers (each holds a CUDA context) before the spot check."""
    try:
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)
    except Exception:  # noqa: BLE001 - nothing to release
        pass


def start_preprocess(out: Path) -> subprocess.Popen:
    """``stripes.data.preprocess profile=paper`` in the background, logging to out/preprocess.log."""
    log = open(out / "preprocess.log", "w")  # noqa: SIM115 - the child writes to it until it ends
    return subprocess.Popen([sys.executable, "-m", "stripes.data.preprocess", "profile=paper"],
                            stdout=log, stderr=subprocess.STDOUT)


def warm_kernels(timeout_s: float = 240.0) -> "pd.DataFrame":
    """Stage 0: compile + autotune every fused-kernel key in parallel processes (one per key)."""
    import pandas as pd
    from joblib import Parallel, delayed

    from stripes.gpu.correctness import kernel_keys, warm_kernel

    keys = kernel_keys()
    seconds = Parallel(n_jobs=len(keys), backend="loky", timeout=timeout_s)(
        delayed(warm_kernel)(f, dv, dtype) for f, dv, dtype in keys)
    return pd.DataFrame([{"F": f, "Dv": dv, "dtype": dtype, "seconds": s} for (f, dv, dtype), s in zip(keys, seconds)])


def paper_tokens():
    """(steps per epoch, epochs, tokens(steps)): the paper profile's training tokens after a number of
    optimisation steps (batch × curriculum-cropped length), from its config and its data."""
    from functools import partial

    from stripes.bench.training import _config
    from stripes.data.datamodule import build_datamodule
    from stripes.gpu.projection import training_tokens

    cfg = _config("paper", "nope", "linear")
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    length = 16 * int(cfg.data.beats_per_bar) * int(cfg.data.ticks_per_quarter)
    cur = cfg.curriculum
    tokens = partial(training_tokens, batch=int(cfg.data.batch_size), full_length=length,
                     start_length=int(cur.start_length), ramp_steps=int(cur.ramp_steps),
                     curriculum=bool(cur.enabled))
    return len(datamodule.train_dataloader()), int(cfg.trainer.max_epochs), tokens


def spot_check(stages: Stages, out: Path, preprocess: subprocess.Popen | None, results, impl: str = "fla") -> dict:
    """Section 4: wait for the data, train side by side until the budget, evaluate, compare
    (``impl``: the linear attention's implementation, ``torch`` when fla's kernels failed)."""
    from stripes.gpu import spot

    if preprocess is not None and preprocess.wait() != 0:
        raise RuntimeError(f"preprocessing the paper data failed; see {out / 'preprocess.log'}")
    train_s = stages.left() - EVAL_RESERVE_S - TRAIN_STARTUP_S
    if train_s < 30:
        raise RuntimeError(f"only {train_s:.0f} s left for training")
    runs_root = out / "runs"
    attention_impl = "auto" if impl == "fla" else impl
    command = spot.train_command(runs_root, train_s, extra=(f"model.attention_impl={attention_impl}",))
    code, wall = spot.run_logged(command, out / "spot_train.log")
    runs = spot.run_summaries(runs_root)
    results.spot_runs = runs
    epochs = int(runs.epochs.min()) if len(runs) else 0
    note = (f"{len(runs)} runs side by side (hydra/launcher=joblib_gpu, n_jobs=3) in {wall:.0f} s wall, "
            f"Lightning max_time {spot.max_time(train_s)} (exit code {code}). ")
    if epochs >= 15:
        note += "All 15 epochs ran."
    else:
        per_epoch = float(runs.s_per_epoch.max()) if epochs else float("nan")
        note += (f"**Only {epochs} of 15 epochs fit** in this check's budget: the schedule is the full "
                 f"15-epoch one, cut short, so the numbers below are not the paper protocol's. Measured "
                 f"{per_epoch:.0f} s per epoch (3 runs side by side) → about {15 * per_epoch / 60:.1f} min "
                 "for the full 15 epochs (the curriculum's first ~6 epochs are cheaper, so this is a lower bound).")
    code_eval, eval_wall = spot.run_logged(spot.evaluate_command(runs_root, out / "results"), out / "spot_eval.log")
    note += f" Evaluation: {eval_wall:.0f} s for {len(runs)} runs (exit code {code_eval})."
    results.spot_note = note
    results.spot = spot.comparison(out / "results")
    return {"wall_s": wall, "eval_s": eval_wall, "runs": len(runs)}


def projection(results, spot_facts: dict) -> None:
    """Section 5 from sections 3b and 4."""
    import pandas as pd

    from stripes.gpu import projection as proj

    runs = results.spot_runs
    if results.concurrency is None or runs is None or not len(runs) or not spot_facts:
        raise RuntimeError("needs section 3's K-per-GPU throughput and section 4's spot check")
    aggregate = dict(zip(results.concurrency.K, results.concurrency.aggregate_tokens_per_s))
    steps_per_epoch, epochs, tokens = paper_tokens()
    full = tokens(epochs * steps_per_epoch)
    trained = float(runs.global_step.apply(lambda steps: tokens(int(steps))).mean())
    figures = dict(spot_wall_s=spot_facts["wall_s"], spot_tokens=trained, run_tokens=full, n_side=len(runs),
                   aggregate=aggregate, eval_s_per_run=spot_facts["eval_s"] / max(1, spot_facts["runs"]))
    rows = [proj.grid_hours(k, gpus, **figures) for gpus in (1, 8) for k in sorted(aggregate)]
    results.projection = pd.DataFrame(rows)
    results.projection_note = (
        f"From the spot check ({len(runs)} runs side by side, {spot_facts['wall_s']:.0f} s wall for "
        f"{trained / 1e6:.1f} M training tokens per run; a full run is {epochs} × {steps_per_epoch} steps = "
        f"{full / 1e6:.1f} M tokens, curriculum included), the K-per-GPU throughput of section 3 and "
        f"{figures['eval_s_per_run']:.0f} s of evaluation per run (stripes.gpu.projection). 8 GPUs: the "
        "grid split evenly, one sweep per GPU.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stripes.gpu.check", description=__doc__.splitlines()[0])
    parser.add_argument("--pack", type=Path, default=DEFAULT_PACK)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for the whole check")
    parser.add_argument("--sections", type=int, nargs="+", default=[1, 2, 3, 4, 5], choices=[1, 2, 3, 4, 5])
    args = parser.parse_args(argv)
    gpu = require_cuda()
    stages = Stages(args.budget)
    facts = prepare(args.pack)
    args.out.mkdir(parents=True, exist_ok=True)
    # CPU work, in the background while the GPU sections run
    preprocess = start_preprocess(args.out) if 4 in args.sections else None

    import torch

    from stripes.gpu import correctness, throughput
    from stripes.gpu.report import CheckResults, render
    from stripes.machine import machine_description
    from stripes.nn import fla_attention

    fla_attention.fla_available.cache_clear()
    impls = ("fla", "torch") if fla_attention.fla_available() else ("torch",)
    results = CheckResults(machine=f"{gpu}; {machine_description()}; fla "
                                   f"{'available' if impls[0] == 'fla' else '**not importable**'}")
    stages.records.append({"name": "setup", "status": "ok", "seconds": time.perf_counter() - stages.start,
                           "note": f"{len(facts['wheels'])} wheels"})
    if impls[0] == "fla":
        results.compile = stages.run("0 compile fla kernels", warm_kernels, needs_s=30)
        if results.compile is None:  # fla broken or too slow to compile here: measure the rest without it
            impls = ("torch",)
            results.machine += "; fla's kernels did not compile in time (see stages): PyTorch path only"
    if 1 in args.sections:
        got = stages.run("1 correctness", lambda: correctness.run("cuda", impls=impls), needs_s=20)
        if got is not None:
            results.correctness, results.long_sequence = got
    if 2 in args.sections:
        results.attention = stages.run("2 attention", lambda: throughput.attention_rows(impls=impls), needs_s=40)
    if 3 in args.sections:
        results.training = stages.run("3 training", lambda: throughput.training_rows(impls=impls), needs_s=30)
        torch.cuda.empty_cache()
        results.concurrency = stages.run("3 K per GPU", lambda: throughput.concurrency_rows(impl=impls[0]),
                                         needs_s=60)
    _release_workers()
    spot_facts = {}
    if 4 in args.sections:
        spot_facts = stages.run("4 spot check", lambda: spot_check(stages, args.out, preprocess, results, impls[0]),
                                needs_s=EVAL_RESERVE_S + TRAIN_STARTUP_S + 30) or {}
    if 5 in args.sections:
        stages.run("5 projection", lambda: projection(results, spot_facts))
    if preprocess is not None and preprocess.poll() is None:
        preprocess.terminate()
    for name in ("compile", "correctness", "long_sequence", "attention", "training", "concurrency", "spot_runs", "spot",
                 "projection"):
        _save(getattr(results, name), args.out / f"{name}.csv")
    results.stages = stages.records
    (args.out / "REPORT.md").write_text(render(results))
    (args.out / "check.json").write_text(json.dumps({"stages": stages.records, "machine": results.machine,
                                                     "impls": impls, **facts}, indent=2, default=str))
    total = time.perf_counter() - stages.start
    print(f"[gpu-check] wrote {args.out / 'REPORT.md'} in {total:.0f} s", flush=True)


if __name__ == "__main__":
    main()
