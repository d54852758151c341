"""COCO box evaluation with a report: per-category AP, PR curves and one JSON, of a model
(:mod:`.coco_report`) or of a detections file (:mod:`.results_file`)."""
from retina_focal.evaluation.coco_report import (
    REPORT_FILE,
    COCOReportEvaluator,
    coco_eval_report,
    run_cocoeval,
    write_report,
)
from retina_focal.evaluation.results_file import check_results_against_gt, evaluate_results_file

__all__ = [
    "COCOReportEvaluator",
    "REPORT_FILE",
    "check_results_against_gt",
    "coco_eval_report",
    "evaluate_results_file",
    "run_cocoeval",
    "write_report",
]
