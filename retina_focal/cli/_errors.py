"""How every command ends on bad input: :func:`reports_user_errors` turns a
:class:`~retina_focal.utils.errors.UserError` raised anywhere below a command's ``run`` into
one ``error: ...`` line and exit status 1 (``SystemExit``), with no traceback unless
``RETINA_FOCAL_TRACEBACK=1``. Whether a command is started as ``retina-focal COMMAND`` or as
its ``tools/`` script, it goes through ``run``, so both behave the same."""
import functools

from retina_focal.utils.errors import UserError, wants_traceback

__all__ = ["reports_user_errors"]


def reports_user_errors(run):
    """Decorate a command's ``run(argv)``: a :class:`UserError` becomes ``SystemExit("error:
    <message>")`` (printed on stderr, status 1)."""

    @functools.wraps(run)
    def wrapper(*args, **kwargs):
        try:
            return run(*args, **kwargs)
        except UserError as e:
            if wants_traceback():
                raise
            raise SystemExit(f"error: {e}") from e

    return wrapper
