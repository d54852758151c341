"""The whole detector as one graph: image in, final detections out (``--graph detector``).

:class:`DetectorGraph` wraps a RetinaNet-style model (Detectron2's ``RetinaNet`` or
``RetinaFocal``, eval mode) and computes, in tensor operations an ONNX exporter can record
with dynamic image sizes, what Detectron2's inference computes after the head
(``DenseDetector._decode_per_level_predictions`` and ``RetinaNet.inference_single_image``),
then the clip of ``detector_postprocess``:

1. normalisation and padding (the model's ``preprocess_image``), backbone, head;
2. per level: class scores (sigmoid, or softmax without the background column for a softmax
   loss), the candidates scoring above ``SCORE_THRESH_TEST``, at most
   ``TOPK_CANDIDATES_TEST`` of them, best first;
3. the anchors of the level's grid (``ANCHOR_GENERATOR`` sizes, ratios, offset, strides) and
   the candidates' boxes decoded with the model's own ``box2box_transform.apply_deltas``;
4. per-class NMS at ``NMS_THRESH_TEST`` (ONNX ``NonMaxSuppression``, one class per row of
   its score matrix), the ``TEST.DETECTIONS_PER_IMAGE`` best, ordered by score;
5. boxes clipped to the input image, empty boxes dropped.

Where eager code takes a data-dependent count (``min(topk, number above threshold)``, the
number of detections kept), the graph uses a fixed count on a list padded with ``-inf``
scores and then drops the padding by its score: the same candidates, and no count frozen at
the traced image's size. Scores that tie exactly may be ranked in another order than
PyTorch's sort ranks them (ONNX ``TopK`` puts the lower index first).

Input: ``image`` (3, H, W), float32 or uint8 (the export's ``input_dtype``), the config's
``INPUT.FORMAT``, 0-255, any H and W, run at that size (resizing to the test size is the
caller's, as for the eager model). Outputs: ``boxes`` (N, 4) float32 XYXY in the input image's
pixels, ``scores`` (N,) float32, ``classes`` (N,) int64 contiguous class indices.
"""
from typing import List, Tuple

import torch
from detectron2.modeling.meta_arch.dense_detector import DenseDetector, permute_to_N_HWA_K
from detectron2.modeling.meta_arch.retinanet import RetinaNet
from torch import Tensor, nn
from torch.onnx.operators import shape_as_tensor

from retina_focal.export.graph import (
    DenseHeadGraph,
    ExportUnsupported,
    check_dense_detector,
    split_outputs,
)

__all__ = ["DETECTOR_OUTPUTS", "INPUT_DTYPES", "DetectorGraph", "check_whole_detector",
           "level_anchors", "multiclass_nms"]

DETECTOR_OUTPUTS = ("boxes", "scores", "classes")
INPUT_DTYPES = {"float32": torch.float32, "uint8": torch.uint8}
# below every real score (>= 0) and above the filler of the NMS score matrix
_NMS_SCORE_FLOOR = -0.5
_FILLER = -1.0


def check_whole_detector(model: nn.Module) -> None:
    """:class:`ExportUnsupported` unless ``model``'s inference is the one
    :class:`DetectorGraph` restates: a RetinaNet-style detector whose per-level decoding and
    single-image inference are Detectron2's own, with a score threshold of 0 or more."""
    check_dense_detector(model, "--format onnx --graph detector")
    cls = type(model)
    own = [name for name, base in (("_decode_per_level_predictions", DenseDetector),
                                   ("inference_single_image", RetinaNet))
           if getattr(cls, name, None) is not getattr(base, name)]
    if own or not isinstance(model, RetinaNet):
        what = f"overrides {', '.join(own)}" if own else "is not a RetinaNet"
        raise ExportUnsupported(
            f"The whole-detector graph (--graph detector) restates Detectron2's RetinaNet "
            f"inference; {cls.__name__} {what}: export the head only (--graph head), whose "
            f"post-processing runs the model's own code")
    if model.test_score_thresh < 0:
        raise ExportUnsupported(
            f"MODEL.RETINANET.SCORE_THRESH_TEST={model.test_score_thresh} is negative: the "
            f"whole-detector graph needs a threshold of 0 or more (scores are in [0, 1])")


def level_anchors(cell_anchors: Tensor, stride: float, offset: float, feature: Tensor) -> Tensor:
    """(Hi * Wi * A, 4) XYXY anchors of one level, in Detectron2's order (row-major locations,
    then the A cell anchors), for a map ``feature`` (N, C, Hi, Wi) of the level (its features,
    or the head's outputs on them): the grid of
    ``DefaultAnchorGenerator`` written with the map's own size, so it stays dynamic when
    traced."""
    ys = torch.arange(feature.shape[2], dtype=torch.float32) * stride + offset * stride
    xs = torch.arange(feature.shape[3], dtype=torch.float32) * stride + offset * stride
    shift_y, shift_x = torch.meshgrid(ys, xs, indexing="ij")
    shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
    return (shifts.view(-1, 1, 4) + cell_anchors.view(1, -1, 4)).reshape(-1, 4)


def _top(scores: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """The ``k`` best of ``scores`` (1-D) as (values, indices), padded with ``-inf`` when there
    are fewer than ``k``: a fixed ``k``, so the graph's count does not depend on the traced
    size. The caller drops the padding by its score."""
    padded = torch.cat([scores, torch.full((k,), float("-inf"), dtype=scores.dtype)])
    return padded.topk(k)


class _MulticlassNMS(torch.autograd.Function):
    """Per-class NMS: ONNX ``NonMaxSuppression`` when exported, torchvision's ``nms`` class by
    class when run (for tracing and tests); returns (S, 3) int64 rows (0, class, index)."""

    @staticmethod
    def forward(ctx, boxes: Tensor, class_scores: Tensor, max_per_class: Tensor,
                iou_threshold: Tensor, score_floor: Tensor) -> Tensor:
        from torchvision.ops import nms

        rows: List[Tensor] = []
        for c in range(class_scores.shape[1]):
            s = class_scores[0, c]
            idx = torch.nonzero(s > score_floor).view(-1)
            keep = idx[nms(boxes[0, idx], s[idx], float(iou_threshold))][: int(max_per_class)]
            rows.append(torch.stack([torch.zeros_like(keep), torch.full_like(keep, c), keep], 1))
        return torch.cat(rows) if rows else boxes.new_zeros((0, 3), dtype=torch.int64)

    @staticmethod
    def symbolic(g, boxes, class_scores, max_per_class, iou_threshold, score_floor):
        return g.op("NonMaxSuppression", boxes, class_scores, max_per_class, iou_threshold,
                    score_floor)


def multiclass_nms(boxes: Tensor, scores: Tensor, classes: Tensor, num_classes: int,
                   iou_threshold: float, max_per_class: int) -> Tensor:
    """Indices of the boxes that survive NMS within their class (what torchvision's
    ``batched_nms`` keeps), unordered.

    Args:
        boxes: (M, 4) XYXY; scores: (M,) in [0, 1]; classes: (M,) int64 in [0, num_classes).
        max_per_class: at most this many per class (the detections per image: no class can
            place more among the best).
    """
    onehot = classes[None, :] == torch.arange(num_classes)[:, None]  # (K, M)
    class_scores = torch.where(onehot, scores[None, :], torch.full_like(onehot, _FILLER,
                                                                        dtype=scores.dtype))
    selected = _MulticlassNMS.apply(
        boxes[None], class_scores[None], torch.tensor([max_per_class], dtype=torch.int64),
        torch.tensor([iou_threshold], dtype=torch.float32),
        torch.tensor([_NMS_SCORE_FLOOR], dtype=torch.float32))
    return selected[:, 2]


class DetectorGraph(nn.Module):
    """The whole detector (module docstring): ``forward(image) -> (boxes, scores, classes)``,
    where ``image`` is float32 or uint8 (cast to float32 here).

    Args:
        model: a RetinaNet-style model in eval mode (:func:`check_whole_detector`); its
            test-time keys are read once, here, and become constants of the graph. Steps 1
            (preprocessing, backbone, head) are the head graph's
            (:class:`~retina_focal.export.graph.DenseHeadGraph`).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        check_whole_detector(model)
        self.network = DenseHeadGraph(model, preprocess=True)  # refuses a model in training
        detector: RetinaNet = model  # check_whole_detector: a RetinaNet (or a subclass)
        generator = detector.anchor_generator
        self.strides = [float(s) for s in generator.strides]
        self.offset = float(generator.offset)
        self.cell_anchors = [a.detach().clone() for a in generator.cell_anchors]
        self.num_classes = int(detector.num_classes)
        self.num_logits = int(getattr(detector, "num_cls_logits", self.num_classes))
        self.score_thresh = float(detector.test_score_thresh)
        self.topk = int(detector.test_topk_candidates)
        self.nms_thresh = float(detector.test_nms_thresh)
        self.max_det = int(detector.max_detections_per_image)

    def _scores(self, logits: Tensor) -> Tensor:
        """(R, C) logits -> (R, K) class scores, as the model's inference scores them."""
        model = self.network.model
        if hasattr(model, "_class_scores"):
            return model._class_scores(logits)
        return logits.sigmoid()

    def forward(self, image: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        size = shape_as_tensor(image)  # (3,): C, H, W, a tensor so it stays dynamic
        logits, deltas = split_outputs(list(self.network(image.to(torch.float32))))
        boxes_all, scores_all, classes_all = [], [], []
        for level, level_logits in enumerate(logits):
            scores = self._scores(permute_to_N_HWA_K(level_logits, self.num_logits)[0])
            level_deltas = permute_to_N_HWA_K(deltas[level], 4)[0]
            top_scores, top_idx = _top(scores.reshape(-1), self.topk)
            keep = top_scores > self.score_thresh
            top_scores, top_idx = top_scores[keep], top_idx[keep]
            anchor_idx = torch.div(top_idx, self.num_classes, rounding_mode="floor")
            anchors = level_anchors(self.cell_anchors[level], self.strides[level], self.offset,
                                    level_logits)
            boxes_all.append(self.network.model.box2box_transform.apply_deltas(
                level_deltas[anchor_idx], anchors[anchor_idx]))
            scores_all.append(top_scores)
            classes_all.append(top_idx % self.num_classes)
        boxes, scores, classes = torch.cat(boxes_all), torch.cat(scores_all), torch.cat(classes_all)
        kept = multiclass_nms(boxes, scores, classes, self.num_classes, self.nms_thresh,
                              self.max_det)
        best_scores, best = _top(scores[kept], self.max_det)
        real = best_scores > float("-inf")
        kept = kept[best[real]]
        boxes, scores, classes = boxes[kept], scores[kept], classes[kept]
        # detector_postprocess's clip to the image, then its non-empty filter
        zero = torch.zeros((), dtype=boxes.dtype)
        h, w = size[1].to(boxes.dtype), size[2].to(boxes.dtype)
        x1 = torch.minimum(torch.maximum(boxes[:, 0], zero), w)
        y1 = torch.minimum(torch.maximum(boxes[:, 1], zero), h)
        x2 = torch.minimum(torch.maximum(boxes[:, 2], zero), w)
        y2 = torch.minimum(torch.maximum(boxes[:, 3], zero), h)
        boxes = torch.stack((x1, y1, x2, y2), dim=1)
        nonempty = (x2 - x1 > 0) & (y2 - y1 > 0)
        return boxes[nonempty], scores[nonempty], classes[nonempty]
