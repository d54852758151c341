#!/usr/bin/env python
"""Run a trained model on images: annotated images and COCO-format results.

    python tools/demo.py --config-file CFG --input img.jpg photos/ 'more/*.png' \\
        --output demo_out/ --score-thresh 0.3 --device cpu MODEL.WEIGHTS model_final.pth

The same as ``retina-focal demo``: the command lives in
:mod:`retina_focal.cli.demo` (options: ``--help``).
"""
import sys

from retina_focal.cli.demo import run

if __name__ == "__main__":
    sys.exit(run())
