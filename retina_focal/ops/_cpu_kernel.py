"""Build (once, cached) and load the fused CPU focal-loss kernel in ``csrc/focal_loss_cpu.cpp``.

The kernel has a plain C ABI and includes no PyTorch header, so it is one ``g++`` call of about
a second (a ``torch.utils.cpp_extension`` build of the same code takes ~40 s, an inductor
compile ~15 s per shape/dtype variant), and it does not depend on the torch version. The
shared library is cached under ``$RETINA_FOCAL_CACHE`` (default ``~/.cache/retina_focal``),
keyed by a hash of the source, the compiler command and the CPU, so a changed source or a
different machine rebuilds it. ``$CXX`` picks the compiler (default: g++, c++ or clang++).
"""
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from typing import List, Optional

from retina_focal.utils.cpu import cpu_info

__all__ = ["is_built", "load_kernel", "KernelUnavailable"]

logger = logging.getLogger(__name__)

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "focal_loss_cpu.cpp")
ABI_VERSION = 1

_lock = threading.Lock()
_cached: Optional[ctypes.CDLL] = None
_error: Optional[str] = None


class KernelUnavailable(RuntimeError):
    """The fused CPU kernel could not be built or loaded (the message says why)."""


def _cache_dir() -> str:
    root = os.environ.get("RETINA_FOCAL_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "retina_focal"
    )
    return os.path.join(root, "kernels")


def _cpu_fingerprint() -> str:
    """CPU model and feature flags (the library is built with -march=native)."""
    info = cpu_info()
    return (f"{platform.machine()} {info.model_name} {info.family} {info.model} "
            f"{' '.join(sorted(info.flags))}")


def _flags(compiler: str, native: bool, float16: bool) -> List[str]:
    flags = ["-O3", "-std=c++17", "-fPIC", "-shared", "-pthread", "-fopenmp-simd"]
    if native:
        flags.append("-march=native")
    if not float16:
        flags.append("-DRF_NO_FLOAT16")
    return [compiler] + flags


def _compile(command: List[str], output: str) -> Optional[str]:
    """Run the compiler into a temporary file, then move it into place atomically."""
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(output))
    os.close(fd)
    try:
        proc = subprocess.run(
            command + [SOURCE, "-o", tmp], capture_output=True, text=True, timeout=300
        )
        if proc.returncode != 0:
            return proc.stderr.strip()[-2000:] or f"exit status {proc.returncode}"
        os.replace(tmp, output)
        return None
    except (OSError, subprocess.SubprocessError) as e:
        return f"{type(e).__name__}: {e}"
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _find_compiler() -> str:
    if os.environ.get("CXX"):
        compiler = os.environ["CXX"]
        if shutil.which(compiler) is None:
            raise KernelUnavailable(f"no C++ compiler: $CXX={compiler!r} is not on PATH")
        return compiler
    for compiler in ("g++", "c++", "clang++"):
        if shutil.which(compiler):
            return compiler
    raise KernelUnavailable("no C++ compiler: none of g++, c++, clang++ is on PATH (set $CXX)")


def _build() -> ctypes.CDLL:
    compiler = _find_compiler()
    with open(SOURCE, "rb") as f:
        source = f.read()
    os.makedirs(_cache_dir(), exist_ok=True)
    errors = []
    # -march=native with float16 support first; then progressively more portable builds.
    for native, float16 in ((True, True), (True, False), (False, False)):
        command = _flags(compiler, native, float16)
        key = hashlib.sha256(
            source + " ".join(command).encode() + _cpu_fingerprint().encode()
        ).hexdigest()[:20]
        output = os.path.join(_cache_dir(), f"focal_loss_cpu_{key}.so")
        if not os.path.exists(output):
            err = _compile(command, output)
            if err is not None:
                errors.append(f"{' '.join(command)}:\n{err}")
                continue
        try:
            lib = ctypes.CDLL(output)
        except OSError as e:
            errors.append(f"loading {output}: {e}")
            continue
        if lib.rf_focal_abi_version() != ABI_VERSION:
            errors.append(f"{output}: ABI version mismatch")
            continue
        _declare(lib)
        return lib
    raise KernelUnavailable("could not build the fused focal-loss kernel:\n" + "\n".join(errors))


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, dbl, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
    lib.rf_focal_forward.argtypes = [
        p, i32, p, i64, i64, p, p, dbl, p, p, ctypes.POINTER(dbl), ctypes.POINTER(i64), i32
    ]
    lib.rf_focal_forward.restype = i32
    lib.rf_focal_backward.argtypes = [p, i32, p, i64, i64, p, p, dbl, p, p, dbl, p, i32]
    lib.rf_focal_backward.restype = i32
    lib.rf_focal_has_float16.restype = i32


def load_kernel() -> ctypes.CDLL:
    """The loaded kernel library; builds it on first use. Raises :class:`KernelUnavailable`
    (with the compiler's message) if it cannot; the failure is remembered for the process."""
    global _cached, _error
    with _lock:
        if _cached is not None:
            return _cached
        if _error is not None:
            raise KernelUnavailable(_error)
        try:
            _cached = _build()
        except KernelUnavailable as e:
            _error = str(e)
            raise
        return _cached


def is_built() -> bool:
    """Whether this process has loaded the kernel (built or found in the cache) so far."""
    return _cached is not None
