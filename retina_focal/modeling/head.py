"""RetinaFocal's dense head: a class subnet and a box subnet shared across FPN levels."""
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.layers import CycleBatchNormList, ShapeSpec, get_norm
from detectron2.modeling.anchor_generator import build_anchor_generator
from torch import nn
from torch.nn import functional as F

from retina_focal.config import check_integer, check_range, config_values, configurable
from retina_focal.modeling.losses import cls_loss_class
from retina_focal.modeling.registry import RETINA_FOCAL_HEAD_REGISTRY, get_component

__all__ = ["RetinaFocalHead", "build_retina_focal_head"]


def build_retina_focal_head(cfg: CfgNode, input_shape: List[ShapeSpec]) -> nn.Module:
    """Build the head named by ``MODEL.RETINA_FOCAL.HEAD_NAME``."""
    name = cfg.MODEL.RETINA_FOCAL.HEAD_NAME
    head_cls = get_component(RETINA_FOCAL_HEAD_REGISTRY, name, "MODEL.RETINA_FOCAL.HEAD_NAME")
    head: nn.Module = head_cls(cfg, input_shape)
    return head


# Detectron2 has no annotations: CycleBatchNormList (an nn.ModuleList) is Any to mypy
class CycleBatchNormFusedList(CycleBatchNormList):  # type: ignore[misc]
    """Detectron2's ``CycleBatchNormList`` of ``nn.BatchNorm2d`` (one set of statistics per
    level, one shared affine), same parameters, buffers and checkpoint keys.

    Under autocast it applies the shared affine inside the batch-norm call, one pass over the
    activations instead of three (normalise, multiply, add; each with its backward), and
    returns the autocast dtype (bfloat16) where Detectron2's multiply by the float32 weight
    returns float32. The running statistics are the same; the output differs from
    Detectron2's by rounding only (one rounding instead of two). Without autocast (float32,
    the exact path) it is Detectron2's ``forward``, value for value.
    """

    _pos: int  # the next level in the cycle (Detectron2's CycleBatchNormList sets it)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) features of the next level in the cycle -> (N, C, H, W)."""
        if not (self._affine and torch.is_autocast_enabled(x.device.type)):
            out: torch.Tensor = super().forward(x)
            return out
        bn = self[self._pos]
        self._pos = (self._pos + 1) % len(self)
        momentum = 0.0 if bn.momentum is None else bn.momentum
        if bn.training and bn.track_running_stats:
            bn.num_batches_tracked.add_(1)
            if bn.momentum is None:  # cumulative moving average, as nn.BatchNorm2d
                momentum = 1.0 / float(bn.num_batches_tracked)
        use_batch_stats = bn.training or bn.running_mean is None
        track = not bn.training or bn.track_running_stats
        return F.batch_norm(x, bn.running_mean if track else None,
                            bn.running_var if track else None, self.weight, self.bias,
                            use_batch_stats, momentum, bn.eps)


@RETINA_FOCAL_HEAD_REGISTRY.register()
class RetinaFocalHead(nn.Module):
    """The paper's head (Fig. 3): two subnets of ``len(conv_dims)`` 3x3 conv + ReLU layers
    with separate weights, each shared by every FPN level, ending in a 3x3 conv that
    predicts A*K class logits (class subnet) or A*4 box deltas (box subnet) per location.

    The class bias starts at ``-log((1 - pi) / pi)`` so that every anchor's initial
    foreground probability is ``pi`` (``prior_prob``, 0.01): with ~100k background anchors,
    a 0.5 start would make the first iterations' loss explode (paper Sec. 3.3).

    Module names match Detectron2's ``RetinaNetHead`` (``cls_subnet``, ``bbox_subnet``,
    ``cls_score``, ``bbox_pred``), so checkpoints load either way.

    Normalisation: "" (the paper), "BN"/"SyncBN" (one set of statistics per level, as
    Detectron2), or any other :func:`detectron2.layers.get_norm` name (e.g. "GN").

    ``num_classes`` is the number of class scores per anchor, C: K for the sigmoid losses,
    K + 1 for a softmax loss (the classification loss says which, see ``num_logits``). Such a
    loss also gives ``cls_prior_bias``, the C initial biases of one anchor (the softmax one
    starts the background logit high instead of every class logit low).
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: List[ShapeSpec],
        num_classes: int,
        num_anchors: int,
        conv_dims: List[int],
        norm: str = "",
        prior_prob: float = 0.01,
        cls_prior_bias: Optional[Sequence[float]] = None,
    ):
        super().__init__()
        check_range(prior_prob, 0.0, 1.0, key="prior_prob", open_low=True, open_high=True)
        check_integer(num_classes, key="num_classes", low=1)
        if len({s.channels for s in input_shape}) != 1:
            raise ValueError(
                f"All head input features must have the same channels, got "
                f"{[s.channels for s in input_shape]}"
            )
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        self._num_levels = len(input_shape)
        in_channels = input_shape[0].channels
        self.cls_subnet = self._subnet(in_channels, conv_dims, norm)
        self.bbox_subnet = self._subnet(in_channels, conv_dims, norm)
        last = conv_dims[-1] if conv_dims else in_channels
        self.cls_score = nn.Conv2d(last, num_anchors * num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(last, num_anchors * 4, 3, padding=1)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, mean=0.0, std=0.01)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0.0)
        assert self.cls_score.bias is not None  # a Conv2d with bias
        if cls_prior_bias is None:
            nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))
        else:
            if len(cls_prior_bias) != num_classes:
                raise ValueError(
                    f"cls_prior_bias has {len(cls_prior_bias)} values for {num_classes} class "
                    "scores per anchor"
                )
            with torch.no_grad():  # output channel a * C + c is anchor a, class c
                bias = torch.tensor([float(b) for b in cls_prior_bias]).repeat(num_anchors)
                self.cls_score.bias.copy_(bias)

    def _norm(self, norm: str, channels: int) -> nn.Module:
        if norm in ("BN", "SyncBN"):
            # Statistics differ a lot between levels: keep one BN per level, shared weights.
            if norm == "BN":  # the shared affine fused into the BN call under autocast
                return CycleBatchNormFusedList(length=self._num_levels,
                                               bn_class=nn.BatchNorm2d, num_features=channels)
            sync_bn: nn.Module = CycleBatchNormList(
                length=self._num_levels, bn_class=nn.SyncBatchNorm, num_features=channels
            )
            return sync_bn
        layer: nn.Module = get_norm(norm, channels)
        return layer

    def _subnet(self, in_channels: int, conv_dims: List[int], norm: str) -> nn.Sequential:
        layers: List[nn.Module] = []
        for out_channels in conv_dims:
            layers.append(nn.Conv2d(in_channels, out_channels, 3, padding=1))
            if norm:
                layers.append(self._norm(norm, out_channels))
            # in place: neither GroupNorm's nor the convolution's backward needs this input
            layers.append(nn.ReLU(inplace=True))
            in_channels = out_channels
        return nn.Sequential(*layers)

    config_keys = {
        "norm": "MODEL.RETINANET.NORM",
        "prior_prob": "MODEL.RETINANET.PRIOR_PROB",
    }

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: List[ShapeSpec]) -> Dict[str, Any]:
        num_anchors = build_anchor_generator(cfg, input_shape).num_cell_anchors
        if len(set(num_anchors)) != 1:
            raise ValueError(
                "MODEL.ANCHOR_GENERATOR gives a different number of anchors per level "
                f"({num_anchors}); RetinaFocalHead shares its predictor across levels and needs "
                "the same number everywhere"
            )
        loss_class = cls_loss_class(cfg)
        num_classes = cfg.MODEL.RETINANET.NUM_CLASSES
        prior_prob = cfg.MODEL.RETINANET.PRIOR_PROB
        num_logits = loss_class.num_logits(num_classes)
        return {
            "input_shape": input_shape,
            "num_classes": num_logits,
            # the loss's start (an invalid prior_prob is reported by __init__)
            "cls_prior_bias": (
                loss_class.prior_logit_bias(num_classes, prior_prob)
                if 0.0 < prior_prob < 1.0 else None
            ),
            "num_anchors": num_anchors[0],
            "conv_dims": [input_shape[0].channels] * cfg.MODEL.RETINANET.NUM_CONVS,
            **config_values(cfg, cls.config_keys),
        }

    def forward(
        self, features: List[torch.Tensor]
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """
        Args:
            features: L feature maps, (N, C, Hi, Wi), highest resolution first.

        Returns:
            logits: L tensors (N, A*K, Hi, Wi).
            deltas: L tensors (N, A*4, Hi, Wi).
        """
        if len(features) != self._num_levels:
            raise ValueError(f"Expected {self._num_levels} feature maps, got {len(features)}")
        logits = [self.cls_score(self.cls_subnet(f)) for f in features]
        deltas = [self.bbox_pred(self.bbox_subnet(f)) for f in features]
        return logits, deltas
