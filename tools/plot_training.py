#!/usr/bin/env python
"""Training curves from Detectron2's metrics.json, one or several runs overlaid.

    python tools/plot_training.py output/run_a output/run_b/metrics.json \\
        --labels baseline gamma0 --output plots/

The same as ``retina-focal plot``: the command lives in
:mod:`retina_focal.cli.plot` (options: ``--help``).
"""
import sys

from retina_focal.cli.plot import run

if __name__ == "__main__":
    sys.exit(run())
