"""`python -m stripes.bench` (= `make bench`): the attention benchmark, then the training benchmark.

    python -m stripes.bench [--out outputs/bench] [--steps 3] [--only training|attention]
                            [--shapes paper cpu] [--threads N]

Writes outputs/bench/attention.* (stripes.bench.attention, when present),
outputs/bench/training.{csv,md} and outputs/bench/audio.{csv,md} (stripes.bench.audio: sample rendering).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util

from stripes.bench import training


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stripes.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/bench", help="output folder (default outputs/bench)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per setting")
    parser.add_argument("--only", choices=("attention", "training", "audio"), default=None)
    parser.add_argument("--shapes", nargs="+", default=list(training.SHAPES), choices=list(training.SHAPES))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice; 1 on a busy shared CPU)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.only in (None, "attention"):
        if importlib.util.find_spec("stripes.bench.attention") is None:
            print("[bench] stripes.bench.attention is not available; skipping the attention benchmark")
        else:
            importlib.import_module("stripes.bench.attention").run(args.out)
    if args.only in (None, "training"):
        training.run(args.out, steps=args.steps, shapes=tuple(args.shapes))
    if args.only in (None, "audio"):
        from stripes.bench import audio

        audio.run(args.out)


if __name__ == "__main__":
    main()
