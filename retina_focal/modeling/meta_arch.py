"""RetinaFocal: Detectron2's RetinaNet with its head, loss and anchor assigner made swappable."""
import logging
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling import META_ARCH_REGISTRY, RetinaNet, build_backbone
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.modeling.box_regression import Box2BoxTransform, _dense_box_regression_loss
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import get_event_storage
from torch import Tensor, nn

from retina_focal.config import MEMORY_FORMATS, NORMALIZERS, check_choice
from retina_focal.modeling.anchor_assignment import build_assigner
from retina_focal.modeling.anchor_sampling import AllAnchors, build_sampler
from retina_focal.modeling.head import build_retina_focal_head
from retina_focal.modeling.losses import build_cls_loss
from retina_focal.ops.fold_bn import fold_frozen_batchnorm
from retina_focal.utils.comm import sum_over_processes

__all__ = ["RetinaFocal", "head_feature_shapes"]


def head_feature_shapes(backbone, in_features: List[str]) -> List:
    """The backbone's ShapeSpecs of ``MODEL.RETINANET.IN_FEATURES``, in that order; a name the
    backbone does not produce is a ValueError listing what it does produce."""
    shapes = backbone.output_shape()
    missing = [f for f in in_features if f not in shapes]
    if missing:
        raise ValueError(
            f"MODEL.RETINANET.IN_FEATURES={in_features} names {missing}, which the "
            f"backbone does not produce; it produces {sorted(shapes)}"
        )
    return [shapes[f] for f in in_features]


logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class RetinaFocal(RetinaNet):
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

    @configurable
    def __init__(
        self,
        *,
        cls_loss: nn.Module,
        assigner,
        sampler=None,
        normalizer: str = "ema",
        memory_format: str = "contiguous",
        fold_frozen_bn: bool = False,
        **kwargs,
    ):
        """
        Args:
            cls_loss: a classification loss (see ``CLS_LOSS_REGISTRY``).
            assigner: an anchor assigner (see ``ASSIGNER_REGISTRY``).
            sampler: a training-sample selector (see ``SAMPLER_REGISTRY``); None = AllAnchors.
            normalizer: "ema" (EMA of the number of positive anchors, Detectron2) or "batch"
                (the number of positive anchors of the batch, the paper).
            memory_format: "contiguous" (NCHW, Detectron2's) or "channels_last": the 4D
                weights are stored channels-last (NHWC), so every convolution, from the first
                one on the (NCHW) input batch, outputs channels-last activations, which
                oneDNN's CPU convolutions run faster. Parameter names, shapes and values are
                unchanged, so checkpoints load either way.
            fold_frozen_bn: compute each backbone ``Conv2d`` + ``FrozenBatchNorm2d`` as one
                convolution with the folded weight and bias (:mod:`..fold`); same parameters.
            kwargs: everything :class:`RetinaNet` takes, except ``anchor_matcher``.
        """
        if "anchor_matcher" in kwargs:
            raise ValueError("RetinaFocal takes `assigner` instead of `anchor_matcher`")
        if normalizer not in NORMALIZERS:
            raise ValueError(f"Invalid normalizer {normalizer!r}; choices: {NORMALIZERS}")
        check_choice(memory_format, ("contiguous", "channels_last"), key="memory_format")
        super().__init__(anchor_matcher=None, **kwargs)
        self.memory_format = memory_format
        if fold_frozen_bn:
            fold_frozen_batchnorm(self.backbone)
        if memory_format == "channels_last":
            # before any optimizer or DistributedDataParallel sees the parameters
            self.to(memory_format=torch.channels_last)
        self.cls_loss = cls_loss
        self.assigner = assigner
        self.sampler = sampler if sampler is not None else AllAnchors()
        self.normalizer = normalizer
        # what the head predicts per anchor, and how inference turns it into K class scores
        self.num_cls_logits: int = int(getattr(cls_loss, "num_logits", lambda k: k)(
            self.num_classes))
        self.softmax_scores: bool = getattr(cls_loss, "score_activation", "sigmoid") == "softmax"
        head_scores = getattr(self.head, "num_classes", None)
        if head_scores is not None and head_scores != self.num_cls_logits:
            raise ValueError(
                f"The head predicts {head_scores} class scores per anchor but "
                f"{type(cls_loss).__name__} needs {self.num_cls_logits} for {self.num_classes} "
                "classes (its num_logits(K)); build the head with num_classes=num_logits(K)"
            )

    @classmethod
    def from_config(cls, cfg) -> Dict:
        if "RETINA_FOCAL" not in cfg.MODEL:
            raise ValueError(
                "cfg has no MODEL.RETINA_FOCAL: call retina_focal.add_retina_focal_config(cfg) "
                "before merging a config that uses RetinaFocal"
            )
        rcfg = cfg.MODEL.RETINANET
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
            "normalizer": cls._normalizer_from_config(cfg),
            "memory_format": cls._memory_format_from_config(cfg),
            "fold_frozen_bn": bool(cfg.MODEL.RETINA_FOCAL.FOLD_FROZEN_BN),
            "num_classes": rcfg.NUM_CLASSES,
            "focal_loss_alpha": rcfg.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": rcfg.FOCAL_LOSS_GAMMA,
            "smooth_l1_beta": rcfg.SMOOTH_L1_LOSS_BETA,
            "box_reg_loss_type": rcfg.BBOX_REG_LOSS_TYPE,
            "test_score_thresh": rcfg.SCORE_THRESH_TEST,
            "test_topk_candidates": rcfg.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": rcfg.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "vis_period": cfg.VIS_PERIOD,
            "input_format": cfg.INPUT.FORMAT,
        }

    @staticmethod
    def _normalizer_from_config(cfg) -> str:
        value = cfg.MODEL.RETINA_FOCAL.NORMALIZER
        if value not in NORMALIZERS:
            raise ValueError(
                f"MODEL.RETINA_FOCAL.NORMALIZER={value!r} is invalid; choices: "
                f"{', '.join(NORMALIZERS)} (ema: Detectron2's EMA of the number of positive "
                "anchors; batch: the paper's per-batch count)"
            )
        return value

    @staticmethod
    def _memory_format_from_config(cfg) -> str:
        value = cfg.MODEL.RETINA_FOCAL.MEMORY_FORMAT
        check_choice(value, MEMORY_FORMATS, key="MODEL.RETINA_FOCAL.MEMORY_FORMAT")
        if value == "auto":
            return "channels_last" if str(cfg.MODEL.DEVICE).startswith("cpu") else "contiguous"
        return value

    def forward_training(self, images, features, predictions, gt_instances):
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
    ):
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
    def label_anchors(self, anchors: List[Boxes], gt_instances: List[Instances]):
        """
        Returns:
            list[Tensor]: per image, (R,) int64 labels in {-1, 0..K-1, K}.
            list[Tensor]: per image, (R, 4) matched ground-truth boxes.
        """
        results = [self.assigner(anchors, gt, self.num_classes) for gt in gt_instances]
        return [r[0] for r in results], [r[1] for r in results]

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
        # Several processes: the normaliser counts the positives of the whole (global) batch,
        # and the loss is scaled by the process count that DistributedDataParallel's gradient
        # averaging divides by, so training equals one process with the same total batch.
        num_pos, num_procs = sum_over_processes(num_pos, labels.device)
        if self.normalizer == "batch":
            normalizer = max(num_pos, 1) / num_procs
        else:
            normalizer = self._ema_update("loss_normalizer", max(num_pos, 1), 100) / num_procs

        targets = {}
        if getattr(self.cls_loss, "needs_iou_targets", False):
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
        total = None
        start = 0
        for level_logits in pred_logits:
            end = start + level_logits.shape[1]
            rows = level_logits.reshape(-1, level_logits.shape[2])
            level_targets = {k: v[:, start:end].reshape(-1) for k, v in targets.items()}
            loss = self.cls_loss(rows, labels[:, start:end].reshape(-1), **level_targets)
            total = loss if total is None else total + loss
            start = end
        return total

    @torch.no_grad()
    def _decode_all(self, anchors: List[Boxes], pred_anchor_deltas: List[Tensor]) -> Tensor:
        """(N, R, 4) boxes predicted by every anchor (no gradient)."""
        deltas = cat(pred_anchor_deltas, dim=1).detach()  # (N, R, 4)
        all_anchors = Boxes.cat(anchors).tensor  # (R, 4)
        n = deltas.shape[0]
        boxes = self.box2box_transform.apply_deltas(
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
        ious[pos_mask] = paired_iou(pred, gt)
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
        if not getattr(self.sampler, "needs_anchor_losses", False):
            return self.sampler(labels, self.num_classes)
        n, r = labels.shape
        logits = cat([x.detach() for x in pred_logits], dim=1)  # (N, R, C), no gradient
        anchor_losses = self.cls_loss.per_anchor(
            logits.flatten(0, 1), labels.flatten(), **{k: v.flatten() for k, v in targets.items()}
        ).view(n, r)
        boxes = None
        nms_boxes = getattr(self.sampler, "nms_boxes", None)
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


def paired_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of a[i] with b[i]: (M, 4), (M, 4) XYXY -> (M,); 0 where the union is empty."""
    lt = torch.max(a[:, :2], b[:, :2])
    rb = torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))
