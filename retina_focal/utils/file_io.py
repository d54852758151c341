"""Atomic file writes: the one way the package writes a file that another process (or a later
run) may read while it is being written: checkpoints, ``last_checkpoint``, the synthetic
dataset's images and JSON, an ablation's result files and plots.

A file is written to a uniquely named temporary file in the same directory and renamed over
the final name (``os.replace``, atomic on POSIX and Windows within one file system), so a
reader sees the old file or the new one, never a partial one, and a process killed mid-write
leaves the final name untouched. A kill leaves the temporary file behind: its name
(:func:`temporary_path`, recognised by :func:`is_temporary_file`) lets the next run that takes
the directory remove exactly those files (:mod:`retina_focal.engine.output_dir`).

A full disk (``ENOSPC``, or a disk quota: ``EDQUOT``) is reported as an ``OSError`` with that
errno naming the file, whatever the writer made of it (``torch.save`` turns it into a
``RuntimeError`` about ``inline_container.cc``).
"""
import errno
import json
import os
import re
import threading
from contextlib import contextmanager
from typing import IO, Any, Callable, Iterator, Optional

__all__ = [
    "check_output_dir",
    "check_output_file",
    "is_local_path",
    "make_output_dir",
    "output_dir_of_run",
    "read_json",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "is_temporary_file",
    "temporary_path",
]

# .<final name>.<pid>.<thread id>.tmp, as temporary_path makes them
_TEMPORARY_NAME = re.compile(r"\..+\.[0-9]+\.[0-9]+\.tmp")

# errors meaning "the file system is full for this writer"
_NO_SPACE_ERRNOS = tuple(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e)


def temporary_path(path: str) -> str:
    """The temporary file :func:`atomic_write` writes ``path`` to: hidden, next to it, unique
    per process and thread (so concurrent writers of one path never collide)."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")


def is_temporary_file(name: str) -> bool:
    """Whether the file name ``name`` (no directory) is one :func:`temporary_path` makes."""
    return _TEMPORARY_NAME.fullmatch(name) is not None


def _no_space_error(error: BaseException) -> Optional[OSError]:
    """The out-of-space ``OSError`` that caused ``error`` (itself, or one in its chain of
    causes and contexts), if any."""
    seen = set()
    cause: Optional[BaseException] = error
    while cause is not None and id(cause) not in seen:
        error = cause
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _NO_SPACE_ERRNOS:
            return error
        cause = error.__cause__ or error.__context__
    return None


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
    An error caused by a full disk is re-raised as ``OSError(ENOSPC or EDQUOT)`` naming
    ``path``.
    """
    directory = os.path.dirname(os.path.abspath(path))
    # not mkstemp: its files are private (0600), the final file keeps the usual permissions
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") if binary else open(tmp, "w", encoding="utf-8") as f:
            write_fn(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        no_space = _no_space_error(e)
        if no_space is None:
            raise
        code = no_space.errno if no_space.errno is not None else errno.ENOSPC
        raise OSError(code, f"{os.strerror(code)}: could not write {path} "
                      "(its previous content, if any, is intact); free space on that file "
                      "system or write elsewhere") from e
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


def read_json(path: str, what: str = "JSON file") -> Any:
    """The JSON document in ``path``; what is wrong with it as a
    :class:`~retina_focal.utils.errors.DataError` (or ``DataFileNotFound``) naming ``what``
    and ``path``: missing, a folder, not text, empty, or not valid JSON (with the line)."""
    import json

    from retina_focal.utils.errors import DataError, DataFileNotFound

    if not os.path.exists(path):
        raise DataFileNotFound(f"{what} {path!r} does not exist")
    if os.path.isdir(path):
        raise DataError(f"{what} {path!r} is a folder, not a JSON file")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise DataError(f"{what} {path!r} is not a text file (JSON is text)") from None
    if not text.strip():
        raise DataError(f"{what} {path!r} is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{what} {path!r} is not valid JSON: {e}") from None


def is_local_path(path: str) -> bool:
    """Whether ``path`` is on this machine's file system (not a ``scheme://`` URL, which
    Detectron2's PathManager reads through a handler, with no atomic rename or lock file)."""
    return "://" not in path


def _existing_part(path: str) -> str:
    """The longest leading part of ``path`` that exists (``path`` itself, a parent, or the
    current folder for a relative path none of whose parts exists)."""
    head = os.path.normpath(path)
    while not os.path.exists(head):
        parent = os.path.dirname(head) or os.curdir
        if parent == head:
            break
        head = parent
    return head


def _folder_problem(path: str) -> Optional[str]:
    """Why the folder ``path`` cannot be made or written into, seen without writing anything
    (None: nothing stops it): ``path`` or a part of it is a file, or the deepest existing part
    is not writable (no permission, a read-only file system)."""
    head = _existing_part(path)
    if not os.path.isdir(head):
        if head == os.path.normpath(path):
            return "is a file"
        return f"{head!r} is a file, not a folder"
    if not os.access(head, os.W_OK | os.X_OK):
        return f"{head!r} is not writable"
    return None


def check_output_dir(path: str, option: str = "--output") -> str:
    """Refuse, before a command does any work or writes anything, an output folder ``path``
    that cannot be made or written into: a :class:`~retina_focal.utils.errors.DataError`
    naming ``option`` and the part of the path in the way (a file, a folder without write
    permission). Nothing is created; :func:`make_output_dir` creates it when the results are
    there to write. Returns ``path``."""
    from retina_focal.utils.errors import DataError

    if not path.strip():
        raise DataError(f"{option} {path!r} is empty: give a folder")
    problem = _folder_problem(path)
    if problem == "is a file":
        raise DataError(f"{option} {path!r} is a file; give a folder (it is created if needed)")
    if problem is not None:
        raise DataError(f"{option} {path!r}: cannot create this folder ({problem}); give one "
                        "you can write to")
    return path


def check_output_file(path: str, option: str = "--output") -> str:
    """:func:`check_output_dir` for an output file: ``path`` must not be a folder, and the
    folder it goes into must be one that can be made or written into. Returns ``path``."""
    from retina_focal.utils.errors import DataError

    if not path.strip():  # an unset shell variable, most likely: nothing would be written
        raise DataError(f"{option} {path!r} is empty: give the file to write")
    if os.path.isdir(path):
        raise DataError(f"{option} {path!r} is a folder; give the file to write")
    folder = os.path.dirname(path) or os.curdir
    problem = _folder_problem(folder)
    if problem == "is a file":
        problem = f"{folder!r} is a file, not a folder"
    if problem is not None:
        raise DataError(f"{option} {path!r}: its folder cannot be made ({problem}); give a "
                        "path in a folder you can write to")
    return path


def make_output_dir(path: str, option: str = "--output") -> str:
    """Create the folder ``path`` (and its parents) for a command's output; a file in the way
    is a :class:`~retina_focal.utils.errors.DataError` naming ``option`` (not a
    ``FileExistsError`` traceback), as :func:`check_output_dir` (which a command calls first,
    before its work) refuses it. Returns ``path``."""
    from retina_focal.utils.errors import DataError

    check_output_dir(path, option)
    try:
        os.makedirs(path, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DataError(f"{option} {path!r}: a part of that path is a file, not a folder") \
            from None
    except OSError as e:  # no permission, a read-only or virtual file system, ...
        raise DataError(f"{option} {path!r}: cannot create this folder ({e.strerror}); give "
                        "one you can write to") from None
    return path


@contextmanager
def output_dir_of_run(path: str, option: str = "--output") -> Iterator[str]:
    """:func:`make_output_dir` for the ``with`` block of a command that checks its inputs while
    it writes: if the block raises, the folders this call created (``path`` and any parents it
    made) are removed again when they are still empty, so a refused run leaves no trace; an
    existing folder is never touched."""
    missing = []
    head = os.path.abspath(path)
    while not os.path.exists(head):
        missing.append(head)
        parent = os.path.dirname(head)
        if parent == head:
            break
        head = parent
    make_output_dir(path, option)
    try:
        yield path
    except BaseException:
        for folder in missing:  # deepest first
            try:
                os.rmdir(folder)  # only an empty one
            except OSError:
                break
        raise
