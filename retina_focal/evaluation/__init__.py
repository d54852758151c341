"""COCO box evaluation with a report: per-category AP, PR curves and one JSON."""
from retina_focal.evaluation.coco_report import (
    REPORT_FILE,
    COCOReportEvaluator,
    check_results_against_gt,
    coco_eval_report,
    evaluate_results_file,
    run_cocoeval,
    write_report,
)

__all__ = [
    "COCOReportEvaluator",
    "REPORT_FILE",
    "check_results_against_gt",
    "coco_eval_report",
    "evaluate_results_file",
    "run_cocoeval",
    "write_report",
]
