#!/usr/bin/env python
"""Write the synthetic shapes dataset as a plain COCO-format dataset folder, e.g. to try the
``--dataset NAME=JSON:IMAGE_DIR`` workflow on files that look like a user's own:

    python tools/write_synthetic_coco.py --output my_dataset --num-train 200 --num-val 50
    # -> my_dataset/train.json, my_dataset/train/*.png, my_dataset/val.json, my_dataset/val/*.png
"""
import argparse
import os

from retina_focal.data import SyntheticConfig, write_split


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--num-train", type=int, default=200)
    parser.add_argument("--num-val", type=int, default=50)
    parser.add_argument("--size", type=int, default=128, help="image height and width")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config = SyntheticConfig(num_train=args.num_train, num_val=args.num_val,
                             image_size=(args.size, args.size), max_size=args.size / 2,
                             seed=args.seed)
    os.makedirs(args.output, exist_ok=True)
    for split in ("train", "val"):
        path = write_split(config, split, args.output)  # shows a progress bar on a terminal
        print(f"{split}: {path} + {os.path.join(args.output, split)}/")


if __name__ == "__main__":
    main()
