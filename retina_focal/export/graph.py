"""What an exported RetinaNet computes: the network up to its head's per-level outputs.

The exported graph stops at the head (``RetinaNetHead`` / ``RetinaFocalHead``). Everything
after it, scoring (sigmoid or softmax), the per-level top-k of ``TOPK_CANDIDATES_TEST``, box
decoding, NMS and the resize to the original image size, runs outside the graph, in Python, as
the eager model's own ``forward_inference`` (:mod:`retina_focal.export.runtime`). Two reasons:

* faithfulness: under tracing, Detectron2 0.6's per-level top-k freezes whether a level caps its
  candidates at the traced image's size (``docs/export.md``), and ONNX's NMS differs from
  torchvision's in tie order and in its score-threshold semantics; outside the graph they are
  the eager code itself, so the detections are the eager model's;
* the test-time knobs (``SCORE_THRESH_TEST``, ``TOPK_CANDIDATES_TEST``, ``NMS_THRESH_TEST``,
  ``TEST.DETECTIONS_PER_IMAGE``) stay config keys rather than constants frozen in the file.

The graph's outputs, for L = ``len(MODEL.RETINANET.IN_FEATURES)`` levels, A anchors per
location and C class logits per anchor: L tensors (1, A*C, Hi, Wi) of class logits, then L
tensors (1, A*4, Hi, Wi) of box deltas (``num_levels`` = len(outputs) // 2).
"""
from typing import List, Tuple

from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from torch import Tensor, nn

from retina_focal.utils.errors import UserError

__all__ = ["DenseHeadGraph", "ExportUnsupported", "check_dense_detector", "split_outputs"]


class ExportUnsupported(UserError, ValueError):
    """A model these formats cannot export; the message names its type and what can."""


def check_dense_detector(model: nn.Module, what: str) -> None:
    """Raise :class:`ExportUnsupported` unless ``model`` is a RetinaNet-style dense detector
    (a backbone, a head over ``head_in_features``, Detectron2's ``forward_inference``): the
    graph of ``what`` (e.g. "ONNX") is cut at that head. A two-stage model (``GeneralizedRCNN``,
    e.g. Faster R-CNN with the focal RPN) has no such head."""
    missing = [a for a in ("backbone", "head", "head_in_features", "forward_inference")
               if not hasattr(model, a)]
    if not missing:
        return
    kind = type(model).__name__
    if hasattr(model, "proposal_generator") and hasattr(model, "roi_heads"):
        why = (f"this model is a {kind}, a two-stage detector: its second half, the proposals' "
               f"selection (per-level top-k of MODEL.RPN.PRE_NMS_TOPK_TEST and NMS, per image) "
               f"and the ROI heads (ROIAlign on those proposals, per-class box decoding, NMS), "
               f"is not written as graph operations here")
    else:
        why = f"this model is a {kind} (it has no {', '.join(missing)})"
    raise ExportUnsupported(
        f"{what} export supports one-stage RetinaNet-style detectors (MODEL.META_ARCHITECTURE "
        f"RetinaFocal or RetinaNet), whose graph is built from the dense head; {why}. Export "
        f"it with --format torchscript, which traces the whole model (proposals and final "
        f"boxes) and checks it against the eager model")


class DenseHeadGraph(nn.Module):
    """A RetinaNet-style model (Detectron2's ``RetinaNet`` or ``RetinaFocal``, eval mode) cut
    at its head.

    ``preprocess=True`` (the ONNX graph): the input is one (3, H, W) float image in the
    config's ``INPUT.FORMAT``, 0-255, any H and W; the graph normalises it
    (``PIXEL_MEAN``/``PIXEL_STD``) and pads it to the backbone's size divisibility with the
    model's own ``preprocess_image``, as eager does.

    ``preprocess=False`` (the exported program): the input is the (1, 3, H', W') tensor of
    ``model.preprocess_image`` (normalised, padded): torch.export cannot keep H and W dynamic
    through the padding arithmetic (it asks for multiples of the divisibility), so the
    runtime pads, with the same eager function.
    """

    def __init__(self, model: nn.Module, preprocess: bool):
        super().__init__()
        if model.training:
            raise ValueError("export needs a model in eval mode: call model.eval() first")
        check_dense_detector(model, "ONNX / exported-program")
        # a RetinaNet-style DenseDetector, checked above; typed as one because nn.Module's own
        # attribute type (Tensor | Module) hides its backbone, head and methods
        self.model: DenseDetector = model
        self.preprocess = preprocess

    def forward(self, image: Tensor) -> Tuple[Tensor, ...]:
        model = self.model
        if self.preprocess:
            image = model.preprocess_image([{"image": image}]).tensor
        features = model.backbone(image)
        logits, deltas = model.head([features[f] for f in model.head_in_features])
        return tuple(logits) + tuple(deltas)


def split_outputs(outputs: List[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
    """The graph's flat outputs as (L class-logit tensors, L box-delta tensors)."""
    if len(outputs) % 2:
        raise ValueError(f"an exported RetinaNet returns 2L tensors (logits, deltas per level); "
                         f"got {len(outputs)}")
    num_levels = len(outputs) // 2
    return list(outputs[:num_levels]), list(outputs[num_levels:])
