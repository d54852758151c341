"""Anchor assigners: which anchors are positive, negative or ignored, and for which box.

Every assigner returns the same thing, so losses and samplers never know which one ran:
``labels (R,) int64`` in {-1 ignored, 0..K-1 foreground class, K background} and
``matched_boxes (R, 4)`` (the ground-truth box of each foreground anchor). Assigners treat
``gt_classes`` as opaque labels to copy: the analysis tools rely on that to recover which
ground truth each positive anchor went to (they pass ground-truth indices as classes).
"""
import math
from typing import List, Sequence, Tuple

import torch
from detectron2.config import configurable
from detectron2.structures import Boxes, Instances, pairwise_iou

from retina_focal.config import check_choice, check_iou_thresholds, check_range
from retina_focal.modeling.registry import ASSIGNER_REGISTRY, get_component

__all__ = ["IoUThresholdMatcher", "ATSSAssigner", "build_assigner", "LOW_QUALITY_MATCH_ORDERS"]

# "detectron2": Detectron2's Matcher (low-quality matches are applied last and win over every
# band); "detectron": the original Detectron's RetinaNet (negative bands are applied last).
LOW_QUALITY_MATCH_ORDERS = ("detectron2", "detectron")


def build_assigner(cfg):
    """Build the assigner named by ``MODEL.RETINA_FOCAL.ASSIGNER_NAME``."""
    name = cfg.MODEL.RETINA_FOCAL.ASSIGNER_NAME
    return get_component(ASSIGNER_REGISTRY, name, "MODEL.RETINA_FOCAL.ASSIGNER_NAME")(cfg)


def _all_background(anchors: Boxes, num_classes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    labels = torch.full(
        (len(anchors),), num_classes, dtype=torch.int64, device=anchors.device
    )
    return labels, torch.zeros_like(anchors.tensor)


@ASSIGNER_REGISTRY.register()
class IoUThresholdMatcher:
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

    @classmethod
    def from_config(cls, cfg):
        thresholds = cfg.MODEL.RETINANET.IOU_THRESHOLDS
        labels = cfg.MODEL.RETINANET.IOU_LABELS
        check_iou_thresholds(
            thresholds, labels,
            thresholds_key="MODEL.RETINANET.IOU_THRESHOLDS",
            labels_key="MODEL.RETINANET.IOU_LABELS",
        )
        rf = cfg.MODEL.RETINA_FOCAL
        check_choice(rf.LOW_QUALITY_MATCH_ORDER, LOW_QUALITY_MATCH_ORDERS,
                     key="MODEL.RETINA_FOCAL.LOW_QUALITY_MATCH_ORDER")
        check_range(rf.LOW_QUALITY_MIN_IOU, 0.0, 1.0, key="MODEL.RETINA_FOCAL.LOW_QUALITY_MIN_IOU")
        return {
            "thresholds": thresholds,
            "labels": labels,
            "allow_low_quality_matches": rf.ALLOW_LOW_QUALITY_MATCHES,
            "low_quality_match_order": rf.LOW_QUALITY_MATCH_ORDER,
            "low_quality_min_iou": rf.LOW_QUALITY_MIN_IOU,
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
            return _all_background(all_anchors, num_classes)
        matched, match_labels = self.match(pairwise_iou(gt.gt_boxes, all_anchors))
        labels = gt.gt_classes[matched].clone()
        labels[match_labels == 0] = num_classes
        labels[match_labels == -1] = -1
        return labels, gt.gt_boxes.tensor[matched]

    def __repr__(self) -> str:
        return (
            f"IoUThresholdMatcher(thresholds={self.thresholds}, labels={self.labels}, "
            f"allow_low_quality_matches={self.allow_low_quality_matches}, "
            f"low_quality_match_order={self.low_quality_match_order!r}, "
            f"low_quality_min_iou={self.low_quality_min_iou})"
        )


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
class ATSSAssigner:
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

    @classmethod
    def from_config(cls, cfg):
        topk = cfg.MODEL.RETINA_FOCAL.ATSS_TOPK
        check_range(topk, 1, 10 ** 6, key="MODEL.RETINA_FOCAL.ATSS_TOPK", integer=True)
        return {"topk": topk}

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

    def __call__(
        self, anchors: List[Boxes], gt: Instances, num_classes: int
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            anchors: one Boxes per feature level, together R anchors.
            gt: the image's ground truth, with ``gt_boxes`` and ``gt_classes``.
            num_classes: K; background anchors get label K.

        Returns:
            labels: (R,) int64 in {0..K-1, K} (no -1: ATSS ignores nothing).
            matched_boxes: (R, 4) float, the matched ground-truth box of foreground anchors.
        """
        all_anchors = Boxes.cat(anchors)
        if len(gt) == 0 or len(all_anchors) == 0:
            return _all_background(all_anchors, num_classes)
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
        labels = gt.gt_classes[matched].clone()
        labels[best < 0] = num_classes
        return labels, gt_boxes.tensor[matched]

    def __repr__(self) -> str:
        return f"ATSSAssigner(topk={self.topk}, center_margin={self.center_margin})"
