"""Exported model against eager model: per-image detection differences and COCO AP on a
dataset (``retina-focal export ... --verify-dataset NAME``, ``tests/export/test_export_parity.py``).
"""
import math
import os
from typing import Any, Dict, List, Optional, Tuple

import torch
from detectron2.data import build_detection_test_loader
from detectron2.structures import Boxes, Instances
from torch import nn

from retina_focal.data.mapper import RobustDatasetMapper
from retina_focal.engine.defaults import coco_report_evaluator

__all__ = ["ATOL", "BOX_ATOL", "BOX_RTOL", "compare_instances", "compare_results",
           "dataset_parity_verdict", "parity_on_dataset", "results_instances", "same_detections"]


# Scores are compared within ATOL, boxes within BOX_ATOL + BOX_RTOL * |coordinate| (the
# deployment tolerances: 1e-5 and 1e-3 px): another convolution kernel (onnxruntime's, or
# eager NCHW against eager channels-last) rounds the box deltas differently, and decoding (exp,
# times the anchor size; in the whole-detector graph, onnxruntime's own exp) turns that into
# 1e-4 to 2e-4 px on a 128-px box (measured: eager NCHW against eager channels-last differ by
# 1.5e-4 px on the tiny model; the whole graph of the quick-start model by up to 2e-4 px).
ATOL = 1e-5
BOX_ATOL = 1e-3
BOX_RTOL = 1e-5


def _pair_ties(eager, exported, atol: float) -> torch.Tensor:
    """(N,) indices into ``exported`` pairing each eager detection with an exported one of the
    same class whose score is within ``atol``, the nearest box first, each used once.

    Detections are sorted by score, and two whose scores differ by less than float rounding may
    come out in either order (sort and NMS ties); pairing by index alone would compare two
    different objects. Where no such partner is left, the detection keeps its own index, so a
    real difference still shows."""
    n = len(eager)
    a, b = eager.pred_boxes.tensor, exported.pred_boxes.tensor
    close = ((eager.scores[:, None] - exported.scores[None, :]).abs() <= atol) & (
        eager.pred_classes[:, None] == exported.pred_classes[None, :])
    distance = (a[:, None, :] - b[None, :, :]).abs().amax(dim=2)
    free = torch.ones(n, dtype=torch.bool)
    order = torch.arange(n)
    for i in range(n):
        candidates = close[i] & free
        if candidates.any():
            j = int(torch.where(candidates, distance[i], torch.inf).argmin())
        elif free[i]:
            j = i
        else:
            j = int(free.nonzero()[0])
        order[i] = j
        free[j] = False
    return order


def compare_instances(eager, exported, atol: float = ATOL, box_rtol: float = BOX_RTOL,
                      box_atol: Optional[float] = BOX_ATOL) -> Dict:
    """How the detections of one image differ: ``{"detections": [eager, exported] counts,
    "same_classes", "max_box_difference", "max_score_difference", "same"}`` (differences in
    pixels and score units, 0.0 when both are empty, None when the counts differ). ``same``:
    identical classes, scores within ``atol``, boxes within ``box_atol + box_rtol * |eager|``
    (``box_atol`` None: ``atol``).
    Detections whose scores tie within ``atol`` are compared in either order
    (:func:`_pair_ties`)."""
    out: Dict[str, Any] = {"detections": [len(eager), len(exported)], "same_classes": False,
                           "max_box_difference": None, "max_score_difference": None,
                           "same": False}
    if len(eager) != len(exported):
        return out
    if len(eager):
        exported = exported[_pair_ties(eager, exported, atol)]
    out["same_classes"] = bool(torch.equal(eager.pred_classes, exported.pred_classes))
    if not len(eager):
        out["max_box_difference"] = out["max_score_difference"] = 0.0
        out["same"] = True
        return out
    a, b = eager.pred_boxes.tensor, exported.pred_boxes.tensor
    out["max_box_difference"] = float((a - b).abs().max())
    out["max_score_difference"] = float((eager.scores - exported.scores).abs().max())
    out["same"] = (out["same_classes"] and out["max_score_difference"] <= atol
                   and bool(torch.allclose(b, a, atol=atol if box_atol is None else box_atol,
                                           rtol=box_rtol)))
    return out


def same_detections(diff: Dict) -> bool:
    """Whether :func:`compare_instances` found the same detections."""
    return diff["same"]


def _summary(rows: List[Dict]) -> Dict:
    """Per-image :func:`compare_instances` rows (each with its ``image_id``) and what they say
    together: ``{"num_images", "images", "all_same", "max_box_difference",
    "max_score_difference"}`` (the maxima over all images; None where a count differed)."""
    counts_equal = all(r["max_box_difference"] is not None for r in rows)
    return {
        "num_images": len(rows),
        "images": rows,
        "all_same": all(r["same"] for r in rows),
        "max_box_difference": max((r["max_box_difference"] for r in rows), default=0.0)
        if counts_equal else None,
        "max_score_difference": max((r["max_score_difference"] for r in rows), default=0.0)
        if counts_equal else None,
    }


def parity_test_loader(cfg, dataset_name: str):
    """The images of ``dataset_name`` as evaluation reads them: Detectron2's test loader with
    :class:`~retina_focal.data.mapper.RobustDatasetMapper` (16-bit images scaled to 8 bits,
    not saturated; any image mode), so that both models see what ``eval`` sees."""
    return build_detection_test_loader(cfg, dataset_name, mapper=RobustDatasetMapper(cfg, False))


def parity_on_dataset(cfg, eager: nn.Module, exported: nn.Module, dataset_name: str,
                      class_map: Optional[list], output_dir: str,
                      max_images: Optional[int] = None) -> Dict:
    """Run ``eager`` and ``exported`` on every image of ``dataset_name`` (Detectron2's test
    loader: the config's test-time resize), compare their detections image by image and
    evaluate both with the COCO report evaluator of ``retina-focal eval``.

    Returns:
        ``{"images": [per-image {"image_id", **compare_instances}], "all_same": every image
        the same (:func:`compare_instances`), "max_box_difference",
        "max_score_difference" (over all images; None where a count differed), "ap":
        {"eager": AP, "exported": AP} (COCO AP, %), "num_images"}``
    """
    evaluators = {side: coco_report_evaluator(cfg, dataset_name, class_map, f"{side} model",
                                              output_folder=os.path.join(output_dir, side))
                  for side in ("eager", "exported")}
    for ev in evaluators.values():
        ev.reset()
    rows: List[Dict] = []
    loader = parity_test_loader(cfg, dataset_name)
    for i, inputs in enumerate(loader):
        if max_images is not None and i >= max_images:
            break
        with torch.no_grad():
            outs = {"eager": eager(inputs), "exported": exported(inputs)}
        for side, ev in evaluators.items():
            ev.process(inputs, outs[side])
        for x, a, b in zip(inputs, outs["eager"], outs["exported"]):
            rows.append({"image_id": x["image_id"],
                         **compare_instances(a["instances"], b["instances"])})
    ap = {side: ev.evaluate()["bbox"]["AP"] for side, ev in evaluators.items()}
    return dict(_summary(rows), ap=ap)


def dataset_parity_verdict(report: Dict, ap_tolerance: float) -> Tuple[bool, str]:
    """Whether :func:`parity_on_dataset`'s ``report`` shows the exported model equal to the
    eager one, and why, in one sentence: every image the same and the two COCO APs within
    ``ap_tolerance`` points. Where neither model detects anything on any image,
    pycocotools' AP is NaN for both: that is agreement (the same, empty, detections), said
    so; NaN for one side only is a difference."""
    eager, exported = report["ap"]["eager"], report["ap"]["exported"]
    nan = [v is None or math.isnan(v) for v in (eager, exported)]
    if not report["all_same"]:
        differ = [str(r["image_id"]) for r in report["images"] if not r["same"]]
        return False, (f"the detections differ on {len(differ)} of {report['num_images']} "
                       f"images (image_id {', '.join(differ[:10])}"
                       f"{' ...' if len(differ) > 10 else ''})")
    if all(nan):
        return True, ("neither model detected anything on these images, so COCO AP is "
                      "undefined (nan) for both; their detections are the same: none")
    if any(nan):
        side = "eager" if nan[0] else "exported"
        return False, f"the {side} model's COCO AP is undefined (it detected nothing) and the " \
                      "other's is not"
    diff = abs(eager - exported)
    if diff > ap_tolerance:
        return False, (f"COCO AP differs by {diff:.3f} points (eager {eager:.3f}, exported "
                       f"{exported:.3f}; allowed {ap_tolerance})")
    return True, f"the same detections on every image; COCO AP within {diff:.3f} points"


def results_instances(results: List[Dict]) -> Dict[int, Instances]:
    """COCO results (``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``) as one
    Instances per image, best score first: ``pred_boxes`` holds the COCO boxes as they are
    (x, y, w, h), ``pred_classes`` the category ids."""
    by_image: Dict[int, List[Dict]] = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r)
    out = {}
    for image_id, dets in by_image.items():
        dets = sorted(dets, key=lambda d: -d["score"])
        out[image_id] = Instances(
            (1, 1), pred_boxes=Boxes(torch.tensor([d["bbox"] for d in dets]).view(-1, 4)),
            scores=torch.tensor([d["score"] for d in dets], dtype=torch.float32),
            pred_classes=torch.tensor([d["category_id"] for d in dets], dtype=torch.int64))
    return out


def compare_results(reference: List[Dict], other: List[Dict], atol: float = ATOL,
                    box_atol: Optional[float] = BOX_ATOL, box_rtol: float = BOX_RTOL) -> Dict:
    """Two COCO results lists compared image by image with :func:`compare_instances` (ties
    paired): ``{"images": [{"image_id", **differences}], "all_same", "max_box_difference",
    "max_score_difference", "num_images"}``. An image with detections in one list only
    counts as different (its counts differ)."""
    a, b = results_instances(reference), results_instances(other)
    empty = Instances((1, 1), pred_boxes=Boxes(torch.zeros(0, 4)), scores=torch.zeros(0),
                      pred_classes=torch.zeros(0, dtype=torch.int64))
    rows = [{"image_id": i, **compare_instances(a.get(i, empty), b.get(i, empty), atol=atol,
                                                box_rtol=box_rtol, box_atol=box_atol)}
            for i in sorted(set(a) | set(b))]
    return _summary(rows)
