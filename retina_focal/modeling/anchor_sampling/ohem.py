"""Online hard example mining (OHEM) for a dense detector: the paper's Sec. 5.1 baseline."""
from typing import Optional

import torch
from torch import Tensor
from torchvision.ops import nms

from retina_focal.config import (
    check,
    check_choice,
    check_integer,
    check_range,
    configurable,
)
from retina_focal.modeling.anchor_sampling.base import NMS_BOXES, AnchorSampler
from retina_focal.modeling.registry import SAMPLER_REGISTRY

__all__ = ["OHEMSampler"]


@SAMPLER_REGISTRY.register()
class OHEMSampler(AnchorSampler):
    """Online hard example mining for a dense detector (the paper's Sec. 5.1 / Table 1d).

    Per image: every non-ignored anchor is scored by its classification loss (no gradient);
    anchors are visited from the highest loss down, and greedy NMS at IoU ``nms_thresh``
    drops an anchor whose box overlaps a kept one by more (so one object's many near-duplicate
    anchors do not fill the batch); the first ``batch_size`` survivors are kept.

    With ``fg_ratio`` (e.g. 0.25 for the paper's "OHEM 1:3") positives and negatives are two
    pools, each ranked and suppressed on its own (a positive is never suppressed by a
    negative): the batch takes up to ``round(batch_size * fg_ratio)`` surviving positives,
    hardest first, and is filled up to ``batch_size`` with the hardest surviving negatives.

    Boxes for the NMS (``nms_boxes``): "predicted" (default) compares the boxes the anchors
    currently predict (decoded deltas), like OHEM's NMS over detections: anchors that predict
    the same object are duplicates even when the anchors themselves differ (another scale or
    aspect ratio). "anchors" compares the fixed anchor boxes instead.

    Only the first anchors in loss order are run through NMS (2 x batch_size, doubled until
    enough survive): greedy NMS of a prefix keeps exactly the prefix's part of the full
    result, so this is exact and cheap with 100k+ anchors.

    Returns (N, R) weights: 1 for the kept anchors, 0 for the others (ignored anchors stay 0).
    """

    needs_anchor_losses = True

    @configurable
    def __init__(
        self,
        *,
        batch_size: int = 256,
        nms_thresh: float = 0.7,
        fg_ratio: float = -1.0,
        nms_boxes: str = "predicted",
    ):
        """
        Args:
            batch_size: anchors kept per image (the paper: 128, 256, 512).
            nms_thresh: IoU of the NMS among anchors ranked by loss, in (0, 1]; 1: no NMS.
            fg_ratio: fraction of the batch for positives, in (0, 1]; < 0: no fixed ratio.
            nms_boxes: the boxes the NMS compares, one of :data:`NMS_BOXES`.
        """
        check_integer(batch_size, key="batch_size", low=1)
        check_range(nms_thresh, 0.0, 1.0, key="nms_thresh", open_low=True,
                    note="1 switches the NMS off")
        check(fg_ratio < 0 or 0.0 < fg_ratio <= 1.0, fg_ratio, key="fg_ratio",
              requirement="use a fraction in (0, 1] (0.25 = 1:3 fg:bg), or a negative value "
                          "for no fixed ratio")
        check_choice(nms_boxes, NMS_BOXES, key="nms_boxes")
        self.batch_size = int(batch_size)
        self.nms_thresh = float(nms_thresh)
        self.fg_ratio = float(fg_ratio)
        self.nms_boxes = nms_boxes

    config_keys = {
        "batch_size": "MODEL.RETINA_FOCAL.OHEM_BATCH_SIZE",
        "nms_thresh": "MODEL.RETINA_FOCAL.OHEM_NMS_THRESH",
        "fg_ratio": "MODEL.RETINA_FOCAL.OHEM_FG_RATIO",
        "nms_boxes": "MODEL.RETINA_FOCAL.OHEM_NMS_BOXES",
    }

    def _first_survivors(self, order: Tensor, boxes: Optional[Tensor], k: int) -> Tensor:
        """The first ``k`` anchors of ``order`` (loss order) that greedy NMS keeps."""
        if self.nms_thresh >= 1.0 or order.numel() == 0 or k <= 0:
            return order[: max(k, 0)]
        assert boxes is not None, "NMS needs the anchors' boxes (nms_boxes)"
        total = order.numel()
        m = min(total, 2 * k)
        while True:
            prefix = order[:m]
            # scores = rank, so that NMS visits anchors exactly in our (loss) order, ties too
            rank = torch.arange(m, 0, -1, device=boxes.device, dtype=torch.float32)
            kept = prefix[nms(boxes[prefix].float(), rank, self.nms_thresh)]
            if kept.numel() >= k or m == total:
                return kept[:k]
            m = min(total, 2 * m)

    def sample(
        self, labels: Tensor, num_classes: int, anchor_losses: Optional[Tensor],
        boxes: Optional[Tensor]
    ) -> Tensor:
        """(N, R) float weights in {0, 1}; ``boxes`` (N, R, 4) are needed unless
        ``nms_thresh`` is 1."""
        if self.nms_thresh < 1.0 and (boxes is None or boxes.shape[:2] != labels.shape):
            raise ValueError("OHEMSampler needs boxes (N, R, 4) for its NMS")
        assert anchor_losses is not None  # checked by AnchorSampler.__call__
        weights = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
        for i in range(labels.shape[0]):
            boxes_i = boxes[i] if boxes is not None else None

            def by_loss(mask: Tensor) -> Tensor:
                idx = torch.nonzero(mask).squeeze(1)
                return idx[torch.argsort(anchor_losses[i][idx], descending=True, stable=True)]

            if self.fg_ratio < 0:
                selected = self._first_survivors(by_loss(labels[i] >= 0), boxes_i,
                                                 self.batch_size)
            else:
                fg_mask = (labels[i] >= 0) & (labels[i] < num_classes)
                quota = int(round(self.batch_size * self.fg_ratio))
                fg = self._first_survivors(by_loss(fg_mask), boxes_i, quota)
                bg = self._first_survivors(by_loss(labels[i] == num_classes), boxes_i,
                                           self.batch_size - fg.numel())
                selected = torch.cat([fg, bg])
            weights[i, selected] = 1.0
        return weights

    def __repr__(self) -> str:
        return (
            f"OHEMSampler(batch_size={self.batch_size}, nms_thresh={self.nms_thresh}, "
            f"fg_ratio={self.fg_ratio}, nms_boxes={self.nms_boxes!r})"
        )
