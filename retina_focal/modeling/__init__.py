"""RetinaFocal's model components. Importing this module registers all of them."""
from .assigners import ATSSAssigner, IoUThresholdMatcher, build_assigner
from .backbone import build_retina_focal_basic_resnet_fpn_backbone
from .head import RetinaFocalHead, build_retina_focal_head
from .losses import SigmoidFocalLoss, build_cls_loss
from .meta_arch import RetinaFocal

__all__ = [
    "RetinaFocal",
    "RetinaFocalHead",
    "SigmoidFocalLoss",
    "IoUThresholdMatcher",
    "ATSSAssigner",
    "build_assigner",
    "build_retina_focal_basic_resnet_fpn_backbone",
    "build_cls_loss",
    "build_retina_focal_head",
]
