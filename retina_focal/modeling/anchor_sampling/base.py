"""What every training-sample selector in ``SAMPLER_REGISTRY`` declares and computes."""
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Dict, Optional

import torch
from detectron2.config import CfgNode
from torch import Tensor

from retina_focal.config.validation import ConfigKeys, config_values

__all__ = ["AnchorSampler", "NMS_BOXES"]

# What a sampler's NMS compares: the boxes the anchors predict, or the anchors themselves.
NMS_BOXES = ("predicted", "anchors")


class AnchorSampler(ABC):
    """Chooses the anchors the classification loss is computed on, and their weights.

    Called as ``sampler(labels, num_classes, anchor_losses=None, boxes=None)``:

    Args:
        labels: (N, R) int64 in {-1 ignored, 0..K-1 foreground class, K background}.
        num_classes: K.
        anchor_losses: (N, R) classification loss of each anchor, without gradient; given
            (by RetinaFocal) only to samplers whose ``needs_anchor_losses`` is True.
        boxes: (N, R, 4) XYXY boxes, given only to samplers whose ``nms_boxes`` is not None:
            the boxes the anchors predict ("predicted") or the anchors ("anchors").

    Returns:
        None (every non-ignored anchor, weight 1) or (N, R) float per-anchor weights
        (ignored anchors must get 0).

    Declared by each sampler, read by RetinaFocal to know what to compute before the call:
    ``needs_anchor_losses`` and ``nms_boxes`` (None or one of :data:`NMS_BOXES`).
    """

    needs_anchor_losses: bool = False
    nms_boxes: Optional[str] = None
    # {constructor argument: cfg key}: what from_config reads, and the keys errors name
    config_keys: ClassVar[ConfigKeys] = {}

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, Any]:
        """The constructor's arguments, read from ``cfg`` at the keys of ``config_keys``."""
        return config_values(cfg, cls.config_keys)

    @torch.no_grad()
    def __call__(
        self,
        labels: Tensor,
        num_classes: int,
        anchor_losses: Optional[Tensor] = None,
        boxes: Optional[Tensor] = None,
    ) -> Optional[Tensor]:
        if self.needs_anchor_losses and (
            anchor_losses is None or anchor_losses.shape != labels.shape
        ):
            raise ValueError(
                f"{type(self).__name__} needs anchor_losses of the same (N, R) shape as labels"
            )
        return self.sample(labels, num_classes, anchor_losses, boxes)

    @abstractmethod
    def sample(
        self,
        labels: Tensor,
        num_classes: int,
        anchor_losses: Optional[Tensor],
        boxes: Optional[Tensor],
    ) -> Optional[Tensor]:
        """The weights, as in the class docstring (``anchor_losses`` already checked)."""
