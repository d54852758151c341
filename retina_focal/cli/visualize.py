"""``retina-focal visualize`` (``tools/visualize_assignment.py``): draw, on one dataset image as
the model sees it at test time, the ground truth and the anchors the configured assigner makes
positive (in the colour of their ground truth) or ignored (grey).

    retina-focal visualize --config-file CFG --image 0 --output assign.png \\
        [--dataset NAME=JSON:IMAGE_DIR] [--dataset-name NAME] [KEY VALUE ...]

docs/assignment.md ("Looking at it") says how it picks the dataset and the image.
"""
import argparse
import os

from retina_focal.analysis.settings import (
    choose_dataset,
    draw_dataset_image,
    load_cfg,
    register_dataset_arg,
)
from retina_focal.analysis.visualize import check_output_png
from retina_focal.cli._args import command_parser, positive_float
from retina_focal.config.loading import add_allow_unsafe_config_argument
from retina_focal.data.datasets.coco import add_dataset_argument
from retina_focal.utils.errors import reports_user_errors


def build_parser():
    p = command_parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE")
    add_dataset_argument(p, then="the image is drawn from it (or from --dataset-name)")
    p.add_argument("--dataset-name", default=None,
                   help="dataset to take the image from (default: the only --dataset, else "
                        "the config's first DATASETS.TEST)")
    p.add_argument("--image", default="0", help="index in the dataset, or image file name")
    p.add_argument("--output", default="output/assignment.png", metavar="PNG",
                   help="the PNG file to write (an existing file only if this command wrote "
                        "it)")
    p.add_argument("--scale", type=positive_float, default=None,
                   help="magnification of the drawing (default: longer side >= 640 px)")
    add_allow_unsafe_config_argument(p)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides of the config")
    return p


def main(args):
    """Draw the assignment of one image into ``args.output``; print its counts
    (:func:`~retina_focal.analysis.settings.draw_dataset_image`)."""
    check_output_png(args.output)
    registered = [register_dataset_arg(spec) for spec in args.dataset]
    cfg = load_cfg(args.config_file, args.opts, allow_unsafe=args.allow_unsafe_config)
    dataset = choose_dataset(args.dataset_name, registered, cfg)
    drawn = draw_dataset_image(cfg, dataset, args.image, args.output, scale=args.scale)
    print(f"{os.path.basename(drawn.file_name)} at {drawn.size[1]}x{drawn.size[0]}, "
          f"{drawn.assigner}")
    print(drawn.counts)
    for line in drawn.legend:
        print("  " + line)
    print(f"wrote {args.output}")


@reports_user_errors
def run(argv=None) -> int:
    main(build_parser().parse_args(argv))
    return 0
