"""What every classification loss in ``CLS_LOSS_REGISTRY`` provides to RetinaFocal.

A loss is an ``nn.Module`` called as::

    loss(logits (R, C), labels (R,), weights=None)                  -> scalar (sum)
    loss(logits (R, C), labels (R,), weights=None, iou_targets=...) -> scalar (sum)

with ``labels`` int64 in {-1 ignored, 0..K-1 foreground class, K background} and ``weights``
an optional (R,) per-anchor weight (a sampler's selection). The second form is used only for
losses whose ``needs_iou_targets`` is True (IoU-aware losses): RetinaFocal then computes, without
gradient, ``iou_targets`` (R,) = IoU between each positive anchor's decoded predicted box and
its matched ground-truth box (0 for other anchors). Plain losses never receive it.

Besides ``forward`` a loss tells the rest of the model:

* ``num_logits(K)`` (classmethod): C, the scores the head predicts per anchor (K for the
  sigmoid losses, K + 1 for a softmax with a background class);
* ``prior_logit_bias(K, prior_prob)`` (classmethod): the C initial biases of the head's class
  predictor for one anchor, so that each anchor starts with foreground probability ~prior_prob;
* ``score_activation``: "sigmoid" (score of class k = sigmoid(x_k)) or "softmax" (score of class
  k = softmax(x)_k for k < K; the background column is dropped), used at inference;
* ``per_anchor(logits, labels, **targets)``: the (R,) unreduced loss of each anchor summed
  over its C scores, 0 for ignored anchors; samplers rank anchors by it.
"""
import math
from typing import ClassVar, List, Optional

import torch
from torch import Tensor, nn

from retina_focal.config.validation import ConfigKeys

__all__ = ["DenseClsLoss"]


class DenseClsLoss(nn.Module):
    """Base class: defaults for the sigmoid (one binary classifier per class) case.

    Subclasses implement :meth:`elementwise`; :meth:`forward` and :meth:`per_anchor` reduce it.
    """

    score_activation: str = "sigmoid"
    needs_iou_targets: bool = False
    # {constructor argument: cfg key}, for errors of losses built from a cfg
    config_keys: ClassVar[ConfigKeys] = {}

    @classmethod
    def num_logits(cls, num_classes: int) -> int:
        return num_classes

    @classmethod
    def prior_logit_bias(cls, num_classes: int, prior_prob: float) -> List[float]:
        """sigmoid(b) = prior_prob for every class: b = -log((1 - pi) / pi)."""
        return [-math.log((1 - prior_prob) / prior_prob)] * cls.num_logits(num_classes)

    def elementwise(
        self, logits: Tensor, labels: Tensor, iou_targets: Optional[Tensor] = None
    ) -> Tensor:
        """(R, C) loss of each score of each anchor, or (R, 1) for a loss with one term per
        anchor (softmax); rows of ignored anchors are 0. Computed in float32 or float64."""
        raise NotImplementedError

    @staticmethod
    def _check_inputs(logits: Tensor, labels: Tensor, num_logits: int) -> None:
        if logits.dim() != 2 or labels.shape != logits.shape[:1]:
            raise ValueError(
                f"Expected logits (R, C) and labels (R,); got {tuple(logits.shape)} and "
                f"{tuple(labels.shape)}"
            )
        if logits.shape[1] != num_logits:
            raise ValueError(f"Expected {num_logits} logits per anchor, got {logits.shape[1]}")

    @torch.no_grad()
    def per_anchor(self, logits: Tensor, labels: Tensor, **targets: Tensor) -> Tensor:
        """(R,) loss of each anchor (summed over its scores), without gradient."""
        return self.elementwise(logits, labels, **targets).sum(dim=1)

    @torch.jit.unused  # training only: scripted inference models never call a loss
    def forward(
        self, logits: Tensor, labels: Tensor, weights: Optional[Tensor] = None,
        **targets: Tensor
    ) -> Tensor:
        """
        Args:
            logits: (R, C) float logits, C = ``num_logits(K)``.
            labels: (R,) int64 in {-1, 0..K-1, K}.
            weights: optional (R,) per-anchor weights.
            targets: ``iou_targets`` (R,) for losses with ``needs_iou_targets``.

        Returns:
            scalar: the loss summed over anchors and scores (not normalised).
        """
        loss = self.elementwise(logits, labels, **targets)
        if weights is not None:
            loss = loss * weights.to(loss.dtype)[:, None]
        return loss.sum()
