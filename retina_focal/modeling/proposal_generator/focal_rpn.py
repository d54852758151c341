"""FocalRPN: Detectron2's RPN whose objectness loss, anchor assigner, sampling and loss
normalisation are this project's swappable parts.

Detectron2's RPN trains its binary objectness on 256 anchors per image drawn 1:1 from the
IoU matcher's positives and negatives, with binary cross entropy divided by 256 x images. The
focal loss was made to *replace* that sampling (all anchors, a prior-initialised bias, the loss
divided by the positives); bolted onto the sampled loss it has little left to do. FocalRPN
makes each of those choices a setting, so that both ways (and the mixtures) run in the same
Faster R-CNN and can be compared; its defaults are Detectron2's RPN exactly.
"""
from typing import Any, Dict, List, Optional, Tuple, Type

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling import PROPOSAL_GENERATOR_REGISTRY
from detectron2.modeling.box_regression import _dense_box_regression_loss
from detectron2.modeling.proposal_generator.rpn import RPN, StandardRPNHead
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import get_event_storage
from torch import Tensor, nn

from retina_focal.config import (
    check_choice,
    check_positive,
    check_range,
    config_values,
    configurable,
)
from retina_focal.modeling.anchor_assignment import AnchorAssigner, IoUThresholdMatcher
from retina_focal.modeling.losses import DenseClsLoss
from retina_focal.modeling.registry import ASSIGNER_REGISTRY, CLS_LOSS_REGISTRY, get_component
from retina_focal.modeling.training_state import HasTrainingState, positive_anchor_normalizer

__all__ = [
    "FocalRPN",
    "RPN_BOX_NORMALIZERS",
    "RPN_NORMALIZERS",
    "RPN_SAMPLINGS",
    "build_objectness_loss",
    "build_rpn_assigner",
    "objectness_class_labels",
]

# MODEL.RETINA_FOCAL.RPN.SAMPLING: "detectron2" = MODEL.RPN.BATCH_SIZE_PER_IMAGE anchors per image,
# at most MODEL.RPN.POSITIVE_FRACTION of them positive (Detectron2's subsample_labels);
# "all" = every anchor the assigner does not ignore.
RPN_SAMPLINGS = ("detectron2", "all")
# MODEL.RETINA_FOCAL.RPN.NORMALIZER: "detectron2" = BATCH_SIZE_PER_IMAGE x images; "ema" = an EMA of
# the number of positive anchors (Detectron2's RetinaNet); "batch" = the batch's positives.
RPN_NORMALIZERS = ("detectron2", "ema", "batch")
# MODEL.RETINA_FOCAL.RPN.BOX_NORMALIZER: what the box loss is divided by. "same" = NORMALIZER's
# value (Detectron2's RPN divides both losses by one number); "detectron2" = BATCH_SIZE_PER_IMAGE
# x images whatever NORMALIZER is: with "ema" / "batch" the box loss then keeps the sampled
# RPN's scale instead of growing ~30x (positives ~65 per batch against 256 x 8)
RPN_BOX_NORMALIZERS = ("same", "detectron2")
# Detectron2's RPN always promotes each ground truth's best anchors (Matcher's
# allow_low_quality_matches=True); the IoU matcher built from MODEL.RPN keys does the same.
RPN_ALLOWS_LOW_QUALITY_MATCHES = True

_LOSS_KEY = "MODEL.RETINA_FOCAL.RPN.LOSS_NAME"
_ASSIGNER_KEY = "MODEL.RETINA_FOCAL.RPN.ASSIGNER_NAME"


def _objectness_loss_problem(loss_class: Type[DenseClsLoss]) -> Optional[str]:
    """Why a ``CLS_LOSS_REGISTRY`` class cannot score objectness (None if it can): the RPN head
    predicts one sigmoid logit per anchor and no IoU targets are computed."""
    if loss_class.num_logits(1) != 1 or loss_class.score_activation != "sigmoid":
        return "the RPN head predicts one sigmoid logit per anchor"
    if loss_class.needs_iou_targets:
        return "FocalRPN computes no IoU targets"
    return None


def build_objectness_loss(cfg: CfgNode) -> DenseClsLoss:
    """The loss named by ``MODEL.RETINA_FOCAL.RPN.LOSS_NAME``, built with alpha and gamma
    from ``MODEL.RETINA_FOCAL.RPN.FOCAL_LOSS_ALPHA`` / ``FOCAL_LOSS_GAMMA`` (the RetinaNet keys
    stay RetinaFocal's, so one config can hold both). A loss that cannot score objectness
    (softmax, IoU-aware) is a ValueError naming the key."""
    name = cfg.MODEL.RETINA_FOCAL.RPN.LOSS_NAME
    loss_class: Type[DenseClsLoss] = get_component(CLS_LOSS_REGISTRY, name, _LOSS_KEY)
    problem = _objectness_loss_problem(loss_class)
    if problem is not None:
        usable = sorted(n for n, c in CLS_LOSS_REGISTRY if _objectness_loss_problem(c) is None)
        raise ValueError(f"{_LOSS_KEY}={name!r} is invalid: {problem}; use one of {usable}")
    return loss_class(alpha=cfg.MODEL.RETINA_FOCAL.RPN.FOCAL_LOSS_ALPHA,
                      gamma=cfg.MODEL.RETINA_FOCAL.RPN.FOCAL_LOSS_GAMMA)


def build_rpn_assigner(cfg: CfgNode) -> AnchorAssigner:
    """The assigner named by ``MODEL.RETINA_FOCAL.RPN.ASSIGNER_NAME``. The IoU matcher (and its
    subclasses) takes the RPN's bands, ``MODEL.RPN.IOU_THRESHOLDS`` / ``IOU_LABELS``, with
    low-quality matches as Detectron2's RPN (not RetinaNet's keys); any other assigner is
    built from the cfg as RetinaFocal builds it."""
    name = cfg.MODEL.RETINA_FOCAL.RPN.ASSIGNER_NAME
    assigner_class = get_component(ASSIGNER_REGISTRY, name, _ASSIGNER_KEY)
    assigner: AnchorAssigner
    if issubclass(assigner_class, IoUThresholdMatcher):
        assigner = assigner_class(
            thresholds=cfg.MODEL.RPN.IOU_THRESHOLDS,
            labels=cfg.MODEL.RPN.IOU_LABELS,
            allow_low_quality_matches=RPN_ALLOWS_LOW_QUALITY_MATCHES,
        )
    else:
        assigner = assigner_class(cfg)
    return assigner


def objectness_class_labels(objectness: Tensor) -> Tensor:
    """RPN labels as a one-class loss's labels (``DenseClsLoss``): 1 (object) -> class 0,
    0 (background) -> 1 (= K, background), -1 (ignored) -> -1; int64, same shape."""
    labels = 1 - objectness.to(torch.int64)
    labels[objectness < 0] = -1
    return labels


@PROPOSAL_GENERATOR_REGISTRY.register()
# Detectron2 has no annotations: RPN is Any to mypy
class FocalRPN(RPN, HasTrainingState):  # type: ignore[misc]
    """Detectron2's :class:`RPN` (same head, anchors, box transform, proposals, parameters
    and checkpoints) whose training targets and objectness loss are configurable:

    * ``assigner`` (``ASSIGNER_REGISTRY``) labels anchors {1, 0, -1} instead of the
      ``Matcher``; the IoU matcher with the RPN's bands is Detectron2's ``Matcher``;
    * ``sampling``: "detectron2" (``batch_size_per_image`` anchors per image, at most
      ``positive_fraction`` positive, drawn with torch's generator as Detectron2 draws them)
      or "all" (every non-ignored anchor: the focal loss's way);
    * ``objectness_loss`` (``CLS_LOSS_REGISTRY``, one class): binary cross entropy is
      ``SigmoidFocalLoss(alpha=-1, gamma=0)``; the focal loss, alpha-balanced CE, FL*;
    * ``normalizer``: both losses are divided by ``batch_size_per_image`` x images
      ("detectron2"), or by the number of positive anchors of the batch ("batch") or its EMA
      ("ema", Detectron2's RetinaNet): on all anchors the sampled count means nothing;
    * ``box_normalizer``: the box loss is divided by the same number ("same"), or by
      ``batch_size_per_image`` x images ("detectron2") whatever ``normalizer`` is. Divided by
      the positives (~65 per batch of 8 on the synthetic data, against 2048) its gradients are
      ~30x the sampled RPN's at the same learning rate: the focal configs' runs on all anchors
      diverged now and then at LR 0.02 (docs/focal_rpn.md);
    * ``prior_prob``: the objectness bias starts at -log((1 - pi) / pi) (the loss's
      ``prior_logit_bias``), so that every anchor starts at objectness pi; 0.5 is bias 0,
      Detectron2's initialisation. With all anchors a small pi (0.01) keeps the first steps'
      loss from being swamped by the ~10^5 easy negatives.

    With the defaults (IoU matcher, "detectron2" sampling and normaliser, BCE, pi = 0.5) the
    losses, gradients and proposals are Detectron2's RPN's for the same torch seed.
    """

    # the EMA normaliser ("ema"): saved and restored with training checkpoints
    training_state_attributes = ("loss_normalizer",)

    @configurable
    def __init__(
        self,
        *,
        objectness_loss: DenseClsLoss,
        assigner: AnchorAssigner,
        sampling: str = "detectron2",
        normalizer: str = "detectron2",
        normalizer_momentum: float = 0.9,
        normalizer_init: float = 100.0,
        box_normalizer: str = "same",
        prior_prob: float = 0.5,
        **kwargs: Any,
    ):
        """
        Args:
            objectness_loss: a one-logit sigmoid loss from ``CLS_LOSS_REGISTRY``.
            assigner: an anchor assigner from ``ASSIGNER_REGISTRY``.
            sampling: one of :data:`RPN_SAMPLINGS`.
            normalizer: one of :data:`RPN_NORMALIZERS`.
            normalizer_momentum: EMA momentum of the "ema" normaliser, in [0, 1).
            normalizer_init: the "ema" normaliser's starting value (> 0).
            box_normalizer: one of :data:`RPN_BOX_NORMALIZERS`.
            prior_prob: initial objectness probability of every anchor, in (0, 1).
            kwargs: everything :class:`RPN` takes, except ``anchor_matcher``.
        """
        if "anchor_matcher" in kwargs:
            raise ValueError("FocalRPN takes `assigner` instead of `anchor_matcher`")
        if not isinstance(objectness_loss, DenseClsLoss):
            raise TypeError(f"FocalRPN's objectness_loss must be a DenseClsLoss; got "
                            f"{type(objectness_loss).__qualname__}")
        if not isinstance(assigner, AnchorAssigner):
            raise TypeError(f"FocalRPN's assigner must be an AnchorAssigner; got "
                            f"{type(assigner).__qualname__}")
        problem = _objectness_loss_problem(type(objectness_loss))
        if problem is not None:
            raise ValueError(f"objectness_loss={type(objectness_loss).__name__} cannot score "
                             f"objectness: {problem}")
        check_choice(sampling, RPN_SAMPLINGS, key="sampling",
                     note="detectron2: BATCH_SIZE_PER_IMAGE anchors per image; all: every "
                          "non-ignored anchor")
        check_choice(normalizer, RPN_NORMALIZERS, key="normalizer",
                     note="detectron2: BATCH_SIZE_PER_IMAGE x images; ema / batch: positive "
                          "anchors")
        check_choice(box_normalizer, RPN_BOX_NORMALIZERS, key="box_normalizer",
                     note="same: the objectness loss's normaliser; detectron2: "
                          "BATCH_SIZE_PER_IMAGE x images")
        check_range(normalizer_momentum, 0.0, 1.0, key="normalizer_momentum", open_high=True)
        check_positive(normalizer_init, key="normalizer_init")
        check_range(prior_prob, 0.0, 1.0, key="prior_prob", open_low=True, open_high=True,
                    note="0.5 is Detectron2's zero bias")
        super().__init__(anchor_matcher=None, **kwargs)
        self.objectness_loss = objectness_loss
        self.assigner = assigner
        self.sampling = sampling
        self.normalizer = normalizer
        self.normalizer_momentum = float(normalizer_momentum)
        self.loss_normalizer = float(normalizer_init)  # the "ema" normaliser's state
        self.box_normalizer = box_normalizer
        self.prior_prob = float(prior_prob)
        self._init_objectness_bias(self.rpn_head, objectness_loss, self.prior_prob)

    config_keys = {
        "sampling": "MODEL.RETINA_FOCAL.RPN.SAMPLING",
        "normalizer": "MODEL.RETINA_FOCAL.RPN.NORMALIZER",
        "normalizer_momentum": "MODEL.RETINA_FOCAL.RPN.NORMALIZER_MOMENTUM",
        "normalizer_init": "MODEL.RETINA_FOCAL.RPN.NORMALIZER_INIT",
        "box_normalizer": "MODEL.RETINA_FOCAL.RPN.BOX_NORMALIZER",
        "prior_prob": "MODEL.RETINA_FOCAL.RPN.PRIOR_PROB",
    }
    # raised while from_config builds the loss and the IoU matcher
    nested_config_keys = {
        "alpha": "MODEL.RETINA_FOCAL.RPN.FOCAL_LOSS_ALPHA",
        "gamma": "MODEL.RETINA_FOCAL.RPN.FOCAL_LOSS_GAMMA",
        "thresholds": "MODEL.RPN.IOU_THRESHOLDS",
        "labels": "MODEL.RPN.IOU_LABELS",
    }

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: Dict[str, ShapeSpec]) -> Dict[str, Any]:
        if "RETINA_FOCAL" not in cfg.MODEL:
            raise ValueError(
                "cfg has no MODEL.RETINA_FOCAL.RPN: call retina_focal.add_retina_focal_config(cfg) "
                "before merging a config that uses FocalRPN"
            )
        # built first: the RPN's own from_config asserts on bad IoU bands in its Matcher, which
        # the assigner rejects with an error naming the key
        assigner = build_rpn_assigner(cfg)
        objectness_loss = build_objectness_loss(cfg)
        ret: Dict[str, Any] = super().from_config(cfg, input_shape)
        del ret["anchor_matcher"]  # replaced by the assigner
        ret.update(objectness_loss=objectness_loss, assigner=assigner,
                   **config_values(cfg, cls.config_keys))
        return ret

    @staticmethod
    def _init_objectness_bias(head: nn.Module, loss: DenseClsLoss, prior_prob: float) -> None:
        """Set the head's objectness bias to the loss's prior bias for ``prior_prob``.

        Only :class:`StandardRPNHead` is known to have one objectness conv
        (``objectness_logits``); another head must keep Detectron2's pi = 0.5 (bias 0) here
        and set its own prior."""
        bias = loss.prior_logit_bias(1, prior_prob)[0]
        if isinstance(head, StandardRPNHead):
            nn.init.constant_(head.objectness_logits.bias, bias)
        elif bias != 0.0:
            raise ValueError(
                f"prior_prob={prior_prob} needs a StandardRPNHead (its objectness_logits "
                f"conv); {type(head).__name__} must set its own prior: use 0.5 here"
            )

    @torch.jit.unused
    @torch.no_grad()
    def label_and_sample_anchors(
        self, anchors: List[Boxes], gt_instances: List[Instances]
    ) -> Tuple[List[Tensor], List[Tensor]]:
        """Each image's anchors labelled by the assigner and, with "detectron2" sampling,
        subsampled by Detectron2's ``RPN._subsample_labels``.

        Returns, as :meth:`RPN.label_and_sample_anchors`:
            list[Tensor]: per image, (R,) labels in {-1 ignored, 0 negative, 1 positive}.
            list[Tensor]: per image, (R, 4) matched ground-truth boxes (meaningful for
            positives; zeros for an image without ground truth).
        """
        all_anchors = Boxes.cat(anchors)
        labels, matched_boxes = [], []
        for gt in gt_instances:
            matched_idxs, labels_i = self.assigner(anchors, gt)
            labels_i = labels_i.to(device=gt.gt_boxes.device)
            if self.anchor_boundary_thresh >= 0:  # Detectron2's legacy option, off by default
                inside = all_anchors.inside_box(gt.image_size, self.anchor_boundary_thresh)
                labels_i[~inside] = -1
            if self.sampling == "detectron2":
                labels_i = self._subsample_labels(labels_i)
            if len(gt) == 0:
                matched_boxes.append(torch.zeros_like(all_anchors.tensor))
            else:
                matched_boxes.append(gt.gt_boxes.tensor[matched_idxs])
            labels.append(labels_i)
        return labels, matched_boxes

    def _normalizer(self, num_images: int, num_pos: int, device: torch.device) -> float:
        """What both losses are divided by (see the class docstring). With several processes
        the positives are counted over the whole batch and divided by the process count that
        DistributedDataParallel averages gradients over, as RetinaFocal does."""
        if self.normalizer == "detectron2":
            return float(self.batch_size_per_image * num_images)
        return positive_anchor_normalizer(self, self.normalizer, num_pos, device,
                                          momentum=self.normalizer_momentum)

    @torch.jit.unused
    def losses(
        self,
        anchors: List[Boxes],
        pred_objectness_logits: List[Tensor],
        gt_labels: List[Tensor],
        pred_anchor_deltas: List[Tensor],
        gt_boxes: List[Tensor],
    ) -> Dict[str, Tensor]:
        """
        Args:
            anchors: L Boxes, together R anchors per image.
            pred_objectness_logits: L tensors (N, Hi*Wi*A).
            gt_labels: N tensors (R,) in {-1, 0, 1}.
            pred_anchor_deltas: L tensors (N, Hi*Wi*A, 4).
            gt_boxes: N tensors (R, 4).

        Returns:
            {"loss_rpn_cls", "loss_rpn_loc"}: the objectness loss over the non-ignored
            (sampled) anchors and the box loss over the positive ones, each divided by its
            normaliser (``normalizer``; the box loss's: ``box_normalizer``) and multiplied by
            its ``loss_weight``, as Detectron2's RPN.
        """
        num_images = len(gt_labels)
        labels = torch.stack(gt_labels)  # (N, R)
        pos_mask = labels == 1
        num_pos = int(pos_mask.sum().item())
        storage = get_event_storage()
        storage.put_scalar("rpn/num_pos_anchors", num_pos / num_images)
        storage.put_scalar("rpn/num_neg_anchors", (labels == 0).sum().item() / num_images)
        normalizer = self._normalizer(num_images, num_pos, labels.device)
        if self.normalizer != "detectron2":
            storage.put_scalar("rpn/loss_normalizer", normalizer)

        loss_loc = _dense_box_regression_loss(
            anchors,
            self.box2box_transform,
            pred_anchor_deltas,
            gt_boxes,
            pos_mask,
            box_reg_loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        )
        valid = labels >= 0
        logits = cat(pred_objectness_logits, dim=1)[valid]  # (V,): the loss's (V, 1) logits
        loss_cls = self.objectness_loss(logits[:, None], objectness_class_labels(labels[valid]))
        box_normalizer = (float(self.batch_size_per_image * num_images)
                          if self.box_normalizer == "detectron2" else normalizer)
        losses = {"loss_rpn_cls": loss_cls / normalizer, "loss_rpn_loc": loss_loc / box_normalizer}
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}

    def extra_repr(self) -> str:
        return (f"sampling={self.sampling!r}, normalizer={self.normalizer!r}, "
                f"box_normalizer={self.box_normalizer!r}, "
                f"prior_prob={self.prior_prob}, assigner={self.assigner!r}")
