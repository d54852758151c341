#!/usr/bin/env python
"""Export a trained model to TorchScript and check it against the eager model.

    python tools/export_model.py --config-file CFG --output exported/ MODEL.WEIGHTS model.pth

The same as ``retina-focal export``: the command lives in
:mod:`retina_focal.cli.export` (options: ``--help``).
"""
import sys

from retina_focal.cli.export import run

if __name__ == "__main__":
    sys.exit(run())
