"""Every anchor, as focal loss intends."""
from typing import Optional

from torch import Tensor

from retina_focal.config import configurable
from retina_focal.modeling.anchor_sampling.base import AnchorSampler
from retina_focal.modeling.registry import SAMPLER_REGISTRY

__all__ = ["AllAnchors"]


@SAMPLER_REGISTRY.register()
class AllAnchors(AnchorSampler):
    """Every non-ignored anchor is used, with weight 1 (the paper's RetinaNet, Detectron2)."""

    @configurable
    def __init__(self) -> None:
        pass

    def sample(
        self, labels: Tensor, num_classes: int, anchor_losses: Optional[Tensor],
        boxes: Optional[Tensor]
    ) -> Optional[Tensor]:
        """None: no weights, i.e. every anchor with label >= 0 counts fully."""
        return None

    def __repr__(self) -> str:
        return "AllAnchors()"
