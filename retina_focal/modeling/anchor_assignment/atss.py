"""Adaptive Training Sample Selection (ATSS) anchor assignment."""
import math
from typing import List, Tuple

import torch
from detectron2.structures import Boxes, Instances, pairwise_iou

from retina_focal.config import check_range, configurable
from retina_focal.modeling.anchor_assignment.base import AnchorAssigner
from retina_focal.modeling.registry import ASSIGNER_REGISTRY

__all__ = ["ATSSAssigner", "anchors_per_location"]


def anchors_per_location(anchors: Boxes, tol: float = 1.0 / 16) -> int:
    """The number A of anchors sharing each centre of a level's grid (R = H * W * A).

    Counted as the anchors whose centre is within ``tol`` pixels of the first anchor's centre,
    so it does not depend on the order in which the generator lays anchors out.
    """
    if len(anchors) == 0:
        return 1
    centers = anchors.get_centers()
    same = ((centers - centers[0]).abs().max(dim=1).values <= tol).sum().item()
    if len(anchors) % same != 0:
        raise ValueError(
            f"Cannot infer anchors per location: {same} anchors share the first centre, which "
            f"does not divide the level's {len(anchors)} anchors"
        )
    return int(same)


@ASSIGNER_REGISTRY.register()
class ATSSAssigner(AnchorAssigner):
    """Adaptive Training Sample Selection (Zhang et al., "Bridging the Gap Between Anchor-based
    and Anchor-free Detection via Adaptive Training Sample Selection", CVPR 2020).

    For each ground truth g:

    1. on every feature level, take as candidates the ``topk * A`` anchors whose centres are
       closest (Euclidean) to g's centre, A being the number of anchors per location on that
       level: with the paper's RetinaNet anchors (A = 9) that is the 9 anchors of each of the
       ``topk`` nearest locations, as the paper's official implementation counts; with one
       anchor per location it is the paper's ``k`` anchors. Distance ties go to the lower
       anchor index. A level with fewer anchors gives all of them;
    2. threshold t_g = mean + std of the candidates' IoUs with g (std with Bessel's correction,
       as the official implementation; 0 when there is a single candidate);
    3. a candidate is positive for g if its IoU >= t_g and its centre lies inside g, more than
       ``center_margin`` pixels from every side.

    An anchor positive for several ground truths goes to the one with the highest IoU (ties:
    the lowest index). Every other anchor is background: ATSS has **no ignored anchors** (label
    -1 never occurs), so IoU thresholds and low-quality settings do not apply. A ground truth
    may end up with no positive anchor, when no candidate's centre falls inside it (a box
    thinner than the anchor stride lying between centres).
    """

    @configurable
    def __init__(self, *, topk: int = 9, center_margin: float = 0.01):
        """
        Args:
            topk: candidates per level and per anchor of a location (>= 1).
            center_margin: how far (pixels) inside the box a positive anchor's centre must be.
        """
        check_range(topk, 1, 10 ** 6, key="topk", integer=True)
        check_range(center_margin, 0.0, math.inf, key="center_margin")
        self.topk = int(topk)
        self.center_margin = float(center_margin)

    config_keys = {"topk": "MODEL.RETINA_FOCAL.ATSS_TOPK"}

    def candidates(self, anchors: List[Boxes], gt_boxes: Boxes) -> torch.Tensor:
        """(M, C) indices into the concatenated anchors: each ground truth's candidates."""
        gt_centers = gt_boxes.get_centers()  # (M, 2)
        out, start = [], 0
        for level in anchors:
            n = len(level)
            if n == 0:
                continue
            k = min(self.topk * anchors_per_location(level), n)
            dist2 = (gt_centers[:, None, :] - level.get_centers()[None, :, :]).pow(2).sum(-1)
            order = torch.sort(dist2, dim=1, stable=True).indices[:, :k]  # (M, k)
            out.append(order + start)
            start += n
        return torch.cat(out, dim=1)

    def assign(
        self, anchors: List[Boxes], all_anchors: Boxes, gt: Instances
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Positives get label 1, every other anchor 0 (ATSS ignores nothing)."""
        gt_boxes = gt.gt_boxes
        iou = pairwise_iou(gt_boxes, all_anchors)  # (M, R)
        cand = self.candidates(anchors, gt_boxes)  # (M, C)
        cand_iou = iou.gather(1, cand)
        if cand.shape[1] > 1:
            thresh = cand_iou.mean(dim=1) + cand_iou.std(dim=1)
        else:
            thresh = cand_iou[:, 0]
        centers = all_anchors.get_centers()[cand]  # (M, C, 2)
        box = gt_boxes.tensor[:, None, :]  # (M, 1, 4)
        margin = torch.stack(
            [centers[..., 0] - box[..., 0], centers[..., 1] - box[..., 1],
             box[..., 2] - centers[..., 0], box[..., 3] - centers[..., 1]], dim=-1
        ).min(dim=-1).values
        positive = (cand_iou >= thresh[:, None]) & (margin > self.center_margin)  # (M, C)

        pos_iou = torch.full_like(iou, -1.0)
        rows = torch.arange(len(gt_boxes), device=iou.device)[:, None].expand_as(cand)
        pos_iou[rows[positive], cand[positive]] = cand_iou[positive]
        best, matched = pos_iou.max(dim=0)  # ties -> the first (lowest) ground-truth index
        return matched, (best >= 0).to(torch.int8)

    def __repr__(self) -> str:
        return f"ATSSAssigner(topk={self.topk}, center_margin={self.center_margin})"
