"""Anchor assigners: which anchors are positive, negative or ignored, and for which box.

Every assigner returns the same thing, so losses and samplers never know which one ran:
``labels (R,) int64`` in {-1 ignored, 0..K-1 foreground class, K background} and
``matched_boxes (R, 4)`` (the ground-truth box of each foreground anchor).
"""
from typing import List, Sequence, Tuple

import torch
from detectron2.config import configurable
from detectron2.structures import Boxes, Instances, pairwise_iou

from ..config import check_iou_thresholds
from ..registry import ASSIGNER_REGISTRY, get_component

__all__ = ["IoUThresholdMatcher", "build_assigner"]


def build_assigner(cfg):
    """Build the assigner named by ``MODEL.RETINA_FOCAL.ASSIGNER_NAME``."""
    name = cfg.MODEL.RETINA_FOCAL.ASSIGNER_NAME
    return get_component(ASSIGNER_REGISTRY, name, "MODEL.RETINA_FOCAL.ASSIGNER_NAME")(cfg)


@ASSIGNER_REGISTRY.register()
class IoUThresholdMatcher:
    """Label anchors by their best IoU with any ground truth, in bands cut by thresholds.

    With ``thresholds=[0.4, 0.5]`` and ``labels=[0, -1, 1]`` (RetinaNet's default) an anchor
    whose best IoU is < 0.4 is negative, in [0.4, 0.5) ignored, and >= 0.5 positive for the
    ground truth it overlaps most. With ``allow_low_quality_matches``, each ground truth's
    highest-IoU anchor(s) (all ties) become positive as well, even below 0.5; such an anchor
    keeps regressing to the ground truth it overlaps most, as in Detectron2.

    Example (2 ground truths x 4 anchors; thresholds [0.4, 0.5], labels [0, -1, 1])::

        iou = [[0.9, 0.45, 0.1, 0.0],
               [0.0, 0.30, 0.2, 0.3]]
        match(iou) -> matched_idxs [0, 0, 1, 1], match_labels [1, -1, 0, 1 if low-quality else 0]
    """

    @configurable
    def __init__(
        self,
        *,
        thresholds: Sequence[float] = (0.4, 0.5),
        labels: Sequence[int] = (0, -1, 1),
        allow_low_quality_matches: bool = True,
    ):
        check_iou_thresholds(thresholds, labels, thresholds_key="thresholds", labels_key="labels")
        self.thresholds = [float(t) for t in thresholds]
        self.labels = [int(x) for x in labels]
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    @classmethod
    def from_config(cls, cfg):
        thresholds = cfg.MODEL.RETINANET.IOU_THRESHOLDS
        labels = cfg.MODEL.RETINANET.IOU_LABELS
        check_iou_thresholds(
            thresholds, labels,
            thresholds_key="MODEL.RETINANET.IOU_THRESHOLDS",
            labels_key="MODEL.RETINANET.IOU_LABELS",
        )
        return {
            "thresholds": thresholds,
            "labels": labels,
            "allow_low_quality_matches": cfg.MODEL.RETINA_FOCAL.ALLOW_LOW_QUALITY_MATCHES,
        }

    def match(self, iou: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            iou: (M, N) IoU of M ground truths with N anchors, all >= 0.

        Returns:
            matched_idxs: (N,) int64, the ground truth each anchor overlaps most (0 if M == 0).
            match_labels: (N,) int8 in {-1, 0, 1}.
        """
        if iou.dim() != 2:
            raise ValueError(f"Expected an (M, N) IoU matrix, got shape {tuple(iou.shape)}")
        num_anchors = iou.shape[1]
        if iou.shape[0] == 0 or num_anchors == 0:
            matched = iou.new_zeros((num_anchors,), dtype=torch.int64)
            return matched, iou.new_full((num_anchors,), self.labels[0], dtype=torch.int8)
        best_iou, matched = iou.max(dim=0)
        # band b = number of thresholds <= best_iou, so band 0 is [0, t0), band n is [t_n-1, inf)
        bounds = torch.tensor(self.thresholds, dtype=best_iou.dtype, device=best_iou.device)
        band = torch.bucketize(best_iou, bounds, right=True)
        band_labels = torch.tensor(self.labels, dtype=torch.int8, device=best_iou.device)
        match_labels = band_labels[band]
        if self.allow_low_quality_matches:
            best_per_gt = iou.max(dim=1, keepdim=True).values  # (M, 1)
            is_best = (iou == best_per_gt).any(dim=0)
            match_labels[is_best] = 1
        return matched, match_labels

    def __call__(
        self, anchors: List[Boxes], gt: Instances, num_classes: int
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            anchors: one Boxes per feature level, together R anchors.
            gt: the image's ground truth, with ``gt_boxes`` and ``gt_classes``.
            num_classes: K; background anchors get label K.

        Returns:
            labels: (R,) int64 in {-1, 0..K-1, K}.
            matched_boxes: (R, 4) float, the matched ground-truth box of foreground anchors
                (zeros when the image has no ground truth).
        """
        all_anchors = Boxes.cat(anchors)
        if len(gt) == 0:
            labels = torch.full(
                (len(all_anchors),), num_classes, dtype=torch.int64, device=all_anchors.device
            )
            return labels, torch.zeros_like(all_anchors.tensor)
        matched, match_labels = self.match(pairwise_iou(gt.gt_boxes, all_anchors))
        labels = gt.gt_classes[matched].clone()
        labels[match_labels == 0] = num_classes
        labels[match_labels == -1] = -1
        return labels, gt.gt_boxes.tensor[matched]

    def __repr__(self) -> str:
        return (
            f"IoUThresholdMatcher(thresholds={self.thresholds}, labels={self.labels}, "
            f"allow_low_quality_matches={self.allow_low_quality_matches})"
        )
