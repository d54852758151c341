"""RetinaFocal: Detectron2's RetinaNet with its head, loss and anchor assigner made swappable."""
import logging
from typing import Any, Dict, List, Optional, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, RetinaNet, build_backbone
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.modeling.box_regression import Box2BoxTransform, _dense_box_regression_loss
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.structures.boxes import matched_pairwise_iou
from detectron2.utils.events import get_event_storage
from torch import Tensor

from retina_focal.config import (
    NORMALIZERS,
    check_choice,
    check_integer,
    check_range,
    config_values,
    configurable,
)
from retina_focal.config.loading import ConfigError
from retina_focal.modeling.anchor_assignment import AnchorAssigner, build_assigner
from retina_focal.modeling.anchor_sampling import AllAnchors, AnchorSampler, build_sampler
from retina_focal.modeling.head import RetinaFocalHead, build_retina_focal_head
from retina_focal.modeling.losses import DenseClsLoss, build_cls_loss
from retina_focal.modeling.training_state import HasTrainingState, positive_anchor_normalizer

__all__ = ["RetinaFocal", "anchor_targets", "head_feature_shapes"]


def head_feature_shapes(backbone: Backbone, in_features: List[str]) -> List[ShapeSpec]:
    """The backbone's ShapeSpecs of ``MODEL.RETINANET.IN_FEATURES``, in that order; a name the
    backbone does not produce is a :class:`~retina_focal.config.loading.ConfigError` (a
    ValueError; a command prints it as one line) listing what it does produce."""
    shapes = backbone.output_shape()
    missing = [f for f in in_features if f not in shapes]
    if missing:
        raise ConfigError(
            f"MODEL.RETINANET.IN_FEATURES={in_features} names {missing}, which the "
            f"backbone does not produce; it produces {sorted(shapes)}"
        )
    return [shapes[f] for f in in_features]


logger = logging.getLogger(__name__)


def _require(component: object, base: type, name: str) -> None:
    """TypeError unless ``component`` derives from ``base``, the interface RetinaFocal calls."""
    if not isinstance(component, base):
        raise TypeError(
            f"RetinaFocal's {name} must be a {base.__module__}.{base.__qualname__} (the interface "
            f"RetinaFocal calls); got {type(component).__module__}.{type(component).__qualname__}"
        )


@META_ARCH_REGISTRY.register()
# Detectron2 has no annotations: RetinaNet is Any to mypy
class RetinaFocal(RetinaNet, HasTrainingState):  # type: ignore[misc]
    """RetinaNet (Lin et al., ICCV 2017) whose head, classification loss, anchor assigner and
    training-sample selection are registered components chosen by
    ``MODEL.RETINA_FOCAL.{HEAD,LOSS,ASSIGNER,SAMPLER}_NAME``.

    It subclasses Detectron2's :class:`RetinaNet`: parameters, inference, checkpoints and
    export are Detectron2's. With default settings it computes the same losses as RetinaNet.

    Training step: anchors -> ``assigner`` (labels (N, R) in {-1, 0..K-1, K}, matched boxes
    (N, R, 4)) -> ``sampler`` (optional (N, R) anchor weights) ->
    ``cls_loss(logits (N*R, C), labels (N*R,), weights)`` and Detectron2's dense box regression
    loss, both divided by the normaliser: the number of positive anchors per batch, either
    its EMA (``normalizer="ema"``, Detectron2) or the batch's own count (``"batch"``, the paper).

    The head predicts C = ``cls_loss.num_logits(K)`` scores per anchor (K + 1 for a softmax
    loss), and inference scores class k by ``sigmoid(x_k)`` or, for a softmax loss, by
    ``softmax(x)_k`` over the K + 1 scores (background dropped).
    """

    # the EMA normaliser ("ema"): saved and restored with training checkpoints
    training_state_attributes = ("loss_normalizer",)

    @configurable
    def __init__(
        self,
        *,
        cls_loss: DenseClsLoss,
        assigner: AnchorAssigner,
        sampler: Optional[AnchorSampler] = None,
        normalizer: str = "ema",
        **kwargs: Any,
    ):
        """
        Args:
            cls_loss: a classification loss (see ``CLS_LOSS_REGISTRY``).
            assigner: an anchor assigner (see ``ASSIGNER_REGISTRY``).
            sampler: a training-sample selector (see ``SAMPLER_REGISTRY``); None = AllAnchors.
            normalizer: "ema" (EMA of the number of positive anchors, Detectron2) or "batch"
                (the number of positive anchors of the batch, the paper).
            kwargs: everything :class:`RetinaNet` takes, except ``anchor_matcher``.

        Device-specific speed-ups (channels-last layout, folded frozen BatchNorm) are not the
        model's concern: :func:`retina_focal.engine.device.apply_device_speedups` applies them
        to a built model.
        """
        if "anchor_matcher" in kwargs:
            raise ValueError("RetinaFocal takes `assigner` instead of `anchor_matcher`")
        check_choice(normalizer, NORMALIZERS, key="normalizer",
                     note="ema: Detectron2's EMA of the number of positive anchors; batch: the "
                          "paper's per-batch count")
        # test-time values Detectron2 takes as they come (a score threshold of 1.5 keeps no
        # detection, a negative NMS threshold or detection count changes AP without a word)
        for name in ("test_score_thresh", "test_nms_thresh"):
            if name in kwargs:
                check_range(kwargs[name], 0.0, 1.0, key=name)
        for name in ("num_classes", "test_topk_candidates", "max_detections_per_image"):
            if name in kwargs:
                check_integer(kwargs[name], key=name, low=1)
        sampler = sampler if sampler is not None else AllAnchors()
        _require(cls_loss, DenseClsLoss, "cls_loss")
        _require(assigner, AnchorAssigner, "assigner")
        _require(sampler, AnchorSampler, "sampler")
        super().__init__(anchor_matcher=None, **kwargs)
        self.cls_loss = cls_loss
        self.assigner = assigner
        self.sampler = sampler
        self.normalizer = normalizer
        # what the head predicts per anchor, and how inference turns it into K class scores
        self.num_cls_logits: int = cls_loss.num_logits(self.num_classes)
        self.softmax_scores: bool = cls_loss.score_activation == "softmax"
        # RetinaFocalHead declares its scores per anchor (``num_classes``); other heads are
        # only held to the output shapes of the RETINA_FOCAL_HEAD_REGISTRY contract.
        if isinstance(self.head, RetinaFocalHead) and self.head.num_classes != self.num_cls_logits:
            raise ValueError(
                f"The head predicts {self.head.num_classes} class scores per anchor but "
                f"{type(cls_loss).__name__} needs {self.num_cls_logits} for {self.num_classes} "
                "classes (its num_logits(K)); build the head with num_classes=num_logits(K)"
            )

    config_keys = {"normalizer": "MODEL.RETINA_FOCAL.NORMALIZER",
                   "num_classes": "MODEL.RETINANET.NUM_CLASSES",
                   "test_score_thresh": "MODEL.RETINANET.SCORE_THRESH_TEST",
                   "test_nms_thresh": "MODEL.RETINANET.NMS_THRESH_TEST",
                   "test_topk_candidates": "MODEL.RETINANET.TOPK_CANDIDATES_TEST",
                   "max_detections_per_image": "TEST.DETECTIONS_PER_IMAGE"}

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, Any]:
        if "RETINA_FOCAL" not in cfg.MODEL:
            raise ValueError(
                "cfg has no MODEL.RETINA_FOCAL: call retina_focal.add_retina_focal_config(cfg) "
                "before merging a config that uses RetinaFocal"
            )
        rcfg = cfg.MODEL.RETINANET
        # before the head and the loss, whose sizes it gives (0 classes built a model that
        # failed in its first step; -1, a tensor of negative size): named by __init__'s key
        check_integer(rcfg.NUM_CLASSES, key="num_classes", low=1)
        backbone = build_backbone(cfg)
        feature_shapes = head_feature_shapes(backbone, rcfg.IN_FEATURES)
        return {
            "backbone": backbone,
            "head": build_retina_focal_head(cfg, feature_shapes),
            "head_in_features": rcfg.IN_FEATURES,
            "anchor_generator": build_anchor_generator(cfg, feature_shapes),
            "box2box_transform": Box2BoxTransform(weights=rcfg.BBOX_REG_WEIGHTS),
            "cls_loss": build_cls_loss(cfg),
            "assigner": build_assigner(cfg),
            "sampler": build_sampler(cfg),
            "smooth_l1_beta": rcfg.SMOOTH_L1_LOSS_BETA,
            "box_reg_loss_type": rcfg.BBOX_REG_LOSS_TYPE,
            **config_values(cfg, cls.config_keys),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "vis_period": cfg.VIS_PERIOD,
            "input_format": cfg.INPUT.FORMAT,
        }

    def forward_training(
        self,
        images: ImageList,
        features: List[Tensor],
        predictions: List[List[Tensor]],
        gt_instances: List[Instances],
    ) -> Dict[str, Tensor]:
        pred_logits, pred_anchor_deltas = self._transpose_dense_predictions(
            predictions, [self.num_cls_logits, 4]
        )
        anchors = self.anchor_generator(features)
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        return self.losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes)

    def _class_scores(self, logits: Tensor) -> Tensor:
        """(R, C) logits of one image and level -> (R, K) class scores in [0, 1]."""
        if self.softmax_scores:
            return logits.softmax(dim=1)[:, : self.num_classes]
        return logits.sigmoid()

    def forward_inference(
        self, images: ImageList, features: List[Tensor], predictions: List[List[Tensor]]
    ) -> List[Instances]:
        pred_logits, pred_anchor_deltas = self._transpose_dense_predictions(
            predictions, [self.num_cls_logits, 4]
        )
        anchors = self.anchor_generator(features)

        results: List[Instances] = []
        for img_idx, image_size in enumerate(images.image_sizes):
            scores_per_image = [self._class_scores(x[img_idx]) for x in pred_logits]
            deltas_per_image = [x[img_idx] for x in pred_anchor_deltas]
            results.append(
                self.inference_single_image(anchors, scores_per_image, deltas_per_image,
                                            image_size)
            )
        return results

    @torch.no_grad()
    def label_anchors(
        self, anchors: List[Boxes], gt_instances: List[Instances]
    ) -> Tuple[List[Tensor], List[Tensor]]:
        """Each image's anchors assigned (``self.assigner``), as class labels and boxes.

        Returns:
            list[Tensor]: per image, (R,) int64 labels in {-1, 0..K-1, K}.
            list[Tensor]: per image, (R, 4) matched ground-truth boxes.
            (see :func:`anchor_targets`)
        """
        targets = [anchor_targets(*self.assigner(anchors, gt), gt, self.num_classes)
                   for gt in gt_instances]
        return [t[0] for t in targets], [t[1] for t in targets]

    def losses(
        self,
        anchors: List[Boxes],
        pred_logits: List[Tensor],
        gt_labels: List[Tensor],
        pred_anchor_deltas: List[Tensor],
        gt_boxes: List[Tensor],
    ) -> Dict[str, Tensor]:
        """
        Args:
            anchors: L Boxes, together R anchors per image.
            pred_logits: L tensors (N, Hi*Wi*A, K).
            gt_labels: N tensors (R,) in {-1, 0..K-1, K}.
            pred_anchor_deltas: L tensors (N, Hi*Wi*A, 4).
            gt_boxes: N tensors (R, 4).

        Returns:
            {"loss_cls", "loss_box_reg"}: scalars, each divided by the normaliser: the number
            of positive anchors of the batch (all of them, whatever the sampler selected, as
            the box loss is computed on all of them), or its EMA (Detectron2's default).
        """
        num_images = len(gt_labels)
        labels = torch.stack(gt_labels)  # (N, R)
        pos_mask = (labels >= 0) & (labels != self.num_classes)
        num_pos = pos_mask.sum().item()
        storage = get_event_storage()
        storage.put_scalar("num_pos_anchors", num_pos / num_images)
        storage.put_scalar("num_ignored_anchors", (labels < 0).sum().item() / num_images)
        # the positives of the whole batch (all processes), or their EMA
        normalizer = positive_anchor_normalizer(self, self.normalizer, num_pos, labels.device)

        targets: Dict[str, Tensor] = {}
        if self.cls_loss.needs_iou_targets:
            targets["iou_targets"] = self._iou_targets(
                anchors, pred_anchor_deltas, gt_boxes, pos_mask
            )
        weights = self._sample(anchors, pred_logits, labels, pred_anchor_deltas, targets)
        if weights is not None:
            targets["weights"] = weights
        loss_cls = self._cls_loss_per_level(pred_logits, labels, targets)
        loss_box_reg = _dense_box_regression_loss(
            anchors,
            self.box2box_transform,
            pred_anchor_deltas,
            gt_boxes,
            pos_mask,
            box_reg_loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        )
        return {"loss_cls": loss_cls / normalizer, "loss_box_reg": loss_box_reg / normalizer}

    def _cls_loss_per_level(
        self, pred_logits: List[Tensor], labels: Tensor, targets: Dict[str, Tensor]
    ) -> Tensor:
        """The classification loss, summed over anchors, computed one FPN level at a time.

        A loss is a sum over anchors (see ``losses/base.py``), so this equals one call on
        the (N*R, C) concatenation of all levels, without building it: each level's
        (N, Hi*Wi*A, C) logits are passed as (N*Hi*Wi*A, C), a view of the head's output
        when it is channels-last, and each level's gradient reaches its convolution as one
        dense tensor.

        Args:
            pred_logits: L tensors (N, Hi*Wi*A, C).
            labels: (N, R) int64 in {-1, 0..K-1, K}.
            targets: (N, R) tensors passed to the loss by name (``weights``, ``iou_targets``).
        """
        total: Optional[Tensor] = None
        start = 0
        for level_logits in pred_logits:
            end = start + level_logits.shape[1]
            rows = level_logits.reshape(-1, level_logits.shape[2])
            level_targets = {k: v[:, start:end].reshape(-1) for k, v in targets.items()}
            loss = self.cls_loss(rows, labels[:, start:end].reshape(-1), **level_targets)
            total = loss if total is None else total + loss
            start = end
        assert total is not None, "the head gave no feature level"
        return total

    @torch.no_grad()
    def _decode_all(self, anchors: List[Boxes], pred_anchor_deltas: List[Tensor]) -> Tensor:
        """(N, R, 4) boxes predicted by every anchor (no gradient)."""
        deltas = cat(pred_anchor_deltas, dim=1).detach()  # (N, R, 4)
        all_anchors = Boxes.cat(anchors).tensor  # (R, 4)
        n = deltas.shape[0]
        boxes: Tensor = self.box2box_transform.apply_deltas(
            deltas.reshape(-1, 4), all_anchors.repeat(n, 1)
        )
        return boxes.view(n, -1, 4)

    @torch.no_grad()
    def _iou_targets(
        self,
        anchors: List[Boxes],
        pred_anchor_deltas: List[Tensor],
        gt_boxes: List[Tensor],
        pos_mask: Tensor,
    ) -> Tensor:
        """(N, R) IoU between each positive anchor's predicted box and its matched ground
        truth (0 elsewhere), without gradient: the soft target of IoU-aware losses."""
        pred = self._decode_all(anchors, pred_anchor_deltas)[pos_mask]
        gt = torch.stack(gt_boxes)[pos_mask]
        ious = torch.zeros(pos_mask.shape, dtype=pred.dtype, device=pred.device)
        # Detectron2's IoU of box i with box i; 0/0 (both boxes empty) counts as no overlap
        ious[pos_mask] = matched_pairwise_iou(Boxes(pred), Boxes(gt)).nan_to_num(nan=0.0)
        return ious

    def _sample(
        self,
        anchors: List[Boxes],
        pred_logits: List[Tensor],
        labels: Tensor,
        pred_anchor_deltas: List[Tensor],
        targets: Dict[str, Tensor],
    ) -> Optional[Tensor]:
        """(N, R) anchor weights from the sampler, or None (every non-ignored anchor).

        ``pred_logits``: L tensors (N, Hi*Wi*A, C); ``targets``: (N, R) tensors."""
        if not self.sampler.needs_anchor_losses:
            return self.sampler(labels, self.num_classes)
        n, r = labels.shape
        logits = cat([x.detach() for x in pred_logits], dim=1)  # (N, R, C), no gradient
        anchor_losses = self.cls_loss.per_anchor(
            logits.flatten(0, 1), labels.flatten(), **{k: v.flatten() for k, v in targets.items()}
        ).view(n, r)
        boxes = None
        nms_boxes = self.sampler.nms_boxes
        if nms_boxes == "predicted":
            boxes = self._decode_all(anchors, pred_anchor_deltas)
        elif nms_boxes == "anchors":
            boxes = Boxes.cat(anchors).tensor[None].expand(n, r, 4)
        weights = self.sampler(labels, self.num_classes, anchor_losses=anchor_losses, boxes=boxes)
        if weights is not None:
            storage = get_event_storage()
            chosen = weights > 0
            fg = chosen & (labels >= 0) & (labels < self.num_classes)
            storage.put_scalar("sampler/num_fg", fg.sum().item() / n)
            storage.put_scalar("sampler/num_bg", (chosen & ~fg).sum().item() / n)
        return weights


def anchor_targets(
    matched_idxs: Tensor, match_labels: Tensor, gt: Instances, num_classes: int
) -> Tuple[Tensor, Tensor]:
    """An assigner's matches (see ``AnchorAssigner``) as training targets, as Detectron2's
    RetinaNet turns its ``Matcher``'s.

    Args:
        matched_idxs: (R,) int64 index into ``gt``.
        match_labels: (R,) in {-1 ignored, 0 negative, 1 positive}.
        gt: the image's ground truth (``gt_boxes``, ``gt_classes``), M instances.
        num_classes: K.

    Returns:
        labels: (R,) int64: the matched ground truth's class for a positive anchor, K for a
            negative one, -1 for an ignored one; all K when M is 0.
        boxes: (R, 4) the matched ground-truth box of every anchor (meaningful for
            positives); zeros when M is 0.
    """
    num_anchors = len(matched_idxs)
    if len(gt) == 0:
        labels = torch.full((num_anchors,), num_classes, dtype=torch.int64,
                            device=matched_idxs.device)
        return labels, gt.gt_boxes.tensor.new_zeros((num_anchors, 4))
    labels = gt.gt_classes[matched_idxs]
    labels[match_labels == 0] = num_classes
    labels[match_labels == -1] = -1
    return labels, gt.gt_boxes.tensor[matched_idxs]
