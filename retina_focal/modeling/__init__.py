"""RetinaFocal's model components. Importing this module registers all of them."""
from .assigners import ATSSAssigner, IoUThresholdMatcher, build_assigner
from .backbone import build_retina_focal_basic_resnet_fpn_backbone
from .head import RetinaFocalHead, build_retina_focal_head
from .losses import (
    QualityFocalLoss,
    SigmoidFocalLoss,
    SigmoidFocalLossStar,
    SoftmaxFocalLoss,
    VarifocalLoss,
    build_cls_loss,
)
from .meta_arch import RetinaFocal
from .samplers import AllAnchors, HardNegativeMiner, OHEMSampler, build_sampler

__all__ = [
    "RetinaFocal",
    "RetinaFocalHead",
    "SigmoidFocalLoss",
    "SigmoidFocalLossStar",
    "SoftmaxFocalLoss",
    "QualityFocalLoss",
    "VarifocalLoss",
    "AllAnchors",
    "OHEMSampler",
    "HardNegativeMiner",
    "build_sampler",
    "IoUThresholdMatcher",
    "ATSSAssigner",
    "build_assigner",
    "build_retina_focal_basic_resnet_fpn_backbone",
    "build_cls_loss",
    "build_retina_focal_head",
]
