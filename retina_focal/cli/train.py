"""``retina-focal train`` (``tools/train_net.py``): train and/or evaluate RetinaFocal (or any
Detectron2 model) with a YAML config and Detectron2's trainer.

    retina-focal train --config-file configs/Synthetic/retina_focal_R_18_FPN_synthetic.yaml
    retina-focal train --config-file CFG --eval-only MODEL.WEIGHTS model_final.pth
    retina-focal train --config-file CFG --num-gpus 8 SOLVER.IMS_PER_BATCH 16

docs/tools.md ("Train") and docs/datasets.md say its options, what it logs and writes.
"""
import logging

import detectron2.utils.comm as comm

from retina_focal.cli._args import launch_settings, refuse_unknown_options, run_options
from retina_focal.engine.defaults import (
    Trainer,
    default_argument_parser,
    evaluate_checkpoint,
    setup_cfg,
    train_or_evaluate,
)
from retina_focal.engine.launch import launch_run
from retina_focal.utils.errors import reports_user_errors

__all__ = ["build_parser", "main", "run"]

logger = logging.getLogger("retina_focal")


def build_parser():
    return default_argument_parser(__doc__)


def main(args):
    """One process of the run: train (resuming with ``--resume``), or evaluate with
    ``--eval-only``. The run holds OUTPUT_DIR (a second run there stops at once) until it ends,
    whatever happens."""
    cfg = setup_cfg(**run_options(args))

    def evaluate():
        results = evaluate_checkpoint(cfg, resume=args.resume)
        if comm.is_main_process():
            logger.info(f"Evaluation results: {dict(results)}")
        return results

    return train_or_evaluate(cfg.OUTPUT_DIR, eval_only=args.eval_only, resume=args.resume,
                             evaluate=evaluate, build_trainer=lambda: Trainer(cfg))


@reports_user_errors
def run(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # an option it does not have, among the overrides: named as such
    refuse_unknown_options(parser, args)
    print("Command Line Args:", args)
    launch_run(main, (args,), launch_settings(args))
    return 0
