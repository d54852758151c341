"""``retina-focal make-dataset`` (``tools/write_synthetic_coco.py``): write the synthetic shapes
dataset as a plain COCO-format dataset folder, e.g. to try the ``--dataset NAME=JSON:IMAGE_DIR``
workflow on files that look like a user's own:

    retina-focal make-dataset --output my_dataset --num-train 200 --num-val 50
    # -> my_dataset/train.json, my_dataset/train/*.png, my_dataset/val.json, my_dataset/val/*.png

A folder that already holds a split (its JSON, or a non-empty image folder) is refused before
anything is written: images of a larger earlier dataset would stay beside the new JSON.
"""
import argparse
import os

from retina_focal.cli._args import command_parser, int_at_least, int_in
from retina_focal.cli._errors import reports_user_errors
from retina_focal.data.datasets.synthetic import SyntheticConfig, write_split
from retina_focal.utils.errors import DataError
from retina_focal.utils.file_io import make_output_dir

SPLITS = ("train", "val")
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


def check_output_is_free(output: str) -> None:
    """Raise :class:`DataError` if ``output`` already holds a split: ``<split>.json`` or a
    non-empty ``<split>/`` folder (a file there too)."""
    found = []
    for split in SPLITS:
        json_file, image_dir = os.path.join(output, f"{split}.json"), os.path.join(output, split)
        if os.path.lexists(json_file):
            found.append(f"{split}.json")
        files = os.listdir(image_dir) if os.path.isdir(image_dir) else []
        if files:
            found.append(f"{split}/ ({len(files)} files)")
        elif os.path.lexists(image_dir) and not os.path.isdir(image_dir):
            found.append(f"{split} (a file)")
    if found:
        raise DataError(f"--output {output!r} already holds a dataset ({', '.join(found)}); "
                        "give an empty or new folder, or remove those first (nothing was "
                        "written)")


def main(args):
    """Write both splits; return {split: COCO JSON path}."""
    config = SyntheticConfig(num_train=args.num_train, num_val=args.num_val,
                             image_size=(args.size, args.size), max_size=args.size / 2,
                             seed=args.seed)
    make_output_dir(args.output, "--output")
    check_output_is_free(args.output)
    paths = {}
    for split in SPLITS:
        paths[split] = write_split(config, split, args.output)  # a progress bar on a terminal
        print(f"{split}: {paths[split]} + {os.path.join(args.output, split)}/")
    return paths


@reports_user_errors
def run(argv=None) -> int:
    main(build_parser().parse_args(argv))
    return 0
