"""A training run's identity: the hash of its resolved config minus the result-neutral keys.

Two configs that can give different weights get different run directories
(``<pe>-<context>-lr<lr>-s<seed>-<hash8>``, see ``run_name`` in conf/train.yaml), and a run
directory is never resumed or skipped by a config whose identity differs from the saved one
(issue 14, item 1). *Result-neutral* keys (``RESULT_NEUTRAL``) only change where things are
written, how they are logged, or how the sweep is organised; every other key — model, PE,
context, data resolution and windows, optimiser, schedule, curriculum, trainer limits, devices,
seed — is part of the identity. A key added to the configs later changes every hash (the
identity is the whole config, on purpose).

``${config_hash:}`` is registered as an OmegaConf resolver on import; it hashes the config it
sits in (Hydra resolves ``hydra.run.dir`` / ``hydra.sweep.subdir`` with the job's config).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

#: Dotted keys that do not change a run's result (paths, logging, sweep bookkeeping, threads).
RESULT_NEUTRAL = (
    "hydra", "run_name", "runs_root", "experiment_name", "profile_name", "logger", "sweep",
    "fail_fast", "torch_threads", "binarize",  # binarize: the evaluation grid a profile sets
    "data.root", "data.cache_dir", "data.num_workers",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
)
HASH_LENGTH = 8


class ConfigMismatchError(ValueError):
    """A run directory or checkpoint was made with a config of another identity."""


def _drop(tree: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.get(key)
        if not isinstance(tree, dict):
            return
    tree.pop(leaf, None)


def identity_config(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """The resolved config as plain data, without the ``RESULT_NEUTRAL`` keys."""
    if isinstance(cfg, DictConfig):
        raw = OmegaConf.to_container(cfg, resolve=False)
    else:
        raw = json.loads(json.dumps(cfg, default=str))
    # drop the keys that would resolve back to this hash (or to Hydra's runtime) first
    raw.pop("hydra", None)
    raw.pop("run_name", None)
    plain = OmegaConf.to_container(OmegaConf.create(raw), resolve=True)
    for key in RESULT_NEUTRAL:
        _drop(plain, key)
    return plain


def config_hash(cfg: Mapping[str, Any] | DictConfig, length: int = HASH_LENGTH) -> str:
    """Hex SHA-256 prefix of the identity config (JSON, sorted keys)."""
    text = json.dumps(identity_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def identity_diff(a: Mapping[str, Any] | DictConfig, b: Mapping[str, Any] | DictConfig) -> dict[str, tuple]:
    """{dotted key: (value in a, value in b)} for every identity key where the configs differ
    (a key missing on one side shows as ``<absent>``)."""
    fa, fb = _flatten(identity_config(a)), _flatten(identity_config(b))
    absent = "<absent>"
    return {k: (fa.get(k, absent), fb.get(k, absent)) for k in sorted(set(fa) | set(fb))
            if fa.get(k, absent) != fb.get(k, absent)}


def describe_diff(diff: Mapping[str, tuple], limit: int = 8) -> str:
    """'model.num_heads: 1 -> 2, seed: 0 -> 1' (the first `limit` keys)."""
    items = [f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(diff.items())[:limit]]
    more = f" (+{len(diff) - limit} more)" if len(diff) > limit else ""
    return ", ".join(items) + more


def _resolver(*, _root_: DictConfig) -> str:
    return config_hash(_root_)


if not OmegaConf.has_resolver("config_hash"):
    OmegaConf.register_new_resolver("config_hash", _resolver)
