"""``retina-focal ablate`` (``tools/ablate.py``): run one of the focal-loss paper's ablations:
train and evaluate one model per setting.

    retina-focal ablate --config-file configs/Synthetic/retina_focal_R_18_FPN_synthetic.yaml \\
        --study 1a [--schedule cpu_study] [--seeds 0,1] [--workers N] [--output DIR] \\
        [--settings L1,L2] [KEY VALUE ...]

Studies (``retina_focal/ablation/studies.py``): 1a (alpha at gamma 0), 1b (gamma with its alpha),
1c (anchor scales x ratios), 1d (FL vs OHEM vs hard-negative mining), 1e (depth x scale: AP
and inference time per image), table3 (CE vs FL vs FL*), imbalance (FL vs CE on each
imbalance preset), assigners, extra_losses, focal_rpn_*. Schedules: cpu_study (the default),
cpu_study_fp32, tiny, cpu_short (a smoke test), cpu_medium, cpu, coco_1x, config. Trailing
``KEY VALUE`` pairs override the base config for every setting (after the schedule; each
setting's own keys come last).

Each setting trains with ``retina-focal train`` in a subprocess, in ``DIR/NN_<label>/``; its
final COCO evaluation (read from that run's ``metrics.json``) is saved to ``result.json`` there.
Re-running the same command resumes: a setting with a ``result.json`` for the same command line
is not trained again. ``DIR/results.{md,json,png}`` are rewritten after every setting.
"""
import argparse
import shlex
import sys

from retina_focal.ablation.runner import StudyRunner, build_plan
from retina_focal.ablation.studies import SCHEDULES, STUDIES
from retina_focal.cli._args import command_parser
from retina_focal.utils.errors import reports_user_errors

__all__ = ["build_parser", "main", "run"]


def build_parser():
    parser = command_parser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="base config")
    parser.add_argument("--study", required=True, help=f"one of: {', '.join(STUDIES)}")
    parser.add_argument("--schedule", default="cpu_study",
                        help=f"one of: {', '.join(SCHEDULES)} (default: cpu_study)")
    parser.add_argument("--workers", type=int, default=1,
                        help="settings trained at the same time (each in its own process)")
    parser.add_argument("--output", default=None,
                        help="study directory (default: output/ablations/<study>_<schedule>)")
    parser.add_argument("--settings", default=None,
                        help="comma-separated labels: run only these settings of the study")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated SEEDs: run every setting once per seed (the "
                             "run-to-run spread is tabled in results.md)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="KEY VALUE config overrides applied to every setting")
    return parser


def main(args, command: str = "") -> int:
    """Plan (every setting's config checked first), then train what is not done yet; 0 when
    every setting finished, 1 if one failed, 2 on a bad study / schedule / override."""
    try:
        plan = build_plan(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"ablate.py: error: {e}", file=sys.stderr)
        return 2
    return StudyRunner(args, plan, command=command).run()


@reports_user_errors
def run(argv=None, prog: str = "retina-focal ablate") -> int:
    """``prog`` + ``argv`` is the command line recorded in the study's results."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return main(build_parser().parse_args(argv), command=shlex.join(prog.split() + argv))
