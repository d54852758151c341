"""Anchor assigners: which anchors are positive, negative or ignored, and for which ground
truth. Every assigner derives from :class:`AnchorAssigner`, whose docstring is the contract;
registered in ``ASSIGNER_REGISTRY`` and chosen by ``MODEL.RETINA_FOCAL.ASSIGNER_NAME``."""
from detectron2.config import CfgNode

from retina_focal.modeling.anchor_assignment.atss import ATSSAssigner, anchors_per_location
from retina_focal.modeling.anchor_assignment.base import AnchorAssigner
from retina_focal.modeling.anchor_assignment.iou_threshold import (
    LOW_QUALITY_MATCH_ORDERS,
    IoUThresholdMatcher,
)
from retina_focal.modeling.registry import ASSIGNER_REGISTRY, get_component

__all__ = [
    "AnchorAssigner",
    "ATSSAssigner",
    "IoUThresholdMatcher",
    "LOW_QUALITY_MATCH_ORDERS",
    "anchors_per_location",
    "build_assigner",
]


def build_assigner(cfg: CfgNode) -> AnchorAssigner:
    """Build the assigner named by ``MODEL.RETINA_FOCAL.ASSIGNER_NAME``."""
    name = cfg.MODEL.RETINA_FOCAL.ASSIGNER_NAME
    assigner: AnchorAssigner = get_component(
        ASSIGNER_REGISTRY, name, "MODEL.RETINA_FOCAL.ASSIGNER_NAME"
    )(cfg)
    return assigner
