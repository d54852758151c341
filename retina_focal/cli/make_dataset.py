"""``retina-focal make-dataset`` (``tools/write_synthetic_coco.py``): write the synthetic shapes
dataset as a plain COCO-format dataset folder, e.g. to try the ``--dataset NAME=JSON:IMAGE_DIR``
workflow on files that look like a user's own:

    retina-focal make-dataset --output my_dataset --num-train 200 --num-val 50
    # -> my_dataset/train.json, my_dataset/train/*.png, my_dataset/val.json, my_dataset/val/*.png

docs/tools.md ("Write the synthetic dataset as files") says its options and what it refuses.
"""
import argparse
import os

from retina_focal.cli._args import command_parser, int_at_least, int_in
from retina_focal.data.datasets.synthetic import write_coco_folder
from retina_focal.utils.errors import reports_user_errors

MAX_SIZE = 4096  # px: a 4096 x 4096 image is 48 MB to draw

__all__ = ["build_parser", "main", "run"]


def build_parser():
    parser = command_parser(description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--num-train", type=int_at_least(1), default=200)
    parser.add_argument("--num-val", type=int_at_least(1), default=50)
    parser.add_argument("--size", type=int_in(32, MAX_SIZE), default=128,
                        help=f"image height and width in pixels (32 to {MAX_SIZE})")
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    return parser


def main(args):
    """Write both splits; return {split: COCO JSON path}
    (:func:`~retina_focal.data.datasets.synthetic.write_coco_folder`)."""
    return write_coco_folder(
        args.output, num_train=args.num_train, num_val=args.num_val, size=args.size,
        seed=args.seed,
        on_split=lambda split, path: print(f"{split}: {path} + "
                                           f"{os.path.join(args.output, split)}/"))


@reports_user_errors
def run(argv=None) -> int:
    main(build_parser().parse_args(argv))
    return 0
