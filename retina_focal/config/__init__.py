"""retina_focal's config keys (:func:`add_retina_focal_config`) and value checks."""
from retina_focal.config.defaults import (
    MEMORY_FORMATS,
    NORMALIZERS,
    add_retina_focal_config,
    check_alpha_per_class,
    check_choice,
    check_focal_params,
    check_gamma,
    check_iou_thresholds,
    check_range,
)

__all__ = [
    "MEMORY_FORMATS",
    "NORMALIZERS",
    "add_retina_focal_config",
    "check_alpha_per_class",
    "check_choice",
    "check_focal_params",
    "check_gamma",
    "check_iou_thresholds",
    "check_range",
]
