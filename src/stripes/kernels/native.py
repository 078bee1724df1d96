"""Build, cache and load the native C kernels of this package (ctypes; no Python build step).

``load("fourier")`` (or ``"rotary"``, ``"spe"``, ``"causal_attention"``) compiles ``fourier.c``
(``rotary.c``, …) next to this file with the system C compiler at first use, into a per-user
cache (env ``STRIPES_KERNEL_CACHE``, default ``~/.cache/stripes/kernels``). The library's file name carries a hash of the source and of every
header in this directory (``sincos.h``, shared by the kernels), the flags, the compiler's
``--version`` text and the CPU's flags (``-march=native`` code must not run on another CPU sharing
the cache); it is compiled into a temporary file in the cache directory and moved into place with
``os.replace``, so concurrent processes never see a half-written library. Later loads (in this or
another process) reuse the cached file without compiling.

``load`` returns None, and the callers use their PyTorch implementation, when env
``STRIPES_NATIVE=0``, when no compiler is found (env ``CC``, default ``cc``) or when compiling or
loading fails; the last two warn once per process, naming the compiler's error.

Flags: ``-O3 -march=native`` with ``-fno-math-errno -fno-trapping-math`` (rintf/fmaf inline and
vectorise), ``-fassociative-math -fno-signed-zeros`` (the float sums over d vectorise with a tree
reduction; GCC's ``omp simd reduction`` finishes each sum lane by lane, measured 20 % slower) and
``-fopenmp-simd`` (honours ``#pragma omp simd`` without linking an OpenMP runtime). Not the whole
``-ffast-math``: the kernels' sincos does its range reduction with explicit ``fmaf`` calls, which
reassociation leaves alone, but finite-math and reciprocal approximations would change results.
Libraries are single-threaded.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fassociative-math",
         "-fno-signed-zeros", "-fopenmp-simd",
         "-fPIC", "-shared"]
LIBS = ["-lm"]
#: seconds allowed for one compile (it takes about 1 s)
COMPILE_TIMEOUT_S = 120

_SOURCE_DIR = Path(__file__).resolve().parent
_LOADED: dict[str, ctypes.CDLL | None] = {}
_WARNED: set[str] = set()


def enabled() -> bool:
    """False when env ``STRIPES_NATIVE`` is ``0`` (or ``false``/``no``/``off``)."""
    return os.environ.get("STRIPES_NATIVE", "1").strip().lower() not in {"0", "false", "no", "off"}


def cache_dir() -> Path:
    """Env ``STRIPES_KERNEL_CACHE`` or ``~/.cache/stripes/kernels`` (not created here)."""
    env = os.environ.get("STRIPES_KERNEL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "stripes" / "kernels"


def compiler() -> list[str] | None:
    """The C compiler command (env ``CC``, may carry arguments; default ``cc``), None if not found."""
    words = shlex.split(os.environ.get("CC", "cc"))
    if not words:
        return None
    path = shutil.which(words[0])
    return [path, *words[1:]] if path else None


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.machine() + " " + platform.processor()


def _compiler_version(cc: list[str]) -> str:
    try:
        done = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=30)
        return f"{done.returncode} {done.stdout} {done.stderr}"
    except (OSError, subprocess.SubprocessError) as err:
        return repr(err)


def library_path(name: str, cc: list[str]) -> Path:
    """Where the compiled ``name`` library lives in the cache (the name keys every build input)."""
    key = hashlib.sha256()
    headers = [h.name.encode() + b"\0" + h.read_bytes() for h in sorted(_SOURCE_DIR.glob("*.h"))]
    for part in [(_SOURCE_DIR / f"{name}.c").read_bytes(), *headers, " ".join(FLAGS + LIBS).encode(),
                 " ".join(cc).encode(), _compiler_version(cc).encode(), _cpu_flags().encode()]:
        key.update(part)
        key.update(b"\0")
    return cache_dir() / f"{name}-{key.hexdigest()[:20]}.so"


def _compile(cc: list[str], source: Path, target: Path) -> None:
    """Compile ``source`` into ``target`` atomically. Raises RuntimeError naming the error."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".so")
    os.close(fd)
    cmd = [*cc, *FLAGS, "-o", tmp, str(source), *LIBS]
    try:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as err:
            raise RuntimeError(f"`{shlex.join(cmd)}` could not run: {err}") from err
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip()[-2000:] or "no output"
            raise RuntimeError(f"`{shlex.join(cmd)}` exited with status {done.returncode}: {detail}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _warn_once(name: str, message: str) -> None:
    if name not in _WARNED:
        _WARNED.add(name)
        warnings.warn(f"stripes/kernels/native.py: {message}; using the PyTorch implementation",
                      RuntimeWarning, stacklevel=3)


def load(name: str) -> ctypes.CDLL | None:
    """The compiled library ``<name>.c`` (built on first use, then cached), or None.

    None (the caller falls back to PyTorch) when ``STRIPES_NATIVE=0``, when no C compiler exists,
    or when compiling or loading failed (one RuntimeWarning per process naming the error). The
    result is remembered for the process; ``reset()`` forgets it (tests).
    """
    if not enabled():
        return None
    if name in _LOADED:
        return _LOADED[name]
    lib = None
    cc = compiler()
    if cc is None:
        _warn_once(name, f"no C compiler found (CC={os.environ.get('CC', 'cc')!r}) for {name}.c")
    else:
        try:
            path = library_path(name, cc)
            if not path.exists():
                _compile(cc, _SOURCE_DIR / f"{name}.c", path)
            lib = ctypes.CDLL(str(path))
        except (OSError, RuntimeError) as err:
            _warn_once(name, f"building {name}.c failed: {err}")
    _LOADED[name] = lib
    return lib


def reset() -> None:
    """Forget loaded libraries and issued warnings (the next ``load`` looks at the cache again)."""
    _LOADED.clear()
    _WARNED.clear()


class Kernel:
    """The functions of one compiled library ``<name>.c``, typed once and called with tensors.

    ``signatures`` maps each C function to its arguments: (number of int64 sizes first, then
    number of pointers); every function returns an int status, 0 on success. ``call(fn, *args)`` passes tensors as their data pointers (None as
    NULL) and raises MemoryError naming the function when the status is not 0 (the kernels'
    only failure is their scratch allocation).
    """

    def __init__(self, name: str, signatures: dict[str, tuple[int, int]]):
        self.name, self.signatures = name, signatures

    def library(self) -> ctypes.CDLL | None:
        lib = load(self.name)
        if lib is not None and not getattr(lib, "_stripes_typed", False):
            for fn, (sizes, pointers) in self.signatures.items():
                getattr(lib, fn).argtypes = [ctypes.c_int64] * sizes + [ctypes.c_void_p] * pointers
                getattr(lib, fn).restype = ctypes.c_int
            lib._stripes_typed = True
        return lib

    def available(self) -> bool:
        """True when the library loads (not disabled by ``STRIPES_NATIVE=0``, the compiler works)."""
        return self.library() is not None

    def usable(self, *tensors) -> bool:
        """The kernel for these inputs: CPU float32 (``cpu_float32``) and the library loads."""
        return cpu_float32(*tensors) and self.available()

    def call(self, fn: str, *args) -> None:
        pointers = [a.data_ptr() if hasattr(a, "data_ptr") else a for a in args]
        if getattr(self.library(), fn)(*pointers) != 0:
            raise MemoryError(f"stripes/kernels/{self.name}.c: {fn} could not allocate its scratch memory")


def cpu_float32(*tensors) -> bool:
    """Whether the native kernels take these inputs: CPU float32 (None entries ignored); float64
    and CUDA tensors use the PyTorch implementations."""
    return all(t is None or (t.device.type == "cpu" and t.dtype == torch.float32) for t in tensors)


_SGEMM: list = []


def blas_sgemm() -> int | None:
    """Address of the BLAS ``sgemm_`` (Fortran interface) that torch.bmm itself runs on the CPU
    (the MKL inside PyTorch's libtorch_cpu, which exports it), or None where this PyTorch build has
    none (the callers then keep their torch.bmm paths). Looked up once per process; the kernels
    call it through ``blas.h``."""
    if not _SGEMM:
        address = None
        try:
            lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
            address = ctypes.cast(lib.sgemm_, ctypes.c_void_p).value
        except (OSError, AttributeError):
            pass
        _SGEMM.append(address)
    return _SGEMM[0]
