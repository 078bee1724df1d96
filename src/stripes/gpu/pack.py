"""``python -m stripes.gpu.pack`` (= ``make gpu-pack``): what an offline GPU machine needs for
``make gpu-check``, written into a git-ignored folder of the repository (default ``.gpu/``).

The GPU machine has PyTorch, Lightning, Triton, numpy, pandas, pyarrow, scipy, matplotlib, joblib,
PyYAML and packaging, but not Hydra, pretty_midi, mido or fla, has no network and receives only the
repository (plus up to 8 ignored paths, 64 MiB in all). So this writes:

* ``wheels/``: the missing packages for Python 3.12 on manylinux x86_64 (``WHEELS``), at the versions
  pinned for this project (this environment's installed versions of the ``pyproject.toml`` pins,
  and the ``gpu`` extra's pins for fla-core and einops). A package published only as a source
  distribution (antlr4-python3-runtime 4.9.3) is built into a wheel here, and must be pure Python.
  torch and Lightning are never carried: the machine's own are used as they are.
* ``data.tar.gz``: only the files the pipeline reads (``stripes.data.pop909.song_files`` for every song
  of ``split.npz``: the MIDI file, ``key_audio.txt``, ``finalized_chord.txt``, ``melody.txt``; and the
  three ``pop909_alignment/`` files), with paths relative to the data root.
* ``MANIFEST.json``: versions, file counts, sizes and SHA-256 of the wheels and the archive.

``make gpu-check`` later derives ``site/`` (installed wheels) and ``data/`` (unpacked archive) in the
same folder on the GPU machine; a new pack removes them here so that only ~12 MiB is carried.

Errors (missing data root, a download that fails, a non-pure built wheel) stop with the package or
file named; a previous pack is replaced only when the new one is complete.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from importlib import metadata
from pathlib import Path

from stripes.data.annotations import read_split
from stripes.data.paths import ALIGNMENT_FILES, PROJECT_ROOT, resolve_data_root
from stripes.data.pop909 import song_files

#: Packages the GPU image lacks, by their distribution names (spec: issue 10).
WHEELS = ("hydra-core", "omegaconf", "antlr4-python3-runtime", "hydra-joblib-launcher", "mido",
          "pretty-midi", "six", "importlib-resources")
#: Packages of the ``gpu`` extra (pinned in pyproject.toml).
GPU_EXTRA = "gpu"
PYTHON_VERSION = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
DEFAULT_OUT = PROJECT_ROOT / ".gpu"
ARCHIVE = "data.tar.gz"


class PackError(RuntimeError):
    """Something the pack needs is missing or could not be fetched; the message names it."""


def extra_pins(pyproject: Path = PROJECT_ROOT / "pyproject.toml", extra: str = GPU_EXTRA) -> dict[str, str]:
    """{name: version} of ``[project.optional-dependencies] <extra>`` (each must be pinned with ==)."""
    import tomllib  # Python >= 3.11

    spec = tomllib.loads(pyproject.read_text())["project"].get("optional-dependencies", {}).get(extra)
    if not spec:
        raise PackError(f"{pyproject}: no [project.optional-dependencies] {extra} list")
    pins = {}
    for requirement in spec:
        name, sep, version = requirement.partition("==")
        if not sep:
            raise PackError(f"{pyproject}: {extra} requirement {requirement!r} is not pinned with ==")
        pins[name.strip()] = version.strip()
    return pins


def wheel_pins() -> dict[str, str]:
    """{name: version} of everything carried: WHEELS at this environment's versions + the gpu extra."""
    pins = {}
    for name in WHEELS:
        try:
            pins[name] = metadata.version(name)
        except metadata.PackageNotFoundError as err:
            raise PackError(f"{name} is not installed here (run `make setup` first)") from err
    pins.update(extra_pins())
    return pins


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def fetch_wheel(name: str, version: str, dest: Path) -> Path:
    """One wheel for Python 3.12 / manylinux x86_64 into ``dest`` (built here if only an sdist exists)."""
    before = set(dest.glob("*.whl"))
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    got = _pip("download", "--no-deps", "--only-binary=:all:", "--python-version", PYTHON_VERSION,
               "--implementation", "cp", *platforms, "-d", str(dest), f"{name}=={version}")
    if got.returncode != 0:  # no wheel published: build one from the sdist (pure Python only)
        got = _pip("wheel", "--no-deps", "-w", str(dest), f"{name}=={version}")
        if got.returncode != 0:
            raise PackError(f"could not fetch {name}=={version}:\n{got.stderr.strip()[-2000:]}")
    new = sorted(set(dest.glob("*.whl")) - before)
    if not new:  # pip found it already in dest
        new = sorted(dest.glob(f"{name.replace('-', '_')}-{version}-*.whl"), key=lambda p: p.name.lower())
    if not new:
        raise PackError(f"pip reported success for {name}=={version} but wrote no wheel into {dest}")
    wheel = new[0]
    tags = wheel.name[:-4].split("-")[-3:]
    if tags[1] != "none" and not tags[0].startswith(("cp312", "py3")):
        raise PackError(f"{wheel.name}: not usable on CPython {PYTHON_VERSION} (tags {tags})")
    if tags[1] == "none" and tags[2] != "any":
        raise PackError(f"{wheel.name}: built here for {tags[2]}, not portable")
    return wheel


def data_members(root: Path) -> list[Path]:
    """The data files the pipeline reads, relative to ``root`` (sorted, existing ones only)."""
    align = root / "pop909_alignment"
    split = read_split(align / "split.npz")
    numbers = sorted({int(n) for part in split.values() for n in part})
    files = [align / name for name in ALIGNMENT_FILES]
    for number in numbers:
        files += [path for path in song_files(root, number).values() if path.is_file()]
    return [path.relative_to(root) for path in files]


def write_data_archive(root: Path, path: Path) -> dict:
    """``path`` = gzip tar of ``data_members(root)``; returns {files, bytes, songs}."""
    members = data_members(root)
    with tarfile.open(path, "w:gz", compresslevel=9) as tar:
        for rel in members:
            info = tar.gettarinfo(str(root / rel), arcname=str(rel))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with open(root / rel, "rb") as fh:
                tar.addfile(info, fh)
    songs = {rel.parts[1] for rel in members if rel.parts[0] == "POP909"}
    return {"files": len(members), "songs": len(songs), "bytes": path.stat().st_size}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pack(out: Path = DEFAULT_OUT, data_root: str | Path | None = None, wheels: bool = True,
         data: bool = True, log=print) -> dict:
    """Write ``out/wheels``, ``out/data.tar.gz`` and ``out/MANIFEST.json``; returns the manifest.

    Built in a temporary folder beside ``out`` and moved into place part by part, so a failed run
    leaves the previous pack as it was.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    manifest: dict = {"python": PYTHON_VERSION, "platforms": list(PLATFORMS)}
    old = json.loads((out / "MANIFEST.json").read_text()) if (out / "MANIFEST.json").is_file() else {}
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.tmp-") as tmp:
        tmp = Path(tmp)
        if wheels:
            (tmp / "wheels").mkdir()
            entries = {}
            for name, version in wheel_pins().items():
                wheel = fetch_wheel(name, version, tmp / "wheels")
                entries[name] = {"version": version, "file": wheel.name, "sha256": _sha256(wheel),
                                 "bytes": wheel.stat().st_size}
                log(f"[gpu-pack] {wheel.name}")
            manifest["wheels"] = entries
        if data:
            root = resolve_data_root(data_root)
            info = write_data_archive(root, tmp / ARCHIVE)
            manifest["data"] = {**info, "archive": ARCHIVE, "sha256": _sha256(tmp / ARCHIVE),
                                "source_root": str(root)}
            log(f"[gpu-pack] {ARCHIVE}: {info['files']} files of {info['songs']} songs, "
                f"{info['bytes'] / 2**20:.1f} MiB")
        out.mkdir(exist_ok=True)
        for derived in ("site", "data"):  # made from the pack on the GPU machine: never carried back
            shutil.rmtree(out / derived, ignore_errors=True)
        for part in ("wheels", ARCHIVE):
            if (tmp / part).exists():
                target = out / part
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
                shutil.move(str(tmp / part), str(target))
    for key in ("wheels", "data"):  # keep what this run did not rebuild
        if key not in manifest and key in old:
            manifest[key] = old[key]
    manifest["seconds"] = round(time.time() - started, 1)
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    log(f"[gpu-pack] wrote {out} ({total / 2**20:.1f} MiB) in {manifest['seconds']} s; on the GPU "
        f"machine, with {out.name} carried: make gpu-check")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stripes.gpu.pack", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default .gpu/)")
    parser.add_argument("--data-root", default=None, help="POP909 data root (default: the usual resolution)")
    parser.add_argument("--no-wheels", action="store_true", help="only the data archive")
    parser.add_argument("--no-data", action="store_true", help="only the wheels")
    args = parser.parse_args(argv)
    try:
        pack(args.out, args.data_root, wheels=not args.no_wheels, data=not args.no_data)
    except (PackError, FileNotFoundError) as err:  # DataRootError is a FileNotFoundError
        raise SystemExit(f"make gpu-pack: {err}") from None


if __name__ == "__main__":
    main()
