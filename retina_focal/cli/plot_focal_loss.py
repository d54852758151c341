"""``retina-focal plot-focal-loss`` (``tools/plot_focal_loss.py``): plot the focal loss as the
paper does.

    # Figure 1 only: loss vs p_t for gamma in {0, .5, 1, 2, 5}
    retina-focal plot-focal-loss --output plots/
    # Figure 1 and Figure 4: cumulative normalised loss of a trained model's anchors
    retina-focal plot-focal-loss --output plots/ \\
        --config-file configs/Synthetic/retina_focal_R_18_FPN_synthetic.yaml \\
        [--dataset synthetic_shapes_val] [--num-images 100] MODEL.WEIGHTS model_final.pth

docs/ablations.md ("Figures 1 and 4") says what it draws and the files it writes.
"""
import argparse
import logging

from retina_focal.analysis.loss_curves import figure4, write_figure1
from retina_focal.cli._args import command_parser, int_at_least, refuse_unused
from retina_focal.config.loading import add_allow_unsafe_config_argument
from retina_focal.utils.errors import reports_user_errors
from retina_focal.utils.file_io import output_dir_of_run

__all__ = ["build_parser", "main", "parse_args", "run"]


def _gammas(text: str):
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    if not values or any(not g >= 0 for g in values):
        raise argparse.ArgumentTypeError(f"gammas must be >= 0, got {text!r}")
    return values


def build_parser():
    p = command_parser(description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="directory for the PNG and JSON files")
    p.add_argument("--gammas", type=_gammas, default=[0.0, 0.5, 1.0, 2.0, 5.0],
                   help="Figure 1 gammas (default 0,0.5,1,2,5)")
    p.add_argument("--config-file", default=None, metavar="FILE",
                   help="config of a trained model: also draw Figure 4")
    p.add_argument("--dataset", default=None,
                   help="registered dataset for Figure 4 (default: the config's first "
                        "DATASETS.TEST)")
    p.add_argument("--num-images", type=int_at_least(1), default=100,
                   help="images used for Figure 4")
    p.add_argument("--fig4-gammas", type=_gammas, default=[0.0, 0.5, 1.0, 2.0],
                   help="gammas for Figure 4 (default 0,0.5,1,2 as the paper)")
    add_allow_unsafe_config_argument(p)
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                   help="KEY VALUE config overrides, e.g. MODEL.WEIGHTS model_final.pth")
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.config_file:  # Figure 1 only: what only Figure 4 reads is refused, not ignored
        refuse_unused((("--dataset", args.dataset is not None),
                       ("--num-images", args.num_images != parser.get_default("num_images")),
                       ("--fig4-gammas", args.fig4_gammas != parser.get_default("fig4_gammas")),
                       ("KEY VALUE overrides", bool(args.opts))),
                      "without --config-file only Figure 1 is drawn (Figure 4 needs the "
                      "trained model's config)")
    return args


def main(args) -> int:
    """Write Figure 1 (and Figure 4 with ``--config-file``, first: a bad input stops the
    command before either figure is written); 0, or ``SystemExit("error: ...")``."""
    with output_dir_of_run(args.output, "--output"):  # a refused run leaves no new folder
        if args.config_file:
            try:
                path = figure4(args.config_file, args.opts, args.output, dataset=args.dataset,
                               num_images=args.num_images, gammas=args.fig4_gammas,
                               allow_unsafe=args.allow_unsafe_config)
                print(f"wrote {path}")
            except (ValueError, FileNotFoundError) as e:
                raise SystemExit(f"error: {e}") from e
        print(f"wrote {write_figure1(args.gammas, args.output)}")
    return 0


@reports_user_errors
def run(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    return main(args)
