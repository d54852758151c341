"""Config keys added by retina_focal, and their validation.

Only new settings live under ``MODEL.RETINA_FOCAL``; keys Detectron2 already has
(``MODEL.RETINANET.FOCAL_LOSS_ALPHA``, ``IOU_THRESHOLDS``, ...) stay where they are, so a stock
Detectron2 RetinaNet config runs with ``MODEL.META_ARCHITECTURE: "RetinaFocal"`` alone.
"""
import math
from typing import Sequence

from detectron2.config import CfgNode as CN

__all__ = ["add_retina_focal_config", "check_focal_params", "check_iou_thresholds"]


def add_retina_focal_config(cfg: CN) -> None:
    """Add retina_focal's keys to a Detectron2 config, in place. Calling it twice is harmless."""
    if "RETINA_FOCAL" in cfg.MODEL:
        return
    _C = cfg
    _C.MODEL.RETINA_FOCAL = CN()
    # Head class, by name in RETINA_FOCAL_HEAD_REGISTRY.
    _C.MODEL.RETINA_FOCAL.HEAD_NAME = "RetinaFocalHead"
    # Classification loss, by name in CLS_LOSS_REGISTRY (alpha/gamma: MODEL.RETINANET.FOCAL_LOSS_*).
    _C.MODEL.RETINA_FOCAL.LOSS_NAME = "SigmoidFocalLoss"
    # Anchor assigner, by name in ASSIGNER_REGISTRY (thresholds: MODEL.RETINANET.IOU_THRESHOLDS).
    _C.MODEL.RETINA_FOCAL.ASSIGNER_NAME = "IoUThresholdMatcher"
    # Make each ground truth's highest-IoU anchors positive even below the threshold.
    _C.MODEL.RETINA_FOCAL.ALLOW_LOW_QUALITY_MATCHES = True
    # Training: skip (log and count) missing or corrupt image files instead of stopping.
    _C.MODEL.RETINA_FOCAL.SKIP_UNREADABLE_IMAGES = False


def check_focal_params(alpha: float, gamma: float, *, alpha_key: str, gamma_key: str) -> None:
    """Raise ValueError unless alpha is in [0, 1] or exactly -1 (no balancing) and gamma >= 0."""
    if not (alpha == -1 or 0.0 <= alpha <= 1.0) or math.isnan(alpha):
        raise ValueError(
            f"{alpha_key}={alpha!r} is invalid: use a value in [0, 1], or -1 to disable "
            "alpha-balancing"
        )
    if not gamma >= 0.0 or math.isinf(gamma):
        raise ValueError(
            f"{gamma_key}={gamma!r} is invalid: use a finite value >= 0 (0 gives "
            "alpha-balanced cross entropy)"
        )


def check_iou_thresholds(
    thresholds: Sequence[float], labels: Sequence[int], *, thresholds_key: str, labels_key: str
) -> None:
    """Raise ValueError unless thresholds increase and there is one label (-1, 0 or 1) per band."""
    thresholds = list(thresholds)
    labels = list(labels)
    if any(not (0.0 <= t <= 1.0) for t in thresholds):
        raise ValueError(f"{thresholds_key}={thresholds} is invalid: each IoU must be in [0, 1]")
    if any(b <= a for a, b in zip(thresholds, thresholds[1:])):
        raise ValueError(
            f"{thresholds_key}={thresholds} is invalid: thresholds must be strictly increasing"
        )
    if len(labels) != len(thresholds) + 1:
        raise ValueError(
            f"{labels_key}={labels} does not match {thresholds_key}={thresholds}: "
            f"{len(thresholds)} threshold(s) make {len(thresholds) + 1} IoU bands, so "
            f"{len(thresholds) + 1} labels are needed"
        )
    bad = [lab for lab in labels if lab not in (-1, 0, 1)]
    if bad:
        raise ValueError(
            f"{labels_key}={labels} is invalid: labels must be -1 (ignore), 0 (negative) or "
            f"1 (positive); got {bad}"
        )
