"""Classification losses, registered in ``CLS_LOSS_REGISTRY``; the interface they share is
documented in :mod:`.base`."""
from .base import DenseClsLoss
from .focal import (
    SigmoidFocalLoss,
    SigmoidFocalLossStar,
    SoftmaxFocalLoss,
    build_cls_loss,
    cls_loss_class,
)
from .iou_aware import QualityFocalLoss, VarifocalLoss

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
