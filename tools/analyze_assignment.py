#!/usr/bin/env python
"""Anchor-assignment statistics of one or several configs over a dataset, without
training.

    python tools/analyze_assignment.py --config-file CFG [KEY VALUE ...] \\
        [--compare OTHER_CFG [KEY VALUE ...]] ...

The same as ``retina-focal analyze``: the command lives in
:mod:`retina_focal.cli.analyze` (options: ``--help``).
"""
import sys

from retina_focal.cli.analyze import run

if __name__ == "__main__":
    sys.exit(run())
