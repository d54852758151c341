"""Value checks, done once, by constructors; and how their errors name cfg keys.

Every component validates its arguments in ``__init__`` only, with the ``check_*`` functions
below. They raise :class:`InvalidArgument`, a ``ValueError`` that knows which argument(s) it is
about. The class attribute ``config_keys`` ({argument: cfg key}) is the one table of which cfg
key gives which argument: ``from_config`` reads its arguments through it
(:func:`config_values`), and error messages name keys from it (``nested_config_keys`` adds the
keys of parts that ``from_config`` builds, e.g. a loss inside a proposal generator).
:func:`configurable` (Detectron2's ``@configurable`` plus one step) re-raises an
``InvalidArgument`` of a constructor called with a cfg as a ``ValueError`` naming the cfg key
instead of the argument::

    SigmoidFocalLoss(gamma=-1.0)   -> gamma=-1.0 is invalid: use a finite value >= 0 ...
    SigmoidFocalLoss(cfg)          -> MODEL.RETINANET.FOCAL_LOSS_GAMMA=-1.0 is invalid: ...

so the same check serves both ways of building, and a config error names what to edit.
"""
import functools
import math
from typing import Any, Callable, Dict, Mapping, Sequence, Tuple, Union

from detectron2.config import configurable as d2_configurable
from fvcore.common.config import CfgNode as _CfgNode

from retina_focal.utils.errors import UserError

__all__ = [
    "ConfigKeys",
    "InvalidArgument",
    "check",
    "check_alpha",
    "check_alpha_per_class",
    "check_choice",
    "check_finite",
    "check_focal_params",
    "check_gamma",
    "check_integer",
    "check_iou_thresholds",
    "check_positive",
    "check_range",
    "config_value",
    "config_values",
    "configurable",
]

# {constructor argument: cfg key}; a value may be a function of the cfg when the key depends on
# it (e.g. a per-class alpha comes from another key than the scalar one).
ConfigKeys = Dict[str, Union[str, Callable[[Any], str]]]


def _key_of(key: Union[str, Callable[[Any], str]], cfg: Any) -> str:
    return key(cfg) if callable(key) else key


def config_value(cfg: Any, key: str) -> Any:
    """``cfg``'s value at the dotted ``key`` (e.g. ``MODEL.ROI_HEADS.NUM_CLASSES``)."""
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def config_values(cfg: Any, config_keys: Mapping[str, Union[str, Callable[[Any], str]]]
                  ) -> Dict[str, Any]:
    """``{argument: the value of cfg at its key}`` for every entry of ``config_keys`` (a class's
    table; a key that is a function of the cfg is called with it first)."""
    return {arg: config_value(cfg, _key_of(key, cfg)) for arg, key in config_keys.items()}


def _escaped(text: str) -> str:
    """``text`` as a literal inside a ``str.format`` template."""
    return text.replace("{", "{{").replace("}", "}}")


def _is_number(value: Any, integer: bool = False) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if integer else isinstance(value, (int, float))


def _with_note(requirement: str, note: str) -> str:
    return f"{requirement} ({note})" if note else requirement


class InvalidArgument(UserError, ValueError):
    """A constructor argument with a bad value.

    ``template`` is the message with ``{0}``, ``{1}``, ... standing for the names of
    ``arguments`` (every other brace doubled), so that :meth:`naming` can put cfg keys there.
    """

    def __init__(self, template: str, *arguments: str):
        self.template = template
        self.arguments = arguments
        super().__init__(template.format(*arguments))

    def naming(self, names: Mapping[str, str]) -> "InvalidConfigValue":
        """The same message with each argument replaced by ``names[argument]`` (kept when
        absent), as an :class:`InvalidConfigValue`: an enclosing component does not rename it
        again."""
        return InvalidConfigValue(self.template.format(*(names.get(a, a) for a in self.arguments)))


class InvalidConfigValue(UserError, ValueError):
    """A config key with a bad value; the message names the key (:meth:`InvalidArgument.naming`)."""


def _invalid(key: str, value: Any, requirement: str) -> InvalidArgument:
    return InvalidArgument("{0}=" + _escaped(f"{value!r} is invalid: {requirement}"), key)


def _called_with_cfg(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> bool:
    """Whether Detectron2's ``configurable`` will build from a cfg (its own test, restated:
    a CfgNode or a DictConfig as the first argument or as ``cfg=``)."""
    from omegaconf import DictConfig

    first = args[0] if args else kwargs.get("cfg")
    return isinstance(first, (_CfgNode, DictConfig))


def configurable(init_func: Callable[..., None]) -> Callable[..., None]:
    """Detectron2's ``@configurable`` for a class's ``__init__``, plus: built from a cfg, an
    :class:`InvalidArgument` the constructor raises is re-raised naming the cfg key that the
    class's ``config_keys`` maps the argument to. Classes using it declare ``config_keys``."""
    init = d2_configurable(init_func)

    @functools.wraps(init_func)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> None:
        if not _called_with_cfg(args, kwargs):
            init(self, *args, **kwargs)
            return
        try:
            init(self, *args, **kwargs)
        except InvalidArgument as e:
            cfg = args[0] if args else kwargs["cfg"]
            keys = {**getattr(type(self), "nested_config_keys", {}), **type(self).config_keys}
            raise e.naming({arg: _key_of(key, cfg) for arg, key in keys.items()}) from e

    return wrapped


def check(ok: bool, value: Any, *, key: str, requirement: str) -> None:
    """Raise :class:`InvalidArgument` "``key=value`` is invalid: ``requirement``" unless ok."""
    if not ok:
        raise _invalid(key, value, requirement)


def check_choice(value: Any, choices: Sequence[Any], *, key: str, note: str = "") -> None:
    """Raise unless ``value`` is one of ``choices``; ``note`` explains them."""
    allowed = ", ".join(repr(c) for c in choices)
    check(value in choices, value, key=key,
          requirement=_with_note(f"use one of {allowed}", note))


def check_range(
    value: Any, low: float, high: float, *, key: str, integer: bool = False,
    open_low: bool = False,
    open_high: bool = False, note: str = "",
) -> None:
    """Raise unless ``value`` is in the interval from ``low`` to ``high``, closed unless
    ``open_low`` / ``open_high`` (and an int if ``integer``). NaN fails."""
    kind = "an integer" if integer else "a value"
    ok = (_is_number(value, integer) and (low < value if open_low else low <= value)
          and (value < high if open_high else value <= high))
    interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    check(ok, value, key=key,
          requirement=_with_note(f"use {kind} in {interval}", note))


def check_integer(value: Any, *, key: str, low: int) -> None:
    """Raise unless ``value`` is an int (not a bool) >= ``low``."""
    check(_is_number(value, integer=True) and value >= low, value, key=key,
          requirement=f"use an integer >= {low}")


def check_finite(value: Any, *, key: str) -> None:
    """Raise unless ``value`` is a finite number."""
    check(_is_number(value) and math.isfinite(value), value, key=key,
          requirement="use a finite value")


def check_positive(value: Any, *, key: str, note: str = "") -> None:
    """Raise unless ``value`` is a finite number > 0."""
    ok = _is_number(value) and value > 0 and math.isfinite(value)
    check(ok, value, key=key, requirement=_with_note("use a finite value > 0", note))


def check_gamma(gamma: Any, *, key: str, note: str = "") -> None:
    """Raise unless ``gamma`` (an exponent) is a finite number >= 0."""
    ok = _is_number(gamma) and gamma >= 0.0 and math.isfinite(gamma)
    check(ok, gamma, key=key, requirement=_with_note("use a finite value >= 0", note))


def check_alpha(alpha: Any, *, key: str) -> None:
    """Raise unless the focal-loss ``alpha`` is in [0, 1] or exactly -1 (no balancing)."""
    ok = _is_number(alpha) and (alpha == -1 or 0.0 <= alpha <= 1.0)
    check(ok, alpha, key=key,
          requirement="use a value in [0, 1], or -1 to disable alpha-balancing")


def check_focal_params(alpha: Any, gamma: Any, *, alpha_key: str, gamma_key: str) -> None:
    """:func:`check_alpha` and :func:`check_gamma` for the focal loss's (alpha, gamma)."""
    check_alpha(alpha, key=alpha_key)
    check_gamma(gamma, key=gamma_key, note="0 gives alpha-balanced cross entropy")


def check_alpha_per_class(alpha: Sequence[float], *, key: str) -> None:
    """Raise unless every per-class alpha is in [0, 1]."""
    values = list(alpha)
    bad = [a for a in values if not (_is_number(a) and 0.0 <= a <= 1.0)]
    check(not bad, values, key=key, requirement=f"every value must be in [0, 1]; got {bad}")


def check_iou_thresholds(
    thresholds: Sequence[float], labels: Sequence[int], *, thresholds_key: str, labels_key: str
) -> None:
    """Raise unless thresholds never decrease and each band has a label in {-1, 0, 1}."""
    thresholds, labels = list(thresholds), list(labels)
    check(all(_is_number(t) and 0.0 <= t <= 1.0 for t in thresholds), thresholds,
          key=thresholds_key, requirement="each IoU must be in [0, 1]")
    check(all(b >= a for a, b in zip(thresholds, thresholds[1:])), thresholds,
          key=thresholds_key,
          requirement="thresholds must be increasing (equal neighbours are allowed and make "
                      "an empty band, as in Detectron2)")
    if len(labels) != len(thresholds) + 1:
        n = len(thresholds)
        raise InvalidArgument(
            "{0}=" + _escaped(f"{labels} does not match ") + "{1}="
            + _escaped(f"{thresholds}: {n} threshold(s) make {n + 1} IoU bands, so {n + 1} "
                       "labels are needed"),
            labels_key, thresholds_key,
        )
    bad = [lab for lab in labels if lab not in (-1, 0, 1)]
    check(not bad, labels, key=labels_key,
          requirement=f"labels must be -1 (ignore), 0 (negative) or 1 (positive); got {bad}")
