"""Which anchors the classification loss is computed on: all of them (what focal loss is
for), online hard example mining (OHEM, the paper's Sec. 5.1 baseline) or SSD's hard negative
mining. Registered in ``SAMPLER_REGISTRY``, chosen by ``MODEL.RETINA_FOCAL.SAMPLER_NAME``.

A sampler only selects anchors for the classification loss: the box-regression loss is
computed on every positive anchor whatever the sampler, and both losses are divided by the
normaliser (``MODEL.RETINA_FOCAL.NORMALIZER``), which counts every positive anchor of the batch,
sampled or not. For ``HardNegativeMiner`` this is SSD's normalisation (1 / #matched anchors).
"""
import math
from typing import Optional

import torch
from detectron2.config import configurable
from torch import Tensor
from torchvision.ops import nms

from retina_focal.modeling.registry import SAMPLER_REGISTRY, get_component

__all__ = ["AllAnchors", "OHEMSampler", "HardNegativeMiner", "build_sampler"]

NMS_BOXES = ("predicted", "anchors")


def build_sampler(cfg):
    """Build the sampler named by ``MODEL.RETINA_FOCAL.SAMPLER_NAME``."""
    name = cfg.MODEL.RETINA_FOCAL.SAMPLER_NAME
    return get_component(SAMPLER_REGISTRY, name, "MODEL.RETINA_FOCAL.SAMPLER_NAME")(cfg)


@SAMPLER_REGISTRY.register()
class AllAnchors:
    """Every non-ignored anchor is used, with weight 1 (the paper's RetinaNet, Detectron2)."""

    needs_anchor_losses = False
    nms_boxes: Optional[str] = None

    @configurable
    def __init__(self):
        pass

    @classmethod
    def from_config(cls, cfg):
        return {}

    def __call__(self, labels: Tensor, num_classes: int, anchor_losses=None, boxes=None):
        """Returns None: no weights, i.e. every anchor with label >= 0 counts fully."""
        return None

    def __repr__(self) -> str:
        return "AllAnchors()"


def _check_positive_int(value, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{key}={value!r} is invalid: use an integer > 0")
    return value


@SAMPLER_REGISTRY.register()
class OHEMSampler:
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
        _check_positive_int(batch_size, "batch_size")
        if not 0.0 < nms_thresh <= 1.0:
            raise ValueError(f"nms_thresh={nms_thresh!r} is invalid: use a value in (0, 1]")
        if not (fg_ratio < 0 or 0.0 < fg_ratio <= 1.0):
            raise ValueError(f"fg_ratio={fg_ratio!r} is invalid: use (0, 1], or < 0 for none")
        if nms_boxes not in NMS_BOXES:
            raise ValueError(f"nms_boxes={nms_boxes!r} is invalid; choices: {NMS_BOXES}")
        self.batch_size = int(batch_size)
        self.nms_thresh = float(nms_thresh)
        self.fg_ratio = float(fg_ratio)
        self.nms_boxes = nms_boxes

    @classmethod
    def from_config(cls, cfg):
        rf = cfg.MODEL.RETINA_FOCAL
        _check_positive_int(rf.OHEM_BATCH_SIZE, "MODEL.RETINA_FOCAL.OHEM_BATCH_SIZE")
        if not 0.0 < rf.OHEM_NMS_THRESH <= 1.0:
            raise ValueError(
                f"MODEL.RETINA_FOCAL.OHEM_NMS_THRESH={rf.OHEM_NMS_THRESH!r} is invalid: use an "
                "IoU in (0, 1] (1 switches the NMS off)"
            )
        if not (rf.OHEM_FG_RATIO < 0 or 0.0 < rf.OHEM_FG_RATIO <= 1.0):
            raise ValueError(
                f"MODEL.RETINA_FOCAL.OHEM_FG_RATIO={rf.OHEM_FG_RATIO!r} is invalid: use a "
                "fraction in (0, 1] (0.25 = 1:3 fg:bg), or a negative value for no fixed ratio"
            )
        if rf.OHEM_NMS_BOXES not in NMS_BOXES:
            raise ValueError(
                f"MODEL.RETINA_FOCAL.OHEM_NMS_BOXES={rf.OHEM_NMS_BOXES!r} is invalid; "
                f"choices: {NMS_BOXES}"
            )
        return {
            "batch_size": rf.OHEM_BATCH_SIZE,
            "nms_thresh": rf.OHEM_NMS_THRESH,
            "fg_ratio": rf.OHEM_FG_RATIO,
            "nms_boxes": rf.OHEM_NMS_BOXES,
        }

    def _first_survivors(self, order: Tensor, boxes: Optional[Tensor], k: int) -> Tensor:
        """The first ``k`` anchors of ``order`` (loss order) that greedy NMS keeps."""
        if self.nms_thresh >= 1.0 or order.numel() == 0 or k <= 0:
            return order[: max(k, 0)]
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

    @torch.no_grad()
    def __call__(
        self,
        labels: Tensor,
        num_classes: int,
        anchor_losses: Optional[Tensor] = None,
        boxes: Optional[Tensor] = None,
    ) -> Tensor:
        """
        Args:
            labels: (N, R) int64 in {-1, 0..K-1, K}.
            num_classes: K.
            anchor_losses: (N, R) classification loss of each anchor.
            boxes: (N, R, 4) boxes for the NMS (predicted or anchor boxes, see ``nms_boxes``);
                needed unless ``nms_thresh`` is 1.

        Returns:
            (N, R) float weights in {0, 1}.
        """
        if anchor_losses is None or anchor_losses.shape != labels.shape:
            raise ValueError("OHEMSampler needs anchor_losses of the same (N, R) shape as labels")
        if self.nms_thresh < 1.0 and (boxes is None or boxes.shape[:2] != labels.shape):
            raise ValueError("OHEMSampler needs boxes (N, R, 4) for its NMS")
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


@SAMPLER_REGISTRY.register()
class HardNegativeMiner:
    """SSD's hard negative mining (Liu et al., ECCV 2016, Sec. 2.2).

    Per image: every positive anchor, plus the ``k`` negatives with the highest
    classification loss, ``k = max(floor(neg_pos_ratio * #positives), min_negatives)``
    (capped by the number of negatives). ``min_negatives`` > 0 lets images without any
    positive still contribute their hardest negatives (SSD: 0, such an image is skipped).

    Returns (N, R) weights: 1 for the selected anchors, 0 for the others (ignored stay 0).
    """

    needs_anchor_losses = True
    nms_boxes: Optional[str] = None

    @configurable
    def __init__(self, *, neg_pos_ratio: float = 3.0, min_negatives: int = 0):
        if not (neg_pos_ratio > 0 and math.isfinite(neg_pos_ratio)):
            raise ValueError(f"neg_pos_ratio={neg_pos_ratio!r} is invalid: use a value > 0")
        if isinstance(min_negatives, bool) or not isinstance(min_negatives, int) \
                or min_negatives < 0:
            raise ValueError(f"min_negatives={min_negatives!r} is invalid: use an integer >= 0")
        self.neg_pos_ratio = float(neg_pos_ratio)
        self.min_negatives = int(min_negatives)

    @classmethod
    def from_config(cls, cfg):
        rf = cfg.MODEL.RETINA_FOCAL
        ratio = rf.HNM_NEG_POS_RATIO
        if not (isinstance(ratio, (int, float)) and ratio > 0 and math.isfinite(ratio)):
            raise ValueError(
                f"MODEL.RETINA_FOCAL.HNM_NEG_POS_RATIO={ratio!r} is invalid: use a finite "
                "value > 0 (SSD: 3)"
            )
        m = rf.HNM_MIN_NEGATIVES
        if isinstance(m, bool) or not isinstance(m, int) or m < 0:
            raise ValueError(
                f"MODEL.RETINA_FOCAL.HNM_MIN_NEGATIVES={m!r} is invalid: use an integer >= 0"
            )
        return {"neg_pos_ratio": float(ratio), "min_negatives": m}

    @torch.no_grad()
    def __call__(
        self,
        labels: Tensor,
        num_classes: int,
        anchor_losses: Optional[Tensor] = None,
        boxes: Optional[Tensor] = None,
    ) -> Tensor:
        """
        Args:
            labels: (N, R) int64 in {-1, 0..K-1, K}.
            num_classes: K.
            anchor_losses: (N, R) classification loss of each anchor.
            boxes: unused.

        Returns:
            (N, R) float weights in {0, 1}.
        """
        if anchor_losses is None or anchor_losses.shape != labels.shape:
            raise ValueError(
                "HardNegativeMiner needs anchor_losses of the same (N, R) shape as labels"
            )
        fg = (labels >= 0) & (labels < num_classes)
        bg = labels == num_classes
        weights = fg.to(torch.float32)
        for i in range(labels.shape[0]):
            num_pos = int(fg[i].sum())
            neg = torch.nonzero(bg[i]).squeeze(1)
            k = min(max(int(math.floor(self.neg_pos_ratio * num_pos)), self.min_negatives),
                    neg.numel())
            if k > 0:
                hardest = torch.topk(anchor_losses[i][neg], k).indices
                weights[i, neg[hardest]] = 1.0
        return weights

    def __repr__(self) -> str:
        return (
            f"HardNegativeMiner(neg_pos_ratio={self.neg_pos_ratio}, "
            f"min_negatives={self.min_negatives})"
        )
