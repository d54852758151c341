"""RetinaFocal's model components and FocalRPN. Importing this module registers all of them."""
from retina_focal.modeling.anchor_assignment import (
    AnchorAssigner,
    ATSSAssigner,
    IoUThresholdMatcher,
    build_assigner,
)
from retina_focal.modeling.anchor_sampling import (
    AllAnchors,
    AnchorSampler,
    HardNegativeMiner,
    OHEMSampler,
    build_sampler,
)
from retina_focal.modeling.backbone import (
    build_retina_focal_basic_resnet_fpn_backbone,
    build_retina_focal_basic_resnet_fpn_p2_backbone,
)
from retina_focal.modeling.head import RetinaFocalHead, build_retina_focal_head
from retina_focal.modeling.losses import (
    DenseClsLoss,
    QualityFocalLoss,
    SigmoidFocalLoss,
    SigmoidFocalLossStar,
    SoftmaxFocalLoss,
    VarifocalLoss,
    build_cls_loss,
)
from retina_focal.modeling.meta_arch import RetinaFocal
from retina_focal.modeling.proposal_generator import FocalRPN

__all__ = [
    "RetinaFocal",
    "RetinaFocalHead",
    "FocalRPN",
    "AnchorAssigner",
    "AnchorSampler",
    "DenseClsLoss",
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
    "build_retina_focal_basic_resnet_fpn_p2_backbone",
    "build_cls_loss",
    "build_retina_focal_head",
]
