"""Detections from a file, checked and evaluated: a COCO results file (``[{"image_id",
"category_id", "bbox", "score"}, ...]``) against a ground-truth JSON, with pycocotools alone (no
model), reported as :mod:`.coco_report` reports a model's evaluation."""
import contextlib
import io
import json
import logging
import os
from typing import Dict, List, Optional

from retina_focal.evaluation.coco_report import coco_eval_report, run_cocoeval, write_report

__all__ = ["check_results_against_gt", "evaluate_results_file"]

logger = logging.getLogger(__name__)


def check_results_against_gt(results: List[Dict], coco_gt, results_name: str = "results",
                             gt_name: str = "ground truth") -> None:
    """Raise ValueError, naming the offending ids, unless every detection is a dict with
    ``image_id``, ``category_id``, ``bbox`` ([x, y, w, h]) and ``score`` whose image and
    category exist in ``coco_gt`` (a pycocotools ``COCO``)."""
    if not isinstance(results, list):
        raise ValueError(f"{results_name}: expected a JSON list of detections (COCO results "
                         f"format), got {type(results).__name__}")
    required = ("image_id", "category_id", "bbox", "score")
    for i, det in enumerate(results):
        missing = [k for k in required if not isinstance(det, dict) or k not in det]
        if missing:
            raise ValueError(f"{results_name}: detection #{i} lacks {missing}; each detection "
                             f"needs {list(required)} (COCO results format): {det!r}"[:500])
        if len(det["bbox"]) != 4:
            raise ValueError(f"{results_name}: detection #{i} has bbox {det['bbox']!r}; "
                             "expected [x, y, width, height]")

    def _ids(values):
        values = sorted(values)
        shown = ", ".join(str(v) for v in values[:10])
        return shown + (f", ... ({len(values)} in all)" if len(values) > 10 else "")

    bad_images = {d["image_id"] for d in results} - set(coco_gt.getImgIds())
    if bad_images:
        raise ValueError(
            f"{results_name}: image_id {_ids(bad_images)} not in {gt_name} (which has "
            f"{len(coco_gt.getImgIds())} images, ids {_ids(coco_gt.getImgIds())})"
        )
    bad_cats = {d["category_id"] for d in results} - set(coco_gt.getCatIds())
    if bad_cats:
        raise ValueError(
            f"{results_name}: category_id {_ids(bad_cats)} not in {gt_name}, whose "
            f"category ids are {_ids(coco_gt.getCatIds())}"
        )


def evaluate_results_file(results_file: str, gt_json: str,
                          output_dir: Optional[str] = None) -> Dict:
    """Evaluate a COCO results file against a COCO ground-truth JSON with pycocotools.

    Returns the :func:`coco_eval_report` dict (also written to ``output_dir`` if given).
    """
    from pycocotools.coco import COCO

    for path, what in ((results_file, "results file"), (gt_json, "ground-truth JSON")):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{what} {path!r} does not exist")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_json)
    if "annotations" not in coco_gt.dataset:
        raise ValueError(f"{gt_json} has no 'annotations': it cannot be evaluated against")
    with open(results_file) as f:
        try:
            results = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"results file {results_file!r} is not valid JSON: {e}") from e
    check_results_against_gt(results, coco_gt, results_name=results_file, gt_name=gt_json)
    coco_eval, summary = run_cocoeval(coco_gt, results)
    logger.info("COCOeval summary:\n" + summary)
    name = os.path.splitext(os.path.basename(gt_json))[0]
    report = coco_eval_report(coco_eval, dataset=name)
    report["results_file"] = os.path.abspath(results_file)
    report["gt_json"] = os.path.abspath(gt_json)
    if output_dir:
        report["files"] = {k: os.path.basename(v)
                           for k, v in write_report(report, output_dir).items()}
    return report
