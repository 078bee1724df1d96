"""Contexts: the positional index p_t fed to the positional encoding [S §IV-D, spec §2].

A context turns a window's per-tick chords and keys (`ChordTrack`) into float positions (T, P):
TIME (P = 1), REP (P = 1), REP-causal (P = 1, decision 13), KEY (P = 1), BIN (P = 12). Adding a
context = one module here that calls `register` + one ``conf/context/<name>.yaml``.

For harmonize: `positions_for(name, chord_root, chroma, key_tonic, key_mode, chord_db)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stripes.data.chords import ChordVocabulary, chord_code


@dataclass
class ChordTrack:
    """Per-tick chords and keys of one window."""

    chord_code: np.ndarray  # (T,) chord codes (stripes.data.chords; 0 = no chord)
    key_code: np.ndarray  # (T,) tonic + 12 * mode (0 major, 1 minor)
    vocab: ChordVocabulary

    @classmethod
    def from_chords(cls, chord_root, chroma, key_tonic, key_mode, vocab: ChordVocabulary):
        """From roots (T,) (-1 = no chord), chroma (T, 12), and a key (scalars or (T,))."""
        code = chord_code(chord_root, chroma)
        key = np.broadcast_to(np.asarray(key_tonic) % 12 + 12 * np.asarray(key_mode), code.shape)
        return cls(code, np.asarray(key, dtype=np.int64), vocab)


class Context:
    """Base class: `name`, `pos_dim`, `label`, and `positions(track) -> (T, pos_dim) float32`."""

    name: str = ""
    pos_dim: int = 1
    label: str = ""

    def positions(self, track: ChordTrack) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


CONTEXTS: dict[str, Context] = {}


def register(context: Context) -> Context:
    CONTEXTS[context.name] = context
    return context


def get_context(name: str) -> Context:
    if name not in CONTEXTS:
        raise KeyError(f"unknown context {name!r}; known: {sorted(CONTEXTS)}")
    return CONTEXTS[name]


def positions_for(name: str, chord_root, chroma, key_tonic, key_mode, chord_db) -> np.ndarray:
    """(T, P) float32 positions of context `name` from per-tick chords and the key.

    chord_root (T,) with -1 = no chord; chroma (T, 12) binary; key_tonic/key_mode scalars or (T,)
    (mode 0 = major, 1 = minor); chord_db the (K, 13) table or a ChordVocabulary."""
    vocab = chord_db if isinstance(chord_db, ChordVocabulary) else ChordVocabulary(chord_db)
    return get_context(name).positions(ChordTrack.from_chords(chord_root, chroma, key_tonic,
                                                              key_mode, vocab))


# the built-in contexts register themselves on import
from stripes.data.contexts import bin, key, rep, rep_causal, time  # noqa: E402,F401

__all__ = ["CONTEXTS", "ChordTrack", "Context", "get_context", "positions_for", "register"]
