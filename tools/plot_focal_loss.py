#!/usr/bin/env python
"""The focal loss as the paper plots it: Figure 1, and Figure 4 of a trained model.

    python tools/plot_focal_loss.py --output plots/
    python tools/plot_focal_loss.py --output plots/ --config-file CFG [--dataset NAME] \\
        [--num-images 100] MODEL.WEIGHTS model_final.pth

The same as ``retina-focal plot-focal-loss``: the command lives in
:mod:`retina_focal.cli.plot_focal_loss` (options: ``--help``).
"""
import sys

from retina_focal.cli.plot_focal_loss import run

if __name__ == "__main__":
    sys.exit(run())
