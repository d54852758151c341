"""Registries of retina_focal's swappable components, and lookup with a clear error."""
from typing import Any

from fvcore.common.registry import Registry

from retina_focal.utils.errors import UserError

__all__ = [
    "RETINA_FOCAL_HEAD_REGISTRY", "CLS_LOSS_REGISTRY", "ASSIGNER_REGISTRY", "SAMPLER_REGISTRY",
    "UnknownComponent", "get_component",
]

RETINA_FOCAL_HEAD_REGISTRY = Registry("RETINA_FOCAL_HEAD")
RETINA_FOCAL_HEAD_REGISTRY.__doc__ = """
Dense heads for RetinaFocal. A head is called as ``head(cfg, input_shape: List[ShapeSpec])``
(``@configurable``) and maps a list of L feature maps to ``(logits, deltas)``: two lists of L
tensors of shapes (N, A*C, Hi, Wi) and (N, A*4, Hi, Wi), with C = ``cls_loss.num_logits(K)``
class scores per anchor. ``RetinaFocalHead`` (and its subclasses) declare C as ``num_classes``,
which RetinaFocal checks against its loss when it is built.
"""

CLS_LOSS_REGISTRY = Registry("CLS_LOSS")
CLS_LOSS_REGISTRY.__doc__ = """
Classification losses. A loss is built as ``loss(cfg)`` (``@configurable``) and called as
``loss(logits (R, C), labels (R,) int64 in {-1 ignore, 0..K-1 foreground, K background},
weights=None)``, returning the *sum* over anchors and classes; RetinaFocal normalises it.
Losses derive from ``retina_focal.modeling.losses.base.DenseClsLoss``, whose docstring lists
the hooks they provide (number of logits C, prior bias, score activation, per-anchor loss,
IoU targets); RetinaFocal refuses any other object.
"""

SAMPLER_REGISTRY = Registry("SAMPLER")
SAMPLER_REGISTRY.__doc__ = """
Training-sample selection for the classification loss. A sampler is built as
``sampler(cfg)`` (``@configurable``), derives from
``retina_focal.modeling.anchor_sampling.AnchorSampler`` (the contract, in its docstring) and
is called as
``sampler(labels (N, R), num_classes, anchor_losses=(N, R) or None, boxes=(N, R, 4) or None)``,
returning ``None`` (every non-ignored anchor, weight 1) or (N, R) float per-anchor weights.
It declares ``needs_anchor_losses`` (RetinaFocal then passes each anchor's loss, without
gradient) and ``nms_boxes`` (None, "predicted" or "anchors": which boxes to pass).
"""

ASSIGNER_REGISTRY = Registry("ASSIGNER")
ASSIGNER_REGISTRY.__doc__ = """
Anchor assigners. An assigner is built as ``assigner(cfg)`` (``@configurable``), derives from
``retina_focal.modeling.anchor_assignment.AnchorAssigner`` (the contract, in its docstring)
and is called as ``assigner(anchors: List[Boxes] (one per level), gt: Instances)``, returning
``matched_idxs (R,) int64`` (index into ``gt``) and ``match_labels (R,) int8`` in
{-1 ignored, 0 negative, 1 positive}, like Detectron2's ``Matcher``, with R = the total number
of anchors of the image. RetinaFocal turns them into class labels and matched boxes.
"""


class UnknownComponent(UserError, ValueError):
    """A component name that is not registered (the message names the key and the choices)."""


def get_component(registry: Registry, name: str, key: str) -> Any:
    """``registry.get(name)``; an unknown name is an :class:`UnknownComponent` (a
    ``ValueError``) naming ``key`` and the choices.

    Any: a registry holds classes of different bases (and Detectron2's, functions); each
    builder states the type of what it builds from the class it gets."""
    if name not in registry:
        choices = ", ".join(sorted(k for k, _ in registry))
        raise UnknownComponent(
            f"{key}={name!r} is not registered in {registry._name}; choices: {choices}"
        )
    return registry.get(name)
