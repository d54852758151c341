#!/usr/bin/env python
"""Anchor imbalance of the imbalance presets (and COCO's), and the imbalance study's plot of
AP(FL) - AP(CE) against negatives per positive anchor.

    python tools/imbalance.py --config-file CFG --output DIR [--study DIR]

The same as ``retina-focal imbalance``: the command lives in
:mod:`retina_focal.cli.imbalance` (options: ``--help``).
"""
import sys

from retina_focal.cli.imbalance import run

if __name__ == "__main__":
    sys.exit(run())
