"""Atomic file writes: the one way the package writes a file that another process (or a later
run) may read while it is being written: checkpoints, ``last_checkpoint``, the synthetic
dataset's images and JSON, an ablation's result files and plots.

A file is written to a uniquely named temporary file in the same directory and renamed over
the final name (``os.replace``, atomic on POSIX and Windows within one file system), so a
reader sees the old file or the new one, never a partial one, and a process killed mid-write
leaves the final name untouched.
"""
import json
import os
import threading
from typing import IO, Any, Callable

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_text"]


def atomic_write(path: str, write_fn: Callable[[IO], Any], *, binary: bool = True,
                 durable: bool = False) -> None:
    """Call ``write_fn(file)`` on a temporary file next to ``path`` and rename it to ``path``.

    Args:
        write_fn: writes the whole content to the open file it is given.
        binary: open the temporary file in binary (``"wb"``) or text (``"w"``, UTF-8) mode.
        durable: also ``fsync`` the file before the rename and the directory after it, so the
            new content survives a power loss (checkpoints); without it the write is atomic
            for other processes but cheaper (many small dataset files).

    On any error (or a kill) ``path`` is untouched; on errors the temporary file is removed.
    """
    directory = os.path.dirname(os.path.abspath(path))
    # unique per process and thread, so concurrent writers of one path never collide (not
    # mkstemp: its files are private (0600), the final file keeps the usual permissions)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}."
                                  f"{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") if binary else open(tmp, "w", encoding="utf-8") as f:
            write_fn(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    if durable:
        _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on directories
        pass


def atomic_write_bytes(path: str, data_or_fn, *, durable: bool = False) -> None:
    """Write ``bytes`` (or call ``fn(binary file)``) atomically to ``path``."""
    fn = data_or_fn if callable(data_or_fn) else (lambda f: f.write(data_or_fn))
    atomic_write(path, fn, binary=True, durable=durable)


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` (UTF-8) atomically to ``path``."""
    atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_write_json(path: str, data: Any, **dump_kwargs) -> None:
    """``json.dump(data, file, **dump_kwargs)`` atomically to ``path``."""
    atomic_write(path, lambda f: json.dump(data, f, **dump_kwargs), binary=False)
