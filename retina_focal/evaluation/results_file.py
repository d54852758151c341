"""Detections from a file, checked and evaluated: a COCO results file (``[{"image_id",
"category_id", "bbox", "score"}, ...]``) against a ground-truth JSON, with pycocotools alone (no
model), reported as :mod:`.coco_report` reports a model's evaluation."""
import contextlib
import io
import logging
import math
import os
from typing import Dict, List, Optional

import numpy as np

from retina_focal.data.checks import bbox_problem
from retina_focal.data.datasets.coco import check_coco_boxes, check_coco_references
from retina_focal.evaluation.coco_report import coco_eval_report, run_cocoeval, write_report
from retina_focal.utils.errors import DataError
from retina_focal.utils.file_io import read_json

__all__ = ["check_results_against_gt", "default_report_dir", "evaluate_results_file"]

logger = logging.getLogger(__name__)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_finite_number(v) -> bool:
    return (isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_))
            and math.isfinite(v))


def _detection_problem(det: Dict) -> Optional[str]:
    """The first field of one detection that is not what COCOeval needs ("score 'high' (str)
    is not a finite number"), or ``None``."""
    for key in ("image_id", "category_id"):
        if not _is_int(det[key]):
            return (f"{key} {det[key]!r} ({type(det[key]).__name__}) is not an integer id "
                    "(a JSON number such as 42, not a string or a boolean)")
    bbox = det["bbox"]
    problem = bbox_problem(bbox)
    if problem:
        return (f"bbox {bbox!r} ({type(bbox).__name__}) {problem}; expected "
                "[x, y, width, height]")
    if bbox[2] < 0 or bbox[3] < 0:
        return f"bbox {bbox!r} (list) has a negative width or height"
    if not _is_finite_number(det["score"]):
        return (f"score {det['score']!r} ({type(det['score']).__name__}) is not a finite "
                "number")
    return None


def check_results_against_gt(results: List[Dict], coco_gt, results_name: str = "results",
                             gt_name: str = "ground truth") -> None:
    """Raise ValueError unless every detection is a dict with ``image_id`` and
    ``category_id`` (integers, not booleans or strings, that exist in ``coco_gt``, a
    pycocotools ``COCO``), ``bbox`` (4 finite numbers [x, y, w, h] with w, h >= 0) and ``score``
    (a finite number).

    pycocotools checks none of this: a string score fails deep inside it, and a NaN score is
    ranked like any other and changes AP. The message names the first bad detection's index,
    the field, its value and type, and how many more detections are bad."""
    if not isinstance(results, list):
        raise DataError(f"{results_name}: expected a JSON list of detections (COCO results "
                        f"format), got {type(results).__name__}")
    required = ("image_id", "category_id", "bbox", "score")
    bad = []  # (index, problem)
    for i, det in enumerate(results):
        missing = [k for k in required if not isinstance(det, dict) or k not in det]
        if missing:
            raise DataError(f"{results_name}: detection #{i} lacks {missing}; each detection "
                            f"needs {list(required)} (COCO results format): {det!r}"[:500])
        problem = _detection_problem(det)
        if problem:
            bad.append((i, problem))
    if bad:
        i, problem = bad[0]
        more = (f"; {len(bad) - 1} more of the {len(results)} detections are malformed"
                if len(bad) > 1 else "")
        raise DataError(f"{results_name}: detection #{i}: {problem}{more}")

    def _ids(values):
        values = sorted(values)
        shown = ", ".join(str(v) for v in values[:10])
        return shown + (f", ... ({len(values)} in all)" if len(values) > 10 else "")

    bad_images = {d["image_id"] for d in results} - set(coco_gt.getImgIds())
    if bad_images:
        raise DataError(
            f"{results_name}: image_id {_ids(bad_images)} not in {gt_name} (which has "
            f"{len(coco_gt.getImgIds())} images, ids {_ids(coco_gt.getImgIds())})"
        )
    bad_cats = {d["category_id"] for d in results} - set(coco_gt.getCatIds())
    if bad_cats:
        raise DataError(
            f"{results_name}: category_id {_ids(bad_cats)} not in {gt_name}, whose "
            f"category ids are {_ids(coco_gt.getCatIds())}"
        )


def default_report_dir(results_file: str) -> str:
    """Where the report of ``results_file`` goes unless told otherwise: ``<results>_report/``
    beside it (its extension dropped)."""
    return os.path.splitext(results_file)[0] + "_report"


def evaluate_results_file(results_file: str, gt_json: str,
                          output_dir: Optional[str] = None) -> Dict:
    """Evaluate a COCO results file against a COCO ground-truth JSON with pycocotools.

    Returns the :func:`coco_eval_report` dict (also written to ``output_dir`` if given).
    """
    from pycocotools.coco import COCO

    results = read_json(results_file, "results file")
    gt = read_json(gt_json, "ground-truth JSON")
    missing = [k for k in ("images", "annotations", "categories")
               if not isinstance(gt, dict) or not isinstance(gt.get(k), list)]
    if missing:
        raise DataError(f"{gt_json} has no {' / '.join(repr(k) for k in missing)} list: it is "
                        "not a COCO ground-truth file to evaluate against")
    gt_name = os.path.splitext(os.path.basename(gt_json))[0]
    check_coco_boxes(gt, gt_json, gt_name)
    check_coco_references(gt, gt_json, gt_name)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
    check_results_against_gt(results, coco_gt, results_name=results_file, gt_name=gt_json)
    coco_eval, summary = run_cocoeval(coco_gt, results)
    logger.info("COCOeval summary:\n" + summary)
    report = coco_eval_report(coco_eval, dataset=gt_name)
    report["results_file"] = os.path.abspath(results_file)
    report["gt_json"] = os.path.abspath(gt_json)
    if output_dir:
        report["files"] = {k: os.path.basename(v)
                           for k, v in write_report(report, output_dir).items()}
    return report
