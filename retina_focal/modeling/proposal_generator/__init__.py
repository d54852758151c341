"""Proposal generators for Detectron2's two-stage detectors, registered in Detectron2's
``PROPOSAL_GENERATOR_REGISTRY`` (``MODEL.PROPOSAL_GENERATOR.NAME``)."""
from retina_focal.modeling.proposal_generator.focal_rpn import (
    RPN_BOX_NORMALIZERS,
    RPN_NORMALIZERS,
    RPN_SAMPLINGS,
    FocalRPN,
    build_objectness_loss,
    build_rpn_assigner,
    objectness_class_labels,
)

__all__ = [
    "FocalRPN",
    "RPN_BOX_NORMALIZERS",
    "RPN_NORMALIZERS",
    "RPN_SAMPLINGS",
    "build_objectness_loss",
    "build_rpn_assigner",
    "objectness_class_labels",
]
