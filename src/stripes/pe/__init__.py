"""Positional encodings as feature transforms on queries and keys (spec §4). See ``base.py``."""

from . import fstripe, fstripe1, nope, rope, ropepool, spe  # noqa: F401  (registers the PEs)
from .base import PositionalEncoding, build_pe, pe_names, register_pe

__all__ = ["PositionalEncoding", "build_pe", "pe_names", "register_pe"]
