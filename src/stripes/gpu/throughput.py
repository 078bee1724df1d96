"""GPU check, sections 2 and 3: the attention block and training throughput, K runs per GPU.

Section 2 times ``stripes.bench.attention.make_step`` (the benchmark's own attention block: PE
transform, φ, causal attention; B = 1, H = 4, D = 128, TIME positions) on CUDA at T = 1024, 4096,
16384, forward + backward and forward alone (inference, as for the 64-bar windows): causal SDPA in
bf16 (the flash kernel) against linear attention, fused (``fla``) and PyTorch (``torch``), the PE
under bf16 autocast. Time = best of ≥ 5 synchronised calls after a warm-up call (compilation and
autotuning excluded); memory = ``torch.cuda.max_memory_allocated`` during one call above what was
allocated before it (the inputs are not counted).

Section 3 times ``stripes.bench.training.make_training_step`` at the paper shape (B = 8, T = 1024,
d_model 512; bf16 autocast as ``trainer=gpu``) for NoPE, RoPE(C), F-StrIPE1, RoPEPool, linear
(fused and PyTorch) and softmax; then K = 1, 2, 4, 8 processes (joblib's loky backend, the engine
of Hydra's joblib launcher) each train the same model side by side on the one GPU: every process
builds its model, warms up, waits at a file barrier until all K are ready, then counts its steps for
``duration`` seconds. Aggregate tokens/s = Σ over processes.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from stripes.bench import training
from stripes.bench.attention import LABELS, make_step, time_call

ATTENTION_LENGTHS = (1024, 4096, 16384)
ATTENTION_PES = ("nope", "ropepool", "fstripe1")  # F = 128, 64, 2
TRAINING_PES = ("nope", "rope_c", "fstripe1", "ropepool")
PAPER_BATCH, PAPER_LENGTH = 8, 1024
KS = (1, 2, 4, 8)


def _timed_cuda(step, min_total_s: float = 0.3, repeats: int = 20) -> tuple[float, float, float]:
    """(best ms, median ms, peak MiB above the pre-call allocation) of a CUDA step."""
    def synced():
        step()
        torch.cuda.synchronize()

    best, median = time_call(synced, min_total_s, repeats, min_repeats=5)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    synced()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return 1e3 * best, 1e3 * median, peak


def attention_rows(lengths=ATTENTION_LENGTHS, pes=ATTENTION_PES, impls=("fla", "torch")) -> pd.DataFrame:
    """Section 2: one row per (T, mode, method, impl) with time, memory and speed-up over SDPA."""
    rows = []
    for t in lengths:
        for backward in (True, False):
            mode = "fwd+bwd" if backward else "fwd"
            variants = [("sdpa", "flash (bf16)")] + [(pe, impl) for pe in pes for impl in impls]
            for method, impl in variants:
                step, width = make_step(method, t, device="cuda", impl="torch" if method == "sdpa" else impl,
                                        amp=torch.bfloat16, backward=backward)
                best, median, peak = _timed_cuda(step)
                rows.append({"T": t, "mode": mode, "method": method, "label": LABELS[method], "impl": impl,
                             "F": width, "time_ms": best, "time_ms_median": median, "peak_mib": peak})
                print(f"[gpu-check] attention T={t:5d} {mode:7s} {LABELS[method]:14s} {impl:12s} "
                      f"{best:8.2f} ms {peak:8.1f} MiB", flush=True)
                del step
            torch.cuda.empty_cache()
    frame = pd.DataFrame(rows)
    sdpa = frame[frame.method == "sdpa"].set_index(["T", "mode"]).time_ms
    frame["speedup_vs_sdpa"] = [sdpa[(r.T, r.mode)] / r.time_ms for r in frame.itertuples()]
    return frame


def training_rows(pes=TRAINING_PES, steps: int = 5, impls=("fla", "torch")) -> pd.DataFrame:
    """Section 3a: tokens/s and peak GPU memory of one process at the paper shape, linear attention
    (each implementation in ``impls``) and softmax."""
    rows = []
    variants = [("linear", impl) for impl in impls] + [("softmax", "-")]
    for pe in pes:
        for attention, impl in variants:
            extra = [f"model.attention_impl={impl}"] if attention == "linear" else []
            cfg = training._config("paper", pe, attention, *extra)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            seconds = training.time_training_step(cfg, PAPER_BATCH, PAPER_LENGTH, steps, "cuda", amp=torch.bfloat16)
            rows.append({"pe": pe, "label": str(cfg.pe.label), "attention": attention, "impl": impl,
                         "batch": PAPER_BATCH, "T": PAPER_LENGTH, "step_ms": 1e3 * seconds,
                         "tokens_per_s": PAPER_BATCH * PAPER_LENGTH / seconds,
                         "peak_gib": torch.cuda.max_memory_allocated() / 2**30})
            print(f"[gpu-check] training {pe:9s} {attention:7s} {impl:5s} {1e3 * seconds:7.1f} ms/step "
                  f"{PAPER_BATCH * PAPER_LENGTH / seconds:10.0f} tokens/s", flush=True)
    frame = pd.DataFrame(rows)
    softmax = frame[frame.attention == "softmax"].set_index("pe").tokens_per_s
    frame["ratio_vs_softmax"] = [r.tokens_per_s / softmax[r.pe] for r in frame.itertuples()]
    return frame


def concurrent_worker(pe: str, impl: str, barrier_dir: str, k: int, duration: float, threads: int,
                      timeout: float = 120.0, profile: str = "paper", length: int = PAPER_LENGTH) -> dict:
    """One of K processes: build, warm up, wait for all K at the file barrier, train ``duration`` s."""
    torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = training._config(profile, pe, "linear", f"model.attention_impl={impl}")
    amp = torch.bfloat16 if device == "cuda" else None
    batch = int(cfg.data.batch_size)
    step = training.make_training_step(cfg, batch, length, device, amp)
    step()
    step()
    Path(barrier_dir, f"ready-{os.getpid()}").touch()
    waited = time.perf_counter()
    while len(list(Path(barrier_dir).glob("ready-*"))) < k:
        if time.perf_counter() - waited > timeout:
            raise TimeoutError(f"concurrent_worker: {k} processes not ready after {timeout:.0f} s")
        time.sleep(0.005)
    waited = time.perf_counter() - waited
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < duration:
        step()
        steps += 1
    elapsed = time.perf_counter() - start
    return {"steps": steps, "seconds": elapsed, "tokens_per_s": steps * batch * length / elapsed,
            "waited_s": waited}


def concurrency_rows(ks=KS, pe: str = "ropepool", impl: str = "fla", duration: float = 6.0,
                     cores: int | None = None, profile: str = "paper", length: int = PAPER_LENGTH) -> pd.DataFrame:
    """Section 3b: aggregate training tokens/s with K processes on one GPU, for each K."""
    from joblib import Parallel, delayed

    cores = cores or os.cpu_count() or 1
    rows = []
    for k in ks:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="stripes-barrier-") as barrier:
            results = Parallel(n_jobs=k, backend="loky")(
                delayed(concurrent_worker)(pe, impl, barrier, k, duration, max(1, cores // k), profile=profile,
                                           length=length) for _ in range(k))
        total = sum(r["tokens_per_s"] for r in results)
        rows.append({"K": k, "pe": pe, "impl": impl, "aggregate_tokens_per_s": total,
                     "per_run_tokens_per_s": total / k, "steps": sum(r["steps"] for r in results),
                     "duration_s": duration, "wall_s": time.perf_counter() - started})
        print(f"[gpu-check] K={k}: aggregate {total:10.0f} tokens/s ({total / k:9.0f} per run)", flush=True)
    frame = pd.DataFrame(rows)
    frame["speedup_vs_k1"] = frame.aggregate_tokens_per_s / frame.aggregate_tokens_per_s.iloc[0]
    return frame
