#!/usr/bin/env python
"""Run one of the focal-loss paper's ablations: one trained and evaluated model per
setting.

    python tools/ablate.py --config-file configs/Synthetic/retina_focal_R_18_FPN_synthetic.yaml \\
        --study 1a --schedule cpu_short [--workers N] [--output DIR] [--settings L1,L2] \\
        [--dataset NAME=JSON:IMAGE_DIR ...] [KEY VALUE ...]

The same as ``retina-focal ablate``: the command lives in
:mod:`retina_focal.cli.ablate` (options: ``--help``).
"""
import sys

from retina_focal.cli.ablate import run

if __name__ == "__main__":
    sys.exit(run(prog="tools/ablate.py"))
