"""Attention benchmark: forward+backward time and peak memory of one attention block.

Shape of the paper: B = 1, H = 4, head dim D = 128, T = 256 … 8192. The timed block is what differs
between methods: from q, k, v (B,T,H,D) and positions (TIME, P = 1), the PE transform
(``pe.forward_qk``), φ = elu+1 and causal ``linear_attention``, or causal SDPA on q, k, v (PyTorch's
fused CPU kernel; no PE). The q/k/v/out projections (identical for every method) are excluded.

Measurements (one process, one run, so ratios compare like with like on a shared machine):
  * time: best of 5 rounds of forward + backward, methods interleaved round-robin
    (gradients w.r.t. q, k, v and PE parameters);
  * peak memory: the process's resident-set high-water mark during one forward+backward minus the
    resident set just before it. Linux's VmHWM is reset through /proc/self/clear_refs before each
    measurement; during it glibc serves allocations ≥128 KiB with mmap (mallopt M_MMAP_THRESHOLD) and
    malloc_trim runs first, so freed tensors leave the resident set and cannot hide a later peak.
    Inputs are allocated before the baseline and not counted. Floor ≈ a few MiB of noise.
  * the float32 matmul rate (2048×2048 @ 2048×2048, best of 5) measured in the same run, and each
    linear row's achieved GFLOP/s = (forward + backward FLOPs of the chunked algorithm as
    implemented, ``chunked_attention_flops(..., backward=True)``) / time as a fraction of it (the
    elementwise PE/φ work is not counted, so the fraction is conservative);
  * a chunk-size sweep (NoPE, T = 2048/8192, C = 32…256, plus the Python-loop-over-chunks form with
    autograd) that chose ``DEFAULT_CHUNK_SIZE``;
  * every timing at torch's default thread count and again at 1 thread: on a CPU shared with other
    jobs, two OpenMP threads stall on each other for the many mid-sized ops of linear attention
    while SDPA's single fused kernel suffers less, so both are reported.
Times are the best of 5 round-robin rounds over all methods (least disturbed by other
processes); medians are in the CSV.
``python -m stripes.bench.attention [--quick]`` writes outputs/bench/attention.{csv,md,png} and
attention_chunks.csv.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stripes.nn.attention import (
    DEFAULT_CHUNK_SIZE, causal_linear_attention_loop, chunked_attention_flops, elu_plus_one, linear_attention,
)
from stripes.machine import machine_info
from stripes.pe import build_pe

B, H, D = 1, 4, 128
LENGTHS = [256, 512, 1024, 2048, 4096, 8192]
QUICK_LENGTHS = [256, 1024]
METHODS = ["nope", "rope_a", "rope_b", "rope_c", "ropepool", "fstripe1", "fstripe", "spe"]
LABELS = {"nope": "NoPE", "rope_a": "RoPE(A)", "rope_b": "RoPE(B)", "rope_c": "RoPE(C)",
          "ropepool": "RoPEPool", "fstripe1": "F-StrIPE1", "fstripe": "F-StrIPE", "spe": "SPE",
          "sdpa": "softmax (SDPA)"}
#: Every PE is held to the same targets (issue 9): ≥ 10× causal SDPA at the longest T on one thread,
#: peak memory linear in T.
TARGET_METHODS = METHODS
SPEEDUP_TARGET = 10.0
#: The matmul-rate target (issue 3: ≥ 30 % at the longest T) concerns the PEs it was set for; the
#: counted FLOPs are the attention's alone, so for the reduced-width PEs (F-StrIPE1 F = 2, F-StrIPE
#: 16, SPE 64) whose own elementwise work dominates, the fraction is reported but not judged.
MATMUL_TARGET_METHODS = ["nope", "rope_a", "rope_b", "rope_c", "ropepool"]
MATMUL_TARGET = 0.3
#: least-squares slope of log(peak memory) against log(T), over T >= 1024, above which the memory
#: is not called linear (1 = linear, 2 = quadratic; the margin absorbs the few-MiB noise of the
#: RSS probe at small T, where single doublings measured 1.2 to 2.6)
LINEAR_MEMORY_MAX_SLOPE = 1.25

_LIBC = None


def _libc():
    """glibc through ctypes (None elsewhere)."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
        except OSError:
            _LIBC = False
    return _LIBC


M_MMAP_THRESHOLD = -3


def _status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def peak_memory_bytes(fn) -> int | None:
    """Resident-set high-water mark of one call of ``fn`` above the resident set before it (Linux).

    During the call glibc serves blocks ≥128 KiB with mmap, so freed tensors leave the resident set
    and cannot hide a later peak; afterwards the threshold is set to 32 MiB (glibc's own upper
    value) so that the rest of the process does not pay for mmap on every allocation.
    """
    libc = _libc()
    gc.collect()
    if libc:
        libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
        libc.malloc_trim(0)
    try:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # resets VmHWM to the current VmRSS
        except OSError:
            return None
        base = _status_bytes("VmRSS")
        fn()
        hwm = _status_bytes("VmHWM")
    finally:
        if libc:
            libc.mallopt(M_MMAP_THRESHOLD, 32 * 2 ** 20)
    return None if base is None or hwm is None else max(hwm - base, 0)


def time_call(fn, min_total_s: float, max_repeats: int, min_repeats: int = 3) -> tuple[float, float]:
    """(best, median) wall time of ``fn`` after one warm-up call. The best of n is the estimate
    least disturbed by other processes on a shared CPU; ratios use it, the median is reported."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < max_repeats and (len(times) < min_repeats or time.perf_counter() - start < min_total_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def make_step(method: str, t: int, chunk_size: int = DEFAULT_CHUNK_SIZE, loop: bool = False,
              device: str = "cpu", impl: str = "torch", amp: torch.dtype | None = None,
              backward: bool = True):
    """A closure running one attention block; returns (step, feature width F).

    ``backward=False`` times the forward alone, without autograd (inference, e.g. 64-bar windows).
    ``device``/``impl``/``amp`` serve the GPU check (``stripes.gpu.check``): the linear attention's
    implementation (``linear_attention``: ``torch`` | ``fla``) and an autocast dtype (bf16): the PE
    and SDPA run under autocast, φ and the linear-attention sums in float32, as in the model.
    """
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, t, H, D, device=device, requires_grad=backward) for _ in range(3))
    grad = torch.randn(B, t, H, D, device=device)
    pos = torch.arange(t, dtype=torch.float32, device=device).view(1, t, 1)
    autocast = lambda: torch.autocast(device, dtype=amp, enabled=amp is not None)  # noqa: E731
    grad_mode = torch.enable_grad if backward else torch.inference_mode
    if method == "sdpa":
        def step():
            q.grad = k.grad = v.grad = None
            with grad_mode(), autocast():
                y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                   is_causal=True)
            if backward:
                y.transpose(1, 2).backward(grad.to(y.dtype))
        return step, D
    pe = build_pe(method, H, D, 1).to(device)

    def step():
        q.grad = k.grad = v.grad = None
        pe.zero_grad(set_to_none=True)
        with grad_mode():
            with autocast():
                qt, kt = pe.forward_qk(q, k, pos)
            qt, kt = qt.float(), kt.float()  # φ = elu + 1 and the sums in float32, as in the model
            if loop:
                y = causal_linear_attention_loop(elu_plus_one(qt), elu_plus_one(kt), v, chunk_size=chunk_size)
            else:
                y = linear_attention(qt, kt, v, causal=True, chunk_size=chunk_size, impl=impl, dtype=amp,
                                     feature_map="elu")
        if backward:
            y.backward(grad)
    return step, pe.out_dim


def run_chunk_sweep(lengths, chunks, min_total_s, threads):
    rows = []
    for t in lengths:
        for c in chunks:
            step, _ = make_step("nope", t, chunk_size=c)
            rows.append({"threads": threads, "T": t, "chunk": c, "form": "vectorised",
                         "time_ms": 1e3 * time_call(step, min_total_s, 10)[0]})
        step, _ = make_step("nope", t, chunk_size=64, loop=True)
        rows.append({"threads": threads, "T": t, "chunk": 64, "form": "python loop (autograd)",
                     "time_ms": 1e3 * time_call(step, min_total_s, 10)[0]})
        print(f"[bench.attention] threads={threads} chunk sweep T={t}: " + ", ".join(
            f"{r['chunk']}{'L' if 'loop' in r['form'] else ''}={r['time_ms']:.0f}ms"
            for r in rows if r["T"] == t), flush=True)
    return rows


def _time_all(lengths, rounds, threads, methods):
    """Round-robin timing: every method once per round, ``rounds`` rounds per length, best and
    median over rounds. Interleaving spreads bursts of load from other processes over all methods
    instead of penalising whichever happened to run during the burst."""
    rows = []
    for t in lengths:
        steps = {}
        for method in list(methods) + ["sdpa"]:
            steps[method] = make_step(method, t)
            steps[method][0]()  # warm-up
        times = {method: [] for method in steps}
        cpu = {method: [] for method in steps}
        for _ in range(rounds):
            for method, (step, _) in steps.items():
                t0, c0 = time.perf_counter(), time.process_time()
                step()
                times[method].append(time.perf_counter() - t0)
                cpu[method].append(time.process_time() - c0)
        for method, (_, width) in steps.items():
            best, median = min(times[method]), statistics.median(times[method])
            rows.append({"threads": threads, "method": method, "label": LABELS[method], "T": t,
                         "F": width, "time_ms": 1e3 * best, "time_ms_median": 1e3 * median,
                         "cpu_ms": 1e3 * min(cpu[method])})
            print(f"[bench.attention] threads={threads} T={t:5d} {LABELS[method]:15s} "
                  f"best {1e3 * best:9.2f} ms  median {1e3 * median:9.2f} ms", flush=True)
        del steps
    return rows


def run(out_dir: str | Path = "outputs/bench", quick: bool = False,
        thread_counts: list[int] | None = None, lengths: list[int] | None = None,
        methods: list[str] | None = None, chunk_sweep: tuple | None = None) -> Path:
    """Run the benchmark and write attention.{csv,md,png} (+ attention_chunks.csv) under out_dir.

    ``thread_counts`` defaults to [torch's default, 1] (just the default if it is 1): on a CPU
    shared with other jobs, one thread can beat two for the many mid-sized ops of linear attention.
    ``lengths``, ``methods`` and ``chunk_sweep`` = (lengths, chunk sizes) override the defaults
    (used by the tests for a tiny run).
    """
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lengths = lengths or (QUICK_LENGTHS if quick else LENGTHS)
    methods = methods or METHODS
    sweep = chunk_sweep or (([1024], [64, 128]) if quick else ([2048, 8192], [32, 64, 128, 256]))
    min_total = 0.3 if quick else 1.0
    default_threads = torch.get_num_threads()
    thread_counts = thread_counts or sorted({default_threads, 1}, reverse=True)
    machine = machine_info()
    load_start = os.getloadavg()
    started = time.time()
    rows, chunk_rows, rates = [], [], {}
    try:
        for threads in thread_counts:  # pass 1: timings, default allocator
            torch.set_num_threads(threads)
            rate = matmul_gflops(1024 if quick else 2048)
            print(f"[bench.attention] {machine}; threads={threads}: matmul {rate:.1f} GFLOP/s; "
                  f"load {os.getloadavg()}", flush=True)
            chunk_rows += run_chunk_sweep(*sweep, min_total, threads)
            rows += _time_all(lengths, 2 if quick else 5, threads, methods)
            rates[threads] = max(rate, matmul_gflops(1024 if quick else 2048))
        load_mid = os.getloadavg()
        torch.set_num_threads(default_threads)
        memory = {}
        for t in lengths:  # pass 2: peak memory (big blocks via mmap during each measurement)
            for method in list(methods) + ["sdpa"]:
                step, _ = make_step(method, t)
                step()
                mem = peak_memory_bytes(step)
                memory[(method, t)] = None if mem is None else mem / 2 ** 20
    finally:
        torch.set_num_threads(default_threads)
    for row in rows:
        row["peak_mem_mib"] = memory[(row["method"], row["T"])]
        row["matmul_gflops"] = rates[row["threads"]]
        if row["method"] != "sdpa":
            flops = B * H * chunked_attention_flops(row["T"], row["F"], D, DEFAULT_CHUNK_SIZE, backward=True)
            seconds = row["time_ms"] / 1e3
            row.update(chunk=DEFAULT_CHUNK_SIZE, gflop=flops / 1e9, gflops=flops / seconds / 1e9,
                       frac_matmul=flops / seconds / 1e9 / rates[row["threads"]])
    frame = pd.DataFrame(rows)
    sdpa = frame[frame.method == "sdpa"].set_index(["threads", "T"]).time_ms
    frame["speedup_vs_sdpa"] = frame.apply(lambda r: sdpa[(r["threads"], r["T"])] / r["time_ms"], axis=1)
    sdpa_cpu = frame[frame.method == "sdpa"].set_index(["threads", "T"]).cpu_ms
    frame["speedup_vs_sdpa_cpu"] = frame.apply(lambda r: sdpa_cpu[(r["threads"], r["T"])] / r["cpu_ms"], axis=1)
    frame = _add_target_columns(frame)
    loads = (load_start, load_mid, os.getloadavg())
    frame.to_csv(out / "attention.csv", index=False)
    chunks = pd.DataFrame(chunk_rows)
    chunks.to_csv(out / "attention_chunks.csv", index=False)
    _plot(frame, out / "attention.png", machine)
    _write_markdown(frame, chunks, out / "attention.md", machine, rates, loads, time.time() - started)
    print(f"[bench.attention] wrote {out / 'attention.csv'}, attention.md, attention.png", flush=True)
    return out / "attention.csv"


def _add_target_columns(frame):
    """``mem_growth``: peak memory at T over peak memory at the previous (half) T of the same method
    and thread count (2.0 = linear); ``mem_loglog_slope``: slope of log memory against log T over
    T ≥ 1024 (1 = linear, 2 = quadratic); ``meets_speedup`` (linear rows at the longest T: speed-up
    ≥ ``SPEEDUP_TARGET``) and ``memory_linear`` (slope ≤ ``LINEAR_MEMORY_MAX_SLOPE``), so the CSV
    alone says which target each PE meets."""
    frame = frame.sort_values(["threads", "method", "T"], kind="stable")
    previous = frame.groupby(["threads", "method"])["peak_mem_mib"].shift(1)
    frame["mem_growth"] = frame["peak_mem_mib"] / previous.where(previous > 0)
    tmax = frame["T"].max()
    linear = frame["method"] != "sdpa"
    frame["meets_speedup"] = (frame["speedup_vs_sdpa"] >= SPEEDUP_TARGET).where(linear & (frame["T"] == tmax))
    big = frame[frame["T"] >= 1024].dropna(subset=["peak_mem_mib"])
    big = big[big["peak_mem_mib"] > 0]
    slope = big.groupby(["threads", "method"]).apply(
        lambda g: float(np.polyfit(np.log2(g["T"]), np.log2(g["peak_mem_mib"]), 1)[0]) if len(g) >= 2 else None)
    frame["mem_loglog_slope"] = [slope.get((th, m)) for th, m in zip(frame["threads"], frame["method"])]
    frame["memory_linear"] = [(None if slope.get((th, m)) is None else bool(slope[(th, m)] <= LINEAR_MEMORY_MAX_SLOPE))
                              if lin else None
                              for th, m, lin in zip(frame["threads"], frame["method"], linear)]
    return frame.sort_index()


def _plot(frame, path: Path, machine: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thread_counts = sorted(frame.threads.unique(), reverse=True)
    fig, axes = plt.subplots(1, 1 + len(thread_counts), figsize=(5.2 * (1 + len(thread_counts)), 4.4))
    for col, threads in enumerate(thread_counts):
        for method, group in frame[frame.threads == threads].groupby("method", sort=False):
            style = dict(marker="o", lw=1.2, ms=3, label=LABELS[method])
            if method == "sdpa":
                style.update(color="black", lw=2.0, ls="--")
            axes[col].plot(group["T"], group["time_ms"], **style)
            if col == 0:
                axes[-1].plot(group["T"], group["peak_mem_mib"], **style)
        axes[col].set_ylabel(f"fwd+bwd time, best of 5 rounds (ms), {threads} thread(s)")
    axes[-1].set_ylabel("peak memory above baseline (MiB)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"One attention block, B=1 H=4 D=128 — {machine['cpu']} ({machine['cores']} cores), "
                 f"torch {machine['torch']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(x, digits=2):
    return "–" if x is None or x != x else f"{x:.{digits}f}"


def _table(frame, lengths, cell) -> list[str]:
    lines = ["| method | " + " | ".join(f"T={t}" for t in lengths) + " |", "|---|" + "---|" * len(lengths)]
    for method, group in frame.groupby("method", sort=False):
        g = group.set_index("T")
        lines.append(f"| {LABELS[method]} | " + " | ".join(cell(g, t) for t in lengths) + " |")
    return lines


def _targets(frame, lengths) -> list[str]:
    tmax = max(lengths)
    lines = []
    targets = frame[frame.method.isin(TARGET_METHODS)]
    from_1024 = targets[targets["T"] >= 1024]
    if len(from_1024):
        worst = from_1024.loc[from_1024.speedup_vs_sdpa.idxmin()]
        lines.append(f"- Faster than SDPA from T = 1024 (every PE): "
                     f"{'met' if worst.speedup_vs_sdpa > 1 else 'MISSED'}; smallest speed-up "
                     f"{worst.speedup_vs_sdpa:.2f}× ({worst.label}, T={int(worst['T'])}).")
    at_max = targets[targets["T"] == tmax]
    lines.append(f"- ≥{SPEEDUP_TARGET:.0f}× faster than SDPA at T = {tmax}, every PE: " + ", ".join(
        f"{r.label} {r.speedup_vs_sdpa:.1f}×" for r in at_max.itertuples())
        + f" → {'met' if (at_max.speedup_vs_sdpa >= SPEEDUP_TARGET).all() else 'MISSED for some'}"
        + ("" if "speedup_vs_sdpa_cpu" not in at_max else "; in CPU time: " + ", ".join(
            f"{r.label} {r.speedup_vs_sdpa_cpu:.1f}×" for r in at_max.itertuples())) + ".")
    judged = at_max[at_max.method.isin(MATMUL_TARGET_METHODS)]
    lines.append(f"- ≥{100 * MATMUL_TARGET:.0f}% of the matmul rate at T = {tmax} (NoPE, RoPE, RoPEPool): "
                 + ", ".join(f"{r.label} {100 * r.frac_matmul:.0f}%" for r in judged.itertuples())
                 + f" → {'met' if (judged.frac_matmul >= MATMUL_TARGET).all() else 'MISSED for some'}.")
    if "memory_linear" in targets:
        verdict = {True: "yes", False: "NO"}
        lines.append(f"- Peak memory linear in T (log-log slope ≤ {LINEAR_MEMORY_MAX_SLOPE} over T ≥ 1024): "
                     + ", ".join(f"{r.label} {verdict.get(r.memory_linear, 'not measured')} "
                                 f"({_fmt(r.mem_loglog_slope)})"
                                                for r in at_max.itertuples())
                     + f" → {'met' if (at_max.memory_linear == True).all() else 'MISSED or not measured for some'}.")  # noqa: E712
    return lines


def _write_markdown(frame, chunks, path: Path, machine, rates, loads, seconds) -> None:
    lengths = sorted(frame["T"].unique())
    load_txt = ", ".join(f"{name} {tuple(round(x, 2) for x in load)}"
                         for name, load in zip(["start", "after timings", "end"], loads))
    lines = [
        "# Attention benchmark (one attention block, forward + backward)",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, "
        f"{machine['platform']}; torch threads per table below.",
        f"Load average (1/5/15 min): {load_txt}. The CPU is shared with other jobs: compare ratios "
        "within one table (same run, same thread count).",
        "Plain float32 matmul (2048², best of 5, max of start/end of each pass): "
        + ", ".join(f"**{rate:.1f} GFLOP/s at {th} thread(s)**" for th, rate in rates.items())
        + f". Run time {seconds:.0f} s. Chunk size C = {DEFAULT_CHUNK_SIZE}.",
        "",
        "B = 1, H = 4, D = 128, TIME positions. Block = PE transform + φ (elu+1) + causal linear "
        "attention (hand-written chunked backward), or causal SDPA on q, k, v (no PE). Projections "
        "excluded. Time = best of 5 rounds, methods interleaved round-robin (medians in attention.csv), ms; memory = RSS "
        "high-water mark above the pre-call RSS (MiB, default thread count). GFLOP/s counts the chunked "
        "algorithm as implemented (forward + backward), not the PE's elementwise work.",
    ]
    for threads in sorted(frame.threads.unique(), reverse=True):
        sub = frame[frame.threads == threads]
        lin = sub[sub.method != "sdpa"]
        lines += ["", f"## {threads} thread(s)", "", "Time (ms) / peak memory (MiB):", ""]
        lines += _table(sub, lengths, lambda g, t: f"{_fmt(g.time_ms[t], 1)} / {_fmt(g.peak_mem_mib[t], 0)}")
        lines += ["", "Speed-up over causal SDPA (SDPA time / method time):", ""]
        lines += _table(lin, lengths, lambda g, t: f"{g.speedup_vs_sdpa[t]:.2f}×")
        lines += ["", "The same in process CPU time (best of 5; excludes the time this process waited "
                  "for a core, so it moves less with other jobs' load):", ""]
        lines += _table(lin, lengths, lambda g, t: f"{g.speedup_vs_sdpa_cpu[t]:.2f}×")
        lines += ["", f"Achieved GFLOP/s (fraction of the {rates[threads]:.1f} GFLOP/s matmul rate):", ""]
        lines += _table(lin, lengths, lambda g, t: f"{g.gflops[t]:.1f} ({100 * g.frac_matmul[t]:.0f}%)")
        lines += ["", "Targets:", ""] + _targets(sub, lengths)
    if len(lengths) >= 2:
        t1, t2 = lengths[-2], lengths[-1]
        sub = frame[frame.threads == frame.threads.max()]
        ratios = []
        for method, group in sub.groupby("method", sort=False):
            g = group.set_index("T")
            if g.peak_mem_mib[t1]:
                ratios.append(f"{LABELS[method]} {g.peak_mem_mib[t2] / g.peak_mem_mib[t1]:.2f}")
        lines += ["", f"Memory growth T={t1}→{t2} (2.00 = linear, 4.00 = quadratic): " + ", ".join(ratios) + "."]
    lines += ["", "## Chunk size (NoPE, forward+backward, best of ≥3 repeats, ms)", ""]
    sizes = sorted(chunks[chunks.form == "vectorised"].chunk.unique())
    lines += ["| threads | T | " + " | ".join(f"C={c}" for c in sizes) + " | Python loop over chunks, autograd (C=64) |",
              "|---|---|" + "---|" * (len(sizes) + 1)]
    for (threads, t), group in chunks.groupby(["threads", "T"]):
        vec = group[group.form == "vectorised"].set_index("chunk").time_ms
        loop = group[group.form != "vectorised"].time_ms.iloc[0]
        lines.append(f"| {threads} | {t} | " + " | ".join(f"{vec[c]:.0f}" for c in sizes) + f" | {loop:.0f} |")
    lines.append("")
    path.write_text("\n".join(lines))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Attention benchmark (outputs/bench/attention.*)")
    parser.add_argument("--out-dir", default="outputs/bench")
    parser.add_argument("--quick", action="store_true", help="T in {256, 1024}, short repeats")
    parser.add_argument("--threads", type=int, nargs="*", help="thread counts (default: torch's, then 1)")
    args = parser.parse_args(argv)
    run(args.out_dir, quick=args.quick, thread_counts=args.threads)


if __name__ == "__main__":
    main()
