"""Detectron2's RetinaNet built from a RetinaFocal config, with a RetinaFocal model's weights:
the reference a RetinaFocal model is measured and checked against (``retina-focal benchmark``,
the GPU checks)."""
import copy
import inspect
from typing import List

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import RetinaNet, build_backbone
from detectron2.modeling.matcher import Matcher

from retina_focal.modeling.meta_arch import RetinaFocal

__all__ = ["check_detectron2_comparable", "detectron2_head", "detectron2_head_kind",
           "detectron2_retinanet"]

# The MODEL.RETINA_FOCAL keys that change what RetinaFocal computes, with the value at which it
# computes what Detectron2's RetinaNet does. The others change how (kernel, memory layout,
# folded norms, precision, data loading) or act only with one of these changed (a loss's or a
# sampler's parameters).
DETECTRON2_EQUIVALENT = {
    "HEAD_NAME": "RetinaFocalHead", "LOSS_NAME": "SigmoidFocalLoss",
    "ASSIGNER_NAME": "IoUThresholdMatcher", "ALLOW_LOW_QUALITY_MATCHES": True,
    "LOW_QUALITY_MATCH_ORDER": "detectron2", "LOW_QUALITY_MIN_IOU": 0.0, "ALPHA_PER_CLASS": [],
    "SAMPLER_NAME": "AllAnchors", "NORMALIZER": "ema",
}


def check_detectron2_comparable(cfg: CfgNode, purpose: str) -> None:
    """Refuse (:class:`~retina_focal.config.ConfigError` naming the key, its value and the
    value to use) a ``cfg`` whose RetinaFocal is not the model Detectron2's RetinaNet builds
    from it: another meta-architecture, or a :data:`DETECTRON2_EQUIVALENT` key changed.
    ``purpose``: what needs the two to be the same model (the start of the message)."""
    from retina_focal.config.loading import ConfigError

    arch = cfg.MODEL.META_ARCHITECTURE
    if arch != "RetinaFocal":
        raise ConfigError(f"{purpose}, but MODEL.META_ARCHITECTURE is {arch!r}: use a "
                          f"RetinaFocal config")
    for key, value in DETECTRON2_EQUIVALENT.items():
        given = cfg.MODEL.RETINA_FOCAL[key]
        if given != value and not (isinstance(value, list) and list(given) == value):
            raise ConfigError(f"{purpose}, but MODEL.RETINA_FOCAL.{key} is {given!r} "
                              f"(Detectron2's RetinaNet has no such setting): leave the key at "
                              f"{value!r}")


def detectron2_retinanet(cfg: CfgNode, ours: torch.nn.Module) -> RetinaNet:
    """Detectron2's RetinaNet as Detectron2 builds it from ``cfg`` (its own backbone builder,
    RetinaNetHead and Matcher, NCHW), on ``cfg.MODEL.DEVICE``, with the weights of ``ours``
    (RetinaFocal built from the same ``cfg``): the same parameters."""
    # Of RetinaFocal's constructor arguments it takes those RetinaNet has (the RetinaFocal-only
    # ones: loss, assigner, sampler, normaliser, ...); head and backbone are rebuilt below.
    accepted = inspect.signature(RetinaNet.__init__).parameters
    kwargs = {k: v for k, v in RetinaFocal.from_config(cfg).items()
              if k in accepted and k not in ("head", "backbone")}
    rcfg = cfg.MODEL.RETINANET
    backbone = build_backbone(cfg)
    shapes = [backbone.output_shape()[f] for f in rcfg.IN_FEATURES]
    kwargs.update(
        backbone=backbone, head=detectron2_head(cfg, shapes, ours.get_submodule("head")),
        anchor_matcher=Matcher(rcfg.IOU_THRESHOLDS, rcfg.IOU_LABELS,
                               allow_low_quality_matches=True),
    )
    theirs: RetinaNet = RetinaNet(**kwargs).to(cfg.MODEL.DEVICE)
    theirs.load_state_dict(ours.state_dict())
    return theirs


# the head norms every Detectron2 version's RetinaNetHead builds
_D2_HEAD_NORMS = ("", "BN", "SyncBN")


def detectron2_head(cfg: CfgNode, shapes: List[ShapeSpec],
                    our_head: torch.nn.Module) -> torch.nn.Module:
    """Detectron2's RetinaNetHead for ``cfg``. Detectron2 0.6 cannot build it with a norm
    whose 1-channel instance is invalid (its ``get_norm(norm, 1)`` type check fails for "GN"),
    so there, and only there, it is the same layers in the same order (conv, norm,
    ReLU(inplace=False)), NCHW, which is what RetinaNetHead builds in later Detectron2
    versions (:func:`detectron2_head_kind` says which one a report measured)."""
    from detectron2.modeling.meta_arch.retinanet import RetinaNetHead

    try:
        head: torch.nn.Module = RetinaNetHead(cfg, shapes)
        return head
    except ValueError:
        if cfg.MODEL.RETINANET.NORM in _D2_HEAD_NORMS:
            raise  # a head Detectron2 can build: its error is a real one
        head = copy.deepcopy(our_head).to(memory_format=torch.contiguous_format)
        for module in head.modules():
            if isinstance(module, torch.nn.ReLU):
                module.inplace = False
        return head


def detectron2_head_kind(cfg: CfgNode, theirs: RetinaNet) -> str:
    """What the Detectron2 side's head is, for the report."""
    from detectron2.modeling.meta_arch.retinanet import RetinaNetHead

    if isinstance(theirs.head, RetinaNetHead):
        return "RetinaNetHead"
    return (f"RetinaFocalHead's layers in NCHW (this Detectron2's RetinaNetHead cannot be "
            f"built with MODEL.RETINANET.NORM={cfg.MODEL.RETINANET.NORM!r})")
