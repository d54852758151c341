#!/usr/bin/env python
"""Draw the anchors the configured assigner labels on one dataset image.

    python tools/visualize_assignment.py --config-file CFG --image 0 --output assign.png \\
        [--dataset NAME=JSON:IMAGE_DIR] [--dataset-name NAME] [KEY VALUE ...]

The same as ``retina-focal visualize``: the command lives in
:mod:`retina_focal.cli.visualize` (options: ``--help``).
"""
import sys

from retina_focal.cli.visualize import run

if __name__ == "__main__":
    sys.exit(run())
