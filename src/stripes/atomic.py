"""Writing a file atomically, with errors that name the file.

Every file the pipeline writes and later trusts (checkpoints, run_info.json, the results store,
cache entries) goes through :func:`atomic_write`: the content is written to a temporary file in
the *same folder* (so the final step is a rename on one filesystem, never a copy), flushed to
disk, then renamed over the target. A kill or a full disk leaves the old file intact and at most
a ``.<name>.tmp-<pid>`` file beside it, which is removed when the error is caught.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable


class WriteError(OSError):
    """Writing `path` failed (full disk, read-only folder, ...); the old file, if any, is intact."""


def temporary_path(path: str | Path) -> Path:
    """``<folder>/.<name>.tmp-<pid>``: beside the target, hidden, unique per process."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, fsync it, rename it to ``path``.

    Raises :class:`WriteError` (an ``OSError`` with the original errno, e.g. ``ENOSPC``) naming
    ``path`` when writing or renaming fails; the temporary file is removed and ``path`` keeps its
    previous content. Other exceptions from ``write`` propagate unchanged (after the clean-up).
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) or _is_write_failure(err):
            code = getattr(err, "errno", None) or errno.EIO
            raise WriteError(code, f"could not write {path}: {type(err).__name__}: {err}") from err
        raise
    return path


def _is_write_failure(err: BaseException) -> bool:
    """torch.save reports a short write as RuntimeError('... file write failed ...')."""
    return isinstance(err, RuntimeError) and "write" in str(err).lower() and "fail" in str(err).lower()


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` of a UTF-8 text."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
