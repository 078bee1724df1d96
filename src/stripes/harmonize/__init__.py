"""`python -m stripes.harmonize`: harmonize a user's melody with a trained run (see `cli`)."""

from stripes.harmonize.cli import HarmonizeError, chord_table, harmonize, main

__all__ = ["HarmonizeError", "chord_table", "harmonize", "main"]
