"""retina_focal's config keys (:func:`add_retina_focal_config`) and value checks
(:mod:`.validation`: the ``check_*`` functions constructors validate with, and the
``configurable`` decorator that makes their errors name cfg keys), and the shipped configs
found by name (:func:`get_config_file`, :mod:`.zoo`)."""
from retina_focal.config.defaults import MEMORY_FORMATS, NORMALIZERS, add_retina_focal_config
from retina_focal.config.validation import (
    InvalidArgument,
    check,
    check_alpha,
    check_alpha_per_class,
    check_choice,
    check_finite,
    check_focal_params,
    check_gamma,
    check_integer,
    check_iou_thresholds,
    check_positive,
    check_range,
    config_value,
    config_values,
    configurable,
)
from retina_focal.config.zoo import get_config_file, list_configs

__all__ = [
    "MEMORY_FORMATS",
    "NORMALIZERS",
    "InvalidArgument",
    "add_retina_focal_config",
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
    "get_config_file",
    "list_configs",
]
