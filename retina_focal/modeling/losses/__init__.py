"""Classification losses, registered in ``CLS_LOSS_REGISTRY``; the interface they share is
documented in :mod:`.base`."""
from retina_focal.modeling.losses.base import DenseClsLoss
from retina_focal.modeling.losses.focal import (
    SigmoidFocalLoss,
    SigmoidFocalLossStar,
    SoftmaxFocalLoss,
    build_cls_loss,
    cls_loss_class,
)
from retina_focal.modeling.losses.iou_aware import QualityFocalLoss, VarifocalLoss

__all__ = [
    "DenseClsLoss",
    "QualityFocalLoss",
    "SigmoidFocalLoss",
    "SigmoidFocalLossStar",
    "SoftmaxFocalLoss",
    "VarifocalLoss",
    "build_cls_loss",
    "cls_loss_class",
]
