"""How every command ends on bad input: :func:`reports_user_errors` (defined with the errors,
in :mod:`retina_focal.utils.errors`) turns a :class:`~retina_focal.utils.errors.UserError`
raised anywhere below a command's ``run`` into one ``error: ...`` line and exit status 1
(``SystemExit``), with no traceback unless ``RETINA_FOCAL_TRACEBACK=1``. Whether a command is
started as ``retina-focal COMMAND`` or as its ``tools/`` script, it goes through ``run``, so
both behave the same."""
from retina_focal.utils.errors import reports_user_errors

__all__ = ["reports_user_errors"]
