"""The one kind of error a command reports without a traceback.

A :class:`UserError` is bad input (a file, key or value) or a refused run, whose message
already names what is wrong and the fix. Every ``retina-focal`` command
(:func:`retina_focal.cli.main`) prints it as one ``error: ...`` line and exits with status 1;
set ``RETINA_FOCAL_TRACEBACK=1`` to get the traceback as well. Anything else is a bug of ours or
of a dependency, and keeps its traceback.

The concrete errors subclass it together with the built-in type callers already catch
(``ConfigError`` is a ``ValueError``, ``OutputDirInUse`` a ``RuntimeError``, ...).
"""
import functools
import os
from typing import Callable, TypeVar

__all__ = ["TRACEBACK_ENV", "DataError", "DataFileNotFound", "MissingPackage", "UserError",
           "reports_user_errors", "wants_traceback"]

_Result = TypeVar("_Result")

# set to 1 to see the traceback of a UserError too
TRACEBACK_ENV = "RETINA_FOCAL_TRACEBACK"


def wants_traceback() -> bool:
    """Whether ``RETINA_FOCAL_TRACEBACK`` asks for a :class:`UserError`'s traceback too."""
    return os.environ.get(TRACEBACK_ENV, "") not in ("", "0")


class UserError(Exception):
    """Bad input or a refused run; the message names the file, key or value and the fix."""


class DataError(UserError, ValueError):
    """A dataset, annotation or class list that cannot be used as asked (other class names than
    the model's, another class count, a malformed annotation); the message names it."""


class DataFileNotFound(UserError, FileNotFoundError):
    """A dataset's annotation file or image folder that does not exist; the message names it."""


class MissingPackage(UserError, ImportError):
    """An optional package a command needs that is not installed; the message names it and the
    ``pip install`` that adds it."""


def reports_user_errors(run: Callable[..., _Result]) -> Callable[..., _Result]:
    """Decorate an entry point (a command's ``run(argv)``, or a training run's process): a
    :class:`UserError` raised below it becomes ``SystemExit("error: <message>")`` (printed on
    stderr, status 1), with no traceback unless :func:`wants_traceback`."""

    @functools.wraps(run)
    def wrapper(*args: object, **kwargs: object) -> _Result:
        try:
            return run(*args, **kwargs)
        except UserError as e:
            if wants_traceback():
                raise
            raise SystemExit(f"error: {e}") from e

    return wrapper
