"""``retina-focal lazy-train`` (``tools/lazyconfig_train_net.py``): train and/or evaluate from a
LazyConfig (Python) config file, with the YAML trainer's guarantees (the config system's part
lives in :mod:`retina_focal.engine.lazy`, the run's in
:func:`retina_focal.engine.defaults.train_or_evaluate`, shared with ``train``).

    retina-focal lazy-train --config-file configs/Synthetic/retina_focal_R_18_FPN_synthetic.py
    retina-focal lazy-train --config-file CFG.py --resume
    retina-focal lazy-train --config-file CFG.py --eval-only train.init_checkpoint=W
    retina-focal lazy-train --config-file CFG.py train.max_iter=100 optimizer.lr=0.01

docs/configs.md ("LazyConfig (Python) configs") says its overrides, --resume and --dataset.
"""
from retina_focal.cli._args import launch_settings, refuse_unknown_options, run_options
from retina_focal.engine.defaults import default_argument_parser, train_or_evaluate
from retina_focal.engine.launch import launch_run
from retina_focal.engine.lazy import (
    LazyReliableTrainer,
    build_lazy_model_and_load,
    lazy_output_dir,
    run_evaluation,
    setup_lazy_cfg,
)
from retina_focal.utils.errors import reports_user_errors

__all__ = ["build_parser", "main", "run"]


def build_parser():
    return default_argument_parser(__doc__)


def main(args):
    """One process of a run: ``--eval-only`` evaluates ``train.init_checkpoint``; otherwise
    train (``--resume``: from the last checkpoint), evaluating at the end (the EvalHook). The
    output directory is released at the end, whatever happens."""
    cfg = setup_lazy_cfg(**run_options(args))
    return train_or_evaluate(
        lazy_output_dir(cfg), eval_only=args.eval_only, resume=args.resume,
        evaluate=lambda: run_evaluation(cfg, build_lazy_model_and_load(cfg)),
        build_trainer=lambda: LazyReliableTrainer(cfg))


@reports_user_errors
def run(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # an option it does not have, among the overrides: named as such
    refuse_unknown_options(parser, args, pairs=False)
    launch_run(main, (args,), launch_settings(args))
    return 0
