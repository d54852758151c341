#!/usr/bin/env python
"""Write the synthetic shapes dataset as a COCO-format dataset folder.

    python tools/write_synthetic_coco.py --output my_dataset --num-train 200 --num-val 50

The same as ``retina-focal make-dataset``: the command lives in
:mod:`retina_focal.cli.make_dataset` (options: ``--help``).
"""
import sys

from retina_focal.cli.make_dataset import run

if __name__ == "__main__":
    sys.exit(run())
