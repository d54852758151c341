"""IoU-threshold anchor assignment: Detectron2's ``Matcher`` (RetinaNet's default), with the
original Detectron's order of low-quality matches as an option."""
from typing import List, Sequence, Tuple

import torch
from detectron2.structures import Boxes, Instances, pairwise_iou

from retina_focal.config import (
    check_choice,
    check_iou_thresholds,
    check_range,
    configurable,
)
from retina_focal.modeling.anchor_assignment.base import AnchorAssigner
from retina_focal.modeling.registry import ASSIGNER_REGISTRY

__all__ = ["IoUThresholdMatcher", "LOW_QUALITY_MATCH_ORDERS"]

# "detectron2": Detectron2's Matcher (low-quality matches are applied last and win over every
# band); "detectron": the original Detectron's RetinaNet (negative bands are applied last).
LOW_QUALITY_MATCH_ORDERS = ("detectron2", "detectron")


@ASSIGNER_REGISTRY.register()
class IoUThresholdMatcher(AnchorAssigner):
    """Label anchors by their best IoU with any ground truth, in bands cut by thresholds.

    Bands (Detectron2's ``IOU_THRESHOLDS`` / ``IOU_LABELS`` semantics): ``n`` thresholds
    ``t_1 <= ... <= t_n`` cut [0, inf) into ``n + 1`` bands ``[0, t_1), [t_1, t_2), ...,
    [t_n, inf)``, each with a label: 1 positive, 0 negative, -1 ignored. An anchor falls in the
    band of its best IoU over all ground truths and is matched to that ground truth (ties: the
    lowest index). Equal neighbouring thresholds make an empty band: ``[0.5, 0.5]`` with
    ``[0, -1, 1]`` means "no ignored anchors".

    Low-quality matches (``allow_low_quality_matches``): every anchor whose IoU with a ground
    truth equals that ground truth's highest IoU over all anchors (all ties, as Detectron2) is
    promoted to positive, if that highest IoU is >= ``low_quality_min_iou``. A promoted anchor
    still regresses to the ground truth it overlaps most, which need not be the one that
    promoted it (as in Detectron and Detectron2). ``low_quality_match_order`` says what wins
    when a promoted anchor lies in a *negative* band:

    * ``"detectron2"`` (Detectron2's ``Matcher.set_low_quality_matches_``, applied after the
      bands): the promotion wins, the anchor is positive whatever its IoU;
    * ``"detectron"`` (the original Detectron's ``_get_retinanet_blobs``: best anchors first,
      then IoU >= positive threshold, then IoU < negative threshold set to background last):
      the negative band wins, so only promoted anchors from ignored bands become positive.

    With ``low_quality_min_iou = 0`` (Detectron2), a ground truth that overlaps no anchor at all
    (IoU 0 everywhere, e.g. a degenerate box) promotes every anchor with IoU 0 to it, exactly as
    Detectron2 does; any value > 0 avoids that.

    Example: 3 ground truths x 5 anchors, thresholds [0.4, 0.5], labels [0, -1, 1]::

        iou = [[0.9, 0.45, 0.10, 0.0, 0.00],    # gt 0: best anchor 0 (0.9)
               [0.0, 0.30, 0.35, 0.2, 0.00],    # gt 1: best anchor 2 (0.35, negative band)
               [0.0, 0.00, 0.00, 0.1, 0.42]]    # gt 2: best anchor 4 (0.42, ignored band)
        matched_idxs                          = [0,  0, 1, 1, 2]
        bands only (no low-quality matches)   = [1, -1, 0, 0, -1]
        order "detectron2"                    = [1, -1, 1, 0, 1]   anchor 2 promoted from 0
        order "detectron"                     = [1, -1, 0, 0, 1]   anchor 2 stays negative
        "detectron2", low_quality_min_iou 0.4 = [1, -1, 0, 0, 1]   gt 1's best 0.35 < 0.4
    """

    @configurable
    def __init__(
        self,
        *,
        thresholds: Sequence[float] = (0.4, 0.5),
        labels: Sequence[int] = (0, -1, 1),
        allow_low_quality_matches: bool = True,
        low_quality_match_order: str = "detectron2",
        low_quality_min_iou: float = 0.0,
    ):
        """
        Args:
            thresholds: n non-decreasing IoUs in [0, 1].
            labels: n + 1 labels in {-1, 0, 1}, one per band.
            allow_low_quality_matches: promote each ground truth's best anchors to positive.
            low_quality_match_order: "detectron2" or "detectron" (see the class docstring).
            low_quality_min_iou: promote only for ground truths whose best IoU is >= this.
        """
        check_iou_thresholds(thresholds, labels, thresholds_key="thresholds", labels_key="labels")
        check_choice(low_quality_match_order, LOW_QUALITY_MATCH_ORDERS,
                     key="low_quality_match_order")
        check_range(low_quality_min_iou, 0.0, 1.0, key="low_quality_min_iou")
        self.thresholds = [float(t) for t in thresholds]
        self.labels = [int(x) for x in labels]
        self.allow_low_quality_matches = bool(allow_low_quality_matches)
        self.low_quality_match_order = low_quality_match_order
        self.low_quality_min_iou = float(low_quality_min_iou)

    config_keys = {
        "thresholds": "MODEL.RETINANET.IOU_THRESHOLDS",
        "labels": "MODEL.RETINANET.IOU_LABELS",
        "allow_low_quality_matches": "MODEL.RETINA_FOCAL.ALLOW_LOW_QUALITY_MATCHES",
        "low_quality_match_order": "MODEL.RETINA_FOCAL.LOW_QUALITY_MATCH_ORDER",
        "low_quality_min_iou": "MODEL.RETINA_FOCAL.LOW_QUALITY_MIN_IOU",
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
        # band b = number of thresholds <= best_iou, so band 0 is [0, t1), band n is [tn, inf)
        bounds = torch.tensor(self.thresholds, dtype=best_iou.dtype, device=best_iou.device)
        band = torch.bucketize(best_iou, bounds, right=True)
        band_labels = torch.tensor(self.labels, dtype=torch.int8, device=best_iou.device)[band]
        match_labels = band_labels.clone()
        if self.allow_low_quality_matches:
            best_per_gt = iou.max(dim=1, keepdim=True).values  # (M, 1)
            eligible = best_per_gt >= self.low_quality_min_iou  # (M, 1)
            promoted = ((iou == best_per_gt) & eligible).any(dim=0)  # (N,)
            if self.low_quality_match_order == "detectron":
                promoted &= band_labels != 0
            match_labels[promoted] = 1
        return matched, match_labels

    def assign(
        self, anchors: List[Boxes], all_anchors: Boxes, gt: Instances
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.match(pairwise_iou(gt.gt_boxes, all_anchors))

    def __repr__(self) -> str:
        return (
            f"IoUThresholdMatcher(thresholds={self.thresholds}, labels={self.labels}, "
            f"allow_low_quality_matches={self.allow_low_quality_matches}, "
            f"low_quality_match_order={self.low_quality_match_order!r}, "
            f"low_quality_min_iou={self.low_quality_min_iou})"
        )
