"""``retina-focal make-dataset`` (``tools/write_synthetic_coco.py``): write the synthetic shapes
dataset as a plain COCO-format dataset folder, e.g. to try the ``--dataset NAME=JSON:IMAGE_DIR``
workflow on files that look like a user's own:

    retina-focal make-dataset --output my_dataset --num-train 200 --num-val 50
    # -> my_dataset/train.json, my_dataset/train/*.png, my_dataset/val.json, my_dataset/val/*.png
"""
import argparse
import os

from retina_focal.cli._errors import reports_user_errors
from retina_focal.data.datasets.synthetic import SyntheticConfig, write_split
from retina_focal.utils.file_io import make_output_dir

__all__ = ["build_parser", "main", "run"]


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--num-train", type=int, default=200)
    parser.add_argument("--num-val", type=int, default=50)
    parser.add_argument("--size", type=int, default=128, help="image height and width")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(args):
    """Write both splits; return {split: COCO JSON path}."""
    config = SyntheticConfig(num_train=args.num_train, num_val=args.num_val,
                             image_size=(args.size, args.size), max_size=args.size / 2,
                             seed=args.seed)
    make_output_dir(args.output, "--output")
    paths = {}
    for split in ("train", "val"):
        paths[split] = write_split(config, split, args.output)  # a progress bar on a terminal
        print(f"{split}: {paths[split]} + {os.path.join(args.output, split)}/")
    return paths


@reports_user_errors
def run(argv=None) -> int:
    main(build_parser().parse_args(argv))
    return 0
