"""IoU-aware classification losses: the class score of a positive anchor is trained towards
the IoU of its predicted box with its ground truth, not towards 1.

Both take ``iou_targets`` (R,): for a positive anchor, the IoU between its decoded predicted
box and its matched ground-truth box, computed by RetinaFocal without gradient (the target is
a constant); for other anchors the value is not read. The soft target q of (anchor, class) is
that IoU for the anchor's class of a positive anchor and 0 everywhere else.
"""
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from torch import Tensor

from retina_focal.config import check_gamma, check_positive, config_values, configurable
from retina_focal.modeling.losses.base import DenseClsLoss
from retina_focal.modeling.losses.focal import _reject_alpha_per_class, _sigmoid_targets
from retina_focal.modeling.registry import CLS_LOSS_REGISTRY
from retina_focal.ops.numerics import to_compute_dtype, unit_pow

__all__ = ["QualityFocalLoss", "VarifocalLoss"]


def _soft_targets(
    logits: Tensor, labels: Tensor, iou_targets: Optional[Tensor], name: str
) -> Tuple[Tensor, Tensor, Tensor]:
    if iou_targets is None:
        raise ValueError(f"{name} needs iou_targets (R,): the IoU of each positive anchor's box")
    if iou_targets.shape != labels.shape:
        raise ValueError(
            f"{name}: iou_targets must have shape (R,) = {tuple(labels.shape)}, got "
            f"{tuple(iou_targets.shape)}"
        )
    x = to_compute_dtype(logits)
    q, valid = _sigmoid_targets(labels, x.shape[1], iou_targets.detach().to(x.dtype).clamp(0, 1))
    return x, q, valid.to(x.dtype)[:, None]


@CLS_LOSS_REGISTRY.register()
class QualityFocalLoss(DenseClsLoss):
    """Quality Focal Loss (Generalized Focal Loss, Li et al., NeurIPS 2020, eq. 6).

    With sigma = sigmoid(x) and soft target y in [0, 1] (IoU target, see module doc)::

        QFL = -|y - sigma|^beta ((1 - y) log(1 - sigma) + y log(sigma))

    i.e. binary cross entropy with a soft target, scaled by the distance to it (beta = 2 in
    the paper). Negatives (y = 0) get -sigma^beta log(1 - sigma), focal loss without alpha.

    Config: ``MODEL.RETINA_FOCAL.QFL_BETA`` (>= 0).
    """

    needs_iou_targets = True

    @configurable
    def __init__(self, *, beta: float = 2.0):
        super().__init__()
        check_gamma(beta, key="beta")
        self.beta = float(beta)

    config_keys = {"beta": "MODEL.RETINA_FOCAL.QFL_BETA"}

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, Any]:
        _reject_alpha_per_class(cfg, cls.__name__)
        return config_values(cfg, cls.config_keys)

    def elementwise(
        self, logits: Tensor, labels: Tensor, iou_targets: Optional[Tensor] = None
    ) -> Tensor:
        self._check_inputs(logits, labels, logits.shape[1])
        x, y, valid = _soft_targets(logits, labels, iou_targets, type(self).__name__)
        bce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
        return bce * unit_pow((y - torch.sigmoid(x)).abs(), self.beta) * valid

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


@CLS_LOSS_REGISTRY.register()
class VarifocalLoss(DenseClsLoss):
    """Varifocal Loss (VarifocalNet, Zhang et al., CVPR 2021, eq. 2).

    With p = sigmoid(x) and soft target q (IoU target, see module doc)::

        VFL = -q (q log(p) + (1 - q) log(1 - p))    if q > 0
        VFL = -alpha p^gamma log(1 - p)             if q = 0

    Positives are weighted by their own target (high-quality positives count more), only
    negatives are down-weighted (alpha = 0.75, gamma = 2 in the paper).

    Config: ``MODEL.RETINA_FOCAL.VFL_ALPHA`` (> 0), ``MODEL.RETINA_FOCAL.VFL_GAMMA`` (>= 0).
    """

    needs_iou_targets = True

    @configurable
    def __init__(self, *, alpha: float = 0.75, gamma: float = 2.0):
        super().__init__()
        check_positive(alpha, key="alpha")
        check_gamma(gamma, key="gamma")
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    config_keys = {"alpha": "MODEL.RETINA_FOCAL.VFL_ALPHA", "gamma": "MODEL.RETINA_FOCAL.VFL_GAMMA"}

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, Any]:
        _reject_alpha_per_class(cfg, cls.__name__)
        return config_values(cfg, cls.config_keys)

    def elementwise(
        self, logits: Tensor, labels: Tensor, iou_targets: Optional[Tensor] = None
    ) -> Tensor:
        self._check_inputs(logits, labels, logits.shape[1])
        x, q, valid = _soft_targets(logits, labels, iou_targets, type(self).__name__)
        bce = F.binary_cross_entropy_with_logits(x, q, reduction="none")
        negative_weight = self.alpha * unit_pow(torch.sigmoid(x), self.gamma)
        return bce * torch.where(q > 0, q, negative_weight) * valid

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}"
