import torch
from detectron2.config import configurable
from torch import nn

from ...config import check_focal_params
from ...ops import sigmoid_focal_loss_labels
from ...ops.focal_loss import IMPLS
from ...registry import CLS_LOSS_REGISTRY, get_component

__all__ = ["SigmoidFocalLoss", "build_cls_loss"]


def build_cls_loss(cfg) -> nn.Module:
    """Build the loss named by ``MODEL.RETINA_FOCAL.LOSS_NAME``."""
    name = cfg.MODEL.RETINA_FOCAL.LOSS_NAME
    return get_component(CLS_LOSS_REGISTRY, name, "MODEL.RETINA_FOCAL.LOSS_NAME")(cfg)


@CLS_LOSS_REGISTRY.register()
class SigmoidFocalLoss(nn.Module):
    """Sigmoid focal loss over K independent binary classifiers per anchor (the paper's eq. 5).

    ``FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)``; gamma = 0 is alpha-balanced cross
    entropy; alpha = -1 switches alpha-balancing off. Background anchors (label K) are
    negative for every class; ignored anchors (label -1) contribute nothing.

    Config: ``MODEL.RETINANET.FOCAL_LOSS_ALPHA`` and ``MODEL.RETINANET.FOCAL_LOSS_GAMMA``;
    ``MODEL.RETINA_FOCAL.FOCAL_LOSS_IMPL`` picks the implementation (the fused kernel by
    default, see :func:`retina_focal.ops.sigmoid_focal_loss_labels`).
    """

    @configurable
    def __init__(self, *, alpha: float = 0.25, gamma: float = 2.0, impl: str = "auto"):
        super().__init__()
        check_focal_params(alpha, gamma, alpha_key="alpha", gamma_key="gamma")
        if impl not in IMPLS:
            raise ValueError(f"Invalid focal loss implementation {impl!r}; choices: {IMPLS}")
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        self.impl = impl

    @classmethod
    def from_config(cls, cfg):
        alpha = cfg.MODEL.RETINANET.FOCAL_LOSS_ALPHA
        gamma = cfg.MODEL.RETINANET.FOCAL_LOSS_GAMMA
        check_focal_params(
            alpha, gamma,
            alpha_key="MODEL.RETINANET.FOCAL_LOSS_ALPHA",
            gamma_key="MODEL.RETINANET.FOCAL_LOSS_GAMMA",
        )
        impl = cfg.MODEL.RETINA_FOCAL.FOCAL_LOSS_IMPL
        if impl not in IMPLS:
            raise ValueError(
                f"MODEL.RETINA_FOCAL.FOCAL_LOSS_IMPL={impl!r} is invalid; choices: {IMPLS}"
            )
        return {"alpha": alpha, "gamma": gamma, "impl": impl}

    @torch.jit.unused  # training only: scripted inference models never call a loss
    def forward(self, logits, labels, weights=None):
        """
        Args:
            logits: (R, K) float logits.
            labels: (R,) int64 in {-1, 0..K-1, K}.
            weights: optional (R,) per-anchor weights.

        Returns:
            scalar: the loss summed over anchors and classes (not normalised).
        """
        return sigmoid_focal_loss_labels(
            logits, labels, alpha=self.alpha, gamma=self.gamma, reduction="sum", weights=weights,
            impl=self.impl,
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, impl={self.impl}"
