"""Benchmarks: `python -m stripes.bench` runs the attention and training benchmarks."""
