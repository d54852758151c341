"""``retina-focal eval`` (``tools/evaluate.py``): COCO box evaluation with a full report: the
standard AP table, per-category AP (sorted), precision-recall curves (PNG) per IoU threshold and
object size, and coco_report.json.

    retina-focal eval --config-file CFG MODEL.WEIGHTS model_final.pth
    retina-focal eval --results coco_instances_results.json --gt-json val.json

docs/tools.md ("Evaluate") says what it evaluates, where the report goes and what it refuses.
"""
import logging
import os

from retina_focal.cli._args import (
    launch_settings,
    refuse_unknown_options,
    refuse_unused,
    run_options,
)
from retina_focal.engine.defaults import default_argument_parser, setup_cfg
from retina_focal.engine.launch import launch_run
from retina_focal.evaluation import REPORT_FILE, evaluate_results_file
from retina_focal.evaluation.results_file import default_report_dir
from retina_focal.export.runtime import evaluate_weights
from retina_focal.utils.errors import reports_user_errors
from retina_focal.utils.file_io import check_output_dir

__all__ = ["build_parser", "evaluate_results", "main", "prepare_model_args", "run"]


def build_parser():
    parser = default_argument_parser(__doc__)
    parser.add_argument("--results", metavar="JSON",
                        help="a detections file in COCO results format: evaluate it against "
                             "--gt-json, without a model")
    parser.add_argument("--gt-json", metavar="JSON",
                        help="ground truth in COCO format (with --results, or with --image-dir "
                             "to evaluate a checkpoint on it)")
    parser.add_argument("--image-dir", metavar="DIR",
                        help="the images of --gt-json, when evaluating a checkpoint on it")
    parser.add_argument("--output", metavar="DIR",
                        help="where to write the report (checkpoint mode: sets OUTPUT_DIR)")
    return parser


def evaluate_results(args):
    """Evaluate the detections file ``args.results`` against ``args.gt_json``; print the
    tables; return the report."""
    output = args.output or default_report_dir(args.results)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = evaluate_results_file(args.results, args.gt_json, output_dir=output)
    print(f"Evaluated {report['counts']['detections']} detections on "
          f"{report['counts']['images']} images ({args.gt_json})\n")
    print("COCO box metrics (%):\n" + report["tables"]["metrics"] + "\n")
    print("Per-category AP (%), sorted:\n" + report["tables"]["per_category"] + "\n")
    print(f"Report: {os.path.join(output, REPORT_FILE)} and PR curves "
          f"{', '.join(sorted(v for k, v in report['files'].items() if k != 'report'))}")
    return report


def main(args):
    """One process of a checkpoint's evaluation on the config's DATASETS.TEST."""
    args.eval_only = True  # the checkpoint is the model's side: DATASETS.TRAIN is not read
    return evaluate_weights(setup_cfg(**run_options(args)))


def prepare_model_args(args):
    """Turn --gt-json/--image-dir/--output into --dataset and config overrides (before launch:
    every process must see them)."""
    if args.gt_json or args.image_dir:
        if not (args.gt_json and args.image_dir):
            raise SystemExit("error: --gt-json and --image-dir go together when evaluating a "
                             "checkpoint (or give --results to evaluate a detections file)")
        name = "eval_" + os.path.splitext(os.path.basename(args.gt_json))[0]
        args.dataset.append(f"{name}={args.gt_json}:{args.image_dir}")
        args.opts = list(args.opts or []) + ["DATASETS.TEST", f"('{name}',)"]
    if args.output:
        args.opts = list(args.opts or []) + ["OUTPUT_DIR", args.output]
    return args


@reports_user_errors
def run(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # an option it does not have, among the overrides: named as such
    refuse_unknown_options(parser, args)
    if args.output is not None:  # "" (an unset variable) or a file in the way: refused now
        check_output_dir(args.output, "--output")
    if args.results:
        if not args.gt_json:
            raise SystemExit("error: --results needs --gt-json (the ground truth to compare with)")
        # a results file is evaluated without a model: what only a model reads would be
        # ignored, so it is refused instead
        refuse_unused((("--config-file", bool(args.config_file)),
                       ("--image-dir", bool(args.image_dir)), ("--dataset", bool(args.dataset)),
                       ("KEY VALUE overrides", bool(args.opts)), ("--eval-only", args.eval_only),
                       ("--resume", args.resume)),
                      "--results evaluates a detections file without a model")
        try:
            evaluate_results(args)
        except (ValueError, FileNotFoundError) as e:
            raise SystemExit(f"error: {e}")
        return 0
    if not args.config_file:
        raise SystemExit("error: give --config-file (and MODEL.WEIGHTS) to evaluate a checkpoint, "
                         "or --results with --gt-json to evaluate a detections file")
    args = prepare_model_args(args)
    print("Command Line Args:", args)
    launch_run(main, (args,), launch_settings(args))
    return 0
