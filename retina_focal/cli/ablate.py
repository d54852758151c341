"""``retina-focal ablate`` (``tools/ablate.py``): run one of the focal-loss paper's ablations:
train and evaluate one model per setting.

    retina-focal ablate --config-file configs/Synthetic/retina_focal_R_18_FPN_synthetic.yaml \\
        --study 1a [--schedule cpu_fast] [--seeds 0,1] [--workers N] [--output DIR] \\
        [--settings L1,L2] [--dataset NAME=JSON:IMAGE_DIR ...] [KEY VALUE ...]

docs/ablations.md says the studies, the schedules, the options and the files it writes.
"""
import argparse
import shlex
import sys

from retina_focal.ablation.runner import (
    RunMadeOtherwise,
    StudyInterrupted,
    StudyRunner,
    build_plan,
)
from retina_focal.ablation.studies import SCHEDULES, STUDIES
from retina_focal.cli._args import command_parser
from retina_focal.data.datasets.coco import add_dataset_argument
from retina_focal.utils.errors import reports_user_errors

__all__ = ["build_parser", "main", "plan_from_args", "run"]


def build_parser():
    parser = command_parser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="base config")
    parser.add_argument("--study", required=True, help=f"one of: {', '.join(STUDIES)}")
    parser.add_argument("--schedule", default="cpu_fast",
                        help=f"one of: {', '.join(SCHEDULES)} (default: cpu_fast)")
    parser.add_argument("--workers", type=int, default=1,
                        help="settings trained at the same time (each in its own process)")
    parser.add_argument("--output", default=None,
                        help="study directory (default: output/ablations/<study>_<schedule>)")
    parser.add_argument("--settings", default=None,
                        help="comma-separated labels: run only these settings of the study")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated SEEDs: run every setting once per seed (the "
                             "run-to-run spread is tabled in results.md)")
    add_dataset_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="KEY VALUE config overrides applied to every setting")
    return parser


def plan_from_args(args: argparse.Namespace) -> dict:
    """:func:`~retina_focal.ablation.runner.build_plan` of the command's options."""
    return build_plan(args.config_file, args.study, args.schedule, seeds=args.seeds,
                      settings_text=args.settings, opts=args.opts, output=args.output,
                      workers=args.workers, datasets=args.dataset)


def main(args, command: str = "") -> int:
    """Plan (every setting's config checked first), then train what is not done yet; 0 when
    every setting finished, 1 if one failed, 2 on a bad study / schedule / override / folder,
    128 + the signal's number when SIGINT (130), SIGTERM (143) or SIGHUP (129) stopped it
    (its settings' processes stopped first)."""
    try:
        plan = plan_from_args(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        return StudyRunner(plan, command=command).run()
    except RunMadeOtherwise as e:  # the folder changed after the plan checked it
        print(f"error: {e}", file=sys.stderr)
        return 2
    except StudyInterrupted as e:  # its settings' processes have ended
        print(f"error: {e}; the settings being trained were stopped, the finished settings "
              f"are kept in {plan['out_dir']}: run the same command again to resume",
              file=sys.stderr)
        return 128 + e.signum


@reports_user_errors
def run(argv=None, prog: str = "retina-focal ablate") -> int:
    """``prog`` + ``argv`` is the command line recorded in the study's results."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        return main(args, command=shlex.join(prog.split() + argv))
    except KeyboardInterrupt:  # Ctrl-C while the study was planned: nothing was written
        print("error: interrupted by SIGINT before any setting started", file=sys.stderr)
        return 130
