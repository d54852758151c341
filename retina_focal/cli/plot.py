"""``retina-focal plot`` (``tools/plot_training.py``): training curves from Detectron2's
``metrics.json``, one or several runs overlaid.

    retina-focal plot output/run_a output/run_b/metrics.json \\
        --labels baseline gamma0 --output plots/

docs/tools.md ("Training curves") says what it reads and the files it writes.
"""
import argparse

from retina_focal.analysis.training_curves import default_plot_dir, load_runs, plot_runs
from retina_focal.cli._args import command_parser, int_at_least
from retina_focal.utils.errors import reports_user_errors
from retina_focal.utils.file_io import check_output_dir

__all__ = ["build_parser", "main", "run"]


def build_parser():
    parser = command_parser(description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders (OUTPUT_DIR) or metrics.json files")
    parser.add_argument("--labels", nargs="+",
                        help="one legend label per run (default: the run folder's name)")
    parser.add_argument("--output", help="output folder (default: <first run>/plots)")
    parser.add_argument("--smooth", type=int_at_least(1), default=1,
                        help="running-mean window over logged points for losses/anchors")
    return parser


def main(args):
    """Read every run, write the plots and summary.json; return {name: path}."""
    try:
        runs = load_runs(args.runs, args.labels)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    output = args.output or default_plot_dir(args.runs[0])
    files = plot_runs(runs, output, smooth=args.smooth)
    print(f"Wrote {', '.join(sorted(files.values()))}")
    return files


@reports_user_errors
def run(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.runs):
        parser.error(f"--labels has {len(args.labels)} entries for {len(args.runs)} runs")
    if args.output is not None:  # "" (an unset variable) or a file in the way: refused now
        check_output_dir(args.output, "--output")
    main(args)
    return 0
