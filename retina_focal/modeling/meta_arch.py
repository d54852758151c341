"""RetinaFocal: Detectron2's RetinaNet with its head, loss and anchor assigner made swappable."""
import logging
from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling import META_ARCH_REGISTRY, RetinaNet, build_backbone
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.modeling.box_regression import Box2BoxTransform, _dense_box_regression_loss
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import get_event_storage
from torch import Tensor, nn

from .assigners import build_assigner
from .distributed import sum_over_processes
from .head import build_retina_focal_head
from .losses import build_cls_loss

__all__ = ["RetinaFocal"]

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class RetinaFocal(RetinaNet):
    """RetinaNet (Lin et al., ICCV 2017) whose head, classification loss and anchor assigner
    are registered components chosen by ``MODEL.RETINA_FOCAL.{HEAD,LOSS,ASSIGNER}_NAME``.

    It subclasses Detectron2's :class:`RetinaNet`: parameters, inference, checkpoints and
    export are Detectron2's. With default settings it computes the same losses as RetinaNet.

    Training step: anchors -> ``assigner`` (labels (N, R) in {-1, 0..K-1, K}, matched boxes
    (N, R, 4)) -> ``cls_loss(logits (N*R, K), labels (N*R,))`` and Detectron2's dense box
    regression loss, both divided by an EMA of the number of positive anchors per batch.
    """

    @configurable
    def __init__(self, *, cls_loss: nn.Module, assigner, **kwargs):
        """
        Args:
            cls_loss: a classification loss (see ``CLS_LOSS_REGISTRY``).
            assigner: an anchor assigner (see ``ASSIGNER_REGISTRY``).
            kwargs: everything :class:`RetinaNet` takes, except ``anchor_matcher``.
        """
        if "anchor_matcher" in kwargs:
            raise ValueError("RetinaFocal takes `assigner` instead of `anchor_matcher`")
        super().__init__(anchor_matcher=None, **kwargs)
        self.cls_loss = cls_loss
        self.assigner = assigner

    @classmethod
    def from_config(cls, cfg) -> Dict:
        if "RETINA_FOCAL" not in cfg.MODEL:
            raise ValueError(
                "cfg has no MODEL.RETINA_FOCAL: call retina_focal.add_retina_focal_config(cfg) "
                "before merging a config that uses RetinaFocal"
            )
        rcfg = cfg.MODEL.RETINANET
        backbone = build_backbone(cfg)
        backbone_shape = backbone.output_shape()
        missing = [f for f in rcfg.IN_FEATURES if f not in backbone_shape]
        if missing:
            raise ValueError(
                f"MODEL.RETINANET.IN_FEATURES={rcfg.IN_FEATURES} names {missing}, which the "
                f"backbone does not produce; it produces {sorted(backbone_shape)}"
            )
        feature_shapes = [backbone_shape[f] for f in rcfg.IN_FEATURES]
        return {
            "backbone": backbone,
            "head": build_retina_focal_head(cfg, feature_shapes),
            "head_in_features": rcfg.IN_FEATURES,
            "anchor_generator": build_anchor_generator(cfg, feature_shapes),
            "box2box_transform": Box2BoxTransform(weights=rcfg.BBOX_REG_WEIGHTS),
            "cls_loss": build_cls_loss(cfg),
            "assigner": build_assigner(cfg),
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
            {"loss_cls", "loss_box_reg"}: scalars, each divided by the EMA of the number of
            positive anchors (Detectron2's normaliser).
        """
        num_images = len(gt_labels)
        labels = torch.stack(gt_labels)  # (N, R)
        pos_mask = (labels >= 0) & (labels != self.num_classes)
        num_pos = pos_mask.sum().item()
        storage = get_event_storage()
        storage.put_scalar("num_pos_anchors", num_pos / num_images)
        storage.put_scalar("num_ignored_anchors", (labels < 0).sum().item() / num_images)
        # Several processes: the EMA follows the positives of the whole (global) batch, and the
        # loss is scaled by the process count that DistributedDataParallel's gradient
        # averaging divides by, so training equals one process with the same total batch.
        num_pos, num_procs = sum_over_processes(num_pos, labels.device)
        normalizer = self._ema_update("loss_normalizer", max(num_pos, 1), 100) / num_procs

        logits = cat(pred_logits, dim=1)  # (N, R, K)
        loss_cls = self.cls_loss(logits.flatten(0, 1), labels.flatten())
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
