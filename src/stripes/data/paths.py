"""Finding the POP909 data root and checking its layout.

Resolution order of ``data.root`` (issue 2): an explicit value, ``$STRIPES_DATA``, ``data/raw/``,
``../shared/data/`` (both relative to the project root). A wrong or empty root fails at once with
the expected layout and the three public sources; nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[3]
SUBFOLDERS = ("POP909", "pop909_structure/POP909", "pop909_alignment")
ALIGNMENT_FILES = ("startpos.csv", "split.npz", "chord_db.npz")

EXPECTED_LAYOUT = """\
expected layout of the data root:
  <root>/POP909/NNN/NNN.mid, key_audio.txt          (909 songs, NNN = 001..909)
  <root>/pop909_structure/POP909/NNN/finalized_chord.txt, melody.txt, analyzed_key.txt, ...
  <root>/pop909_alignment/startpos.csv, split.npz, chord_db.npz
public sources (download them yourself, then point data.root or $STRIPES_DATA at the root):
  POP909/            https://github.com/music-x-lab/POP909-Dataset (MIT; the POP909/ folder)
  pop909_structure/  https://github.com/Dsqvival/hierarchical-structure-analysis (MIT; its POP909/)
  pop909_alignment/  https://github.com/agarwalmanvi/structurePE (BSD-3; startpos.csv, split.npz,
                     chord_db.npz; startpos.csv is also on Zenodo record 10932363)"""


class DataRootError(FileNotFoundError):
    """The data root is missing or does not have the POP909 layout."""


def layout_problems(root: Path) -> list[str]:
    """What is missing below `root` (empty list = the layout is complete)."""
    problems = []
    for sub in SUBFOLDERS:
        folder = root / sub
        if not folder.is_dir():
            problems.append(f"missing folder {folder}")
        elif sub != "pop909_alignment" and not any(p.is_dir() for p in folder.iterdir()):
            problems.append(f"no song folders in {folder}")
    for name in ALIGNMENT_FILES:
        if (root / "pop909_alignment").is_dir() and not (root / "pop909_alignment" / name).is_file():
            problems.append(f"missing file {root / 'pop909_alignment' / name}")
    return problems


def candidate_roots(explicit: str | Path | None = None) -> list[tuple[str, Path]]:
    """(where it came from, path) in resolution order."""
    if explicit not in (None, ""):
        return [("data.root", Path(explicit).expanduser())]
    out = []
    if os.environ.get("STRIPES_DATA"):
        out.append(("$STRIPES_DATA", Path(os.environ["STRIPES_DATA"]).expanduser()))
    out.append(("data/raw/", PROJECT_ROOT / "data" / "raw"))
    out.append(("../shared/data/", PROJECT_ROOT.parent / "shared" / "data"))
    return out


def resolve_data_root(explicit: str | Path | None = None) -> Path:
    """The data root to use, or DataRootError with the expected layout and the sources.

    An explicit value or $STRIPES_DATA is used as given (and must be complete); the two default
    locations are tried in order and the first existing one must be complete."""
    tried = []
    for origin, path in candidate_roots(explicit):
        explicit_choice = origin in ("data.root", "$STRIPES_DATA")
        if not path.exists() and not explicit_choice:
            tried.append(f"  {origin}: {path} does not exist")
            continue
        problems = layout_problems(path) if path.exists() else [f"{path} does not exist"]
        if not problems:
            return path.resolve()
        detail = "\n".join(f"  - {p}" for p in problems)
        raise DataRootError(f"POP909 data root {path} (from {origin}) is not usable:\n{detail}\n"
                            f"{EXPECTED_LAYOUT}")
    raise DataRootError("no POP909 data root found; tried:\n" + "\n".join(tried) + "\n"
                        + EXPECTED_LAYOUT)
