"""Classification losses, registered in ``CLS_LOSS_REGISTRY``."""
from .focal import SigmoidFocalLoss, build_cls_loss

__all__ = ["SigmoidFocalLoss", "build_cls_loss"]
