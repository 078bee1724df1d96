"""Toy study of [S] §III-E (Figs. 2 and 3): how RoPE, F-StrIPE1 and RoPEPool mix content and context.

D = 2, one head: every point is a unit 2-vector [cos ψ, sin ψ] (content ψ) with a scalar position
ξ = its context angle. N context angles C_k = kπ/(N+1) lie evenly in (0, π); each point's content is
ψ ~ N(C_k, σ²) and its context ξ = C_k. One point of the middle context is the query. For each
frequency f in [0, 1], the score of the query against every point is the dot product of the PE
features, computed through the same modules the model uses (``stripes.pe``: RoPE = ``RotaryPE``,
F-StrIPE1 unpooled with the pair sharing f, RoPEPool), which equal eq. (24), (25), (26):
    RoPE       a = cos((ψ_q − ψ_j) + f(ξ_q − ξ_j))
    F-StrIPE1  a = cos(ψ_q − ψ_j) · cos(f(ξ_q − ξ_j))
    RoPEPool   a = 2 cos(ψ_q + fξ_q − π/4) · cos(ψ_j + fξ_j − π/4)
Fig. 3 shows the scores min–max normalised per panel (the paper's colour bar runs 0…1), keys
ordered by ψ from large (left) to small (right). The asymmetry CSV compares each key's score with the
score of its mirror image about the query (ψ_q − δ, ξ_q − Δ for a key at ψ_q + δ, ξ_q + Δ): zero for
RoPE and F-StrIPE1 (functions of the differences only), non-zero for RoPEPool.
σ, the number of points and the placement of C_k are not given in the paper; defaults below.

Run: ``python -m stripes.toy`` (``make toy``) → outputs/figures/fig2_toy_data.png,
outputs/figures/fig3_toy_scores.png, outputs/toy/asymmetry.csv, outputs/toy/scores.csv.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from stripes.pe.fstripe1 import FStripe1
from stripes.pe.rope import RotaryPE
from stripes.pe.ropepool import RoPEPool

METHODS = {"rope": "RoPE", "fstripe1": "F-StrIPE1", "ropepool": "RoPEPool"}


def make_dataset(num_contexts: int = 5, points_per_context: int = 5, sigma: float = 0.1, seed: int = 0):
    """Content angles ψ, context angles ξ, context index per point, and the query's index."""
    rng = np.random.default_rng(seed)
    centres = np.arange(1, num_contexts + 1) * math.pi / (num_contexts + 1)
    context = np.repeat(np.arange(num_contexts), points_per_context)
    psi = rng.normal(centres[context], sigma)
    xi = centres[context]
    middle = num_contexts // 2
    members = np.flatnonzero(context == middle)
    query = int(members[np.argmin(np.abs(psi[members] - centres[middle]))])
    return psi, xi, context, query, centres


def build_toy_pe(method: str, f: float) -> torch.nn.Module:
    """The D = 2, H = 1, P = 1 module of a method with its frequency set to f."""
    if method == "rope":
        pe = RotaryPE(1, 2, 1, per_head=True, learnable=True)
    elif method == "fstripe1":
        pe = FStripe1(1, 2, 1, pooled=False)  # both dimensions share f, as eq. (25) assumes
    elif method == "ropepool":
        pe = RoPEPool(1, 2, 1)
    else:
        raise ValueError(f"stripes/toy.py: unknown method {method!r}; use one of {list(METHODS)}")
    pe = pe.double()
    with torch.no_grad():
        pe.frequencies.fill_(f)
    return pe


def toy_scores(method: str, psi, xi, query: int, f: float) -> np.ndarray:
    """Scores a_qj of the query against every point: dot products of the PE features."""
    pe = build_toy_pe(method, f)
    psi_t = torch.as_tensor(psi, dtype=torch.float64)
    x = torch.stack([torch.cos(psi_t), torch.sin(psi_t)], -1).view(1, -1, 1, 2)
    pos = torch.as_tensor(xi, dtype=torch.float64).view(1, -1, 1)
    with torch.no_grad():
        feats = pe(x, pos)[0, :, 0]  # (P, F)
    return (feats @ feats[query]).numpy()


def score_grid(method: str, psi, xi, query: int, freqs) -> np.ndarray:
    return np.stack([toy_scores(method, psi, xi, query, float(f)) for f in freqs])


def mirror_asymmetry(method: str, psi, xi, query: int, f: float) -> float:
    """max_j |a(q, j) − a(q, mirror of j about q)| over the data set's keys."""
    mirror_psi = 2 * psi[query] - psi
    mirror_xi = 2 * xi[query] - xi
    both_psi = np.concatenate([psi, mirror_psi])
    both_xi = np.concatenate([xi, mirror_xi])
    scores = toy_scores(method, both_psi, both_xi, query, f)
    n = len(psi)
    return float(np.max(np.abs(scores[:n] - scores[n:])))


def plot_dataset(path: Path, psi, xi, context, query, centres) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    arc = np.linspace(0, math.pi, 200)
    ax.plot(np.cos(arc), np.sin(arc), color="0.8", lw=1)
    colours = plt.cm.tab10(np.arange(len(centres)))
    for k, c in enumerate(centres):
        ax.plot([0, 1.15 * math.cos(c)], [0, 1.15 * math.sin(c)], ls="--", lw=0.8, color=colours[k])
        ax.text(1.22 * math.cos(c), 1.22 * math.sin(c), f"$C_{k + 1}$", ha="center", va="center", fontsize=9)
        sel = context == k
        ax.scatter(np.cos(psi[sel]), np.sin(psi[sel]), s=22, color=colours[k], zorder=3,
                   label=f"context {k + 1}: ψ ~ N(C_{k + 1}, σ²)")
    ax.scatter([math.cos(psi[query])], [math.sin(psi[query])], marker="*", s=260, color="gold",
               edgecolor="black", zorder=4, label="query $x_q$")
    ax.set_aspect("equal")
    ax.set_xlim(-1.35, 1.35)
    ax.set_ylim(-0.05, 1.35)
    ax.axis("off")
    ax.legend(fontsize=6, loc="lower center", ncol=2, bbox_to_anchor=(0.5, -0.32))
    ax.set_title("Fig. 2 (toy data): content angle ψ on the unit circle, context ξ = cluster mean", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def plot_scores(path: Path, grids: dict, freqs, psi, context, query) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(-psi)  # large ψ on the left, as in the paper's figure
    fig, axes = plt.subplots(1, len(grids), figsize=(4.2 * len(grids), 3.6), sharey=True)
    for ax, (method, grid) in zip(axes, grids.items()):
        g = grid[:, order]
        g = (g - g.min()) / (g.max() - g.min() + 1e-12)
        im = ax.imshow(g, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1,
                       extent=(-0.5, len(order) - 0.5, freqs[0], freqs[-1]))
        ax.set_title(METHODS[method], fontsize=10)
        ax.set_xticks(range(len(order)))
        labels = ["★" if j == query else "•" for j in order]
        ax.set_xticklabels(labels, fontsize=7)
        for tick, j in zip(ax.get_xticklabels(), order):
            tick.set_color("tab:blue" if context[j] == context[query] else "tab:green")
        ax.set_xlabel("keys ordered by ψ (blue: same context, green: other)", fontsize=7)
        ax.set_yticks(np.round(np.linspace(0, 1, 9), 2))
    axes[0].set_ylabel("frequency f")
    fig.colorbar(im, ax=axes, label="$a_{qj}$ (min–max per panel)", shrink=0.9)
    fig.suptitle("Fig. 3 (toy): score of the query against every point as f goes 0 → 1", fontsize=9)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def run(out_dir: str | Path = "outputs", num_contexts: int = 5, points_per_context: int = 5,
        sigma: float = 0.1, num_f: int = 101, seed: int = 0) -> dict:
    """Make both figures and the CSVs; returns their paths."""
    import pandas as pd

    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "toy").mkdir(parents=True, exist_ok=True)
    psi, xi, context, query, centres = make_dataset(num_contexts, points_per_context, sigma, seed)
    freqs = np.linspace(0.0, 1.0, num_f)
    grids = {m: score_grid(m, psi, xi, query, freqs) for m in METHODS}

    paths = {"fig2": out / "figures" / "fig2_toy_data.png", "fig3": out / "figures" / "fig3_toy_scores.png",
             "asymmetry": out / "toy" / "asymmetry.csv", "scores": out / "toy" / "scores.csv"}
    plot_dataset(paths["fig2"], psi, xi, context, query, centres)
    plot_scores(paths["fig3"], grids, freqs, psi, context, query)

    score_rows = [{"method": METHODS[m], "f": float(f), "key": j, "psi": float(psi[j]), "xi": float(xi[j]),
                   "same_context": bool(context[j] == context[query]), "is_query": j == query,
                   "score": float(grids[m][i, j])}
                  for m in METHODS for i, f in enumerate(freqs) for j in range(len(psi))]
    pd.DataFrame(score_rows).to_csv(paths["scores"], index=False)

    rows = []
    for m in METHODS:
        scale = float(np.max(np.abs(grids[m])))
        per_f = [mirror_asymmetry(m, psi, xi, query, float(f)) for f in freqs]
        for f in (0.0, 0.25, 0.5, 0.75, 1.0):
            value = mirror_asymmetry(m, psi, xi, query, f)
            rows.append({"method": METHODS[m], "f": f, "max_abs_asymmetry": value,
                         "relative_asymmetry": value / scale})
        rows.append({"method": METHODS[m], "f": "max over f", "max_abs_asymmetry": max(per_f),
                     "relative_asymmetry": max(per_f) / scale})
    pd.DataFrame(rows).to_csv(paths["asymmetry"], index=False)
    summary = {r["method"]: r["relative_asymmetry"] for r in rows if r["f"] == "max over f"}
    print("[toy] relative left/right asymmetry (max over f): "
          + ", ".join(f"{k} {v:.3g}" for k, v in summary.items()))
    for name, path in paths.items():
        print(f"[toy] wrote {name}: {path}")
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Toy study of [S] §III-E: Figs. 2-3 + asymmetry CSV")
    parser.add_argument("--out-dir", default="outputs")
    parser.add_argument("--num-contexts", type=int, default=5)
    parser.add_argument("--points-per-context", type=int, default=5)
    parser.add_argument("--sigma", type=float, default=0.1, help="std of the content angles (radians)")
    parser.add_argument("--num-f", type=int, default=101, help="number of f rows in [0, 1]")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run(args.out_dir, args.num_contexts, args.points_per_context, args.sigma, args.num_f, args.seed)


if __name__ == "__main__":
    main()
