#!/usr/bin/env python
"""Measure RetinaFocal against Detectron2: focal loss, a training iteration, inference.

    python tools/benchmark.py --output benchmark.json            # full run, ~10-20 min, 2 cores
    python tools/benchmark.py --quick --output /tmp/b.json       # seconds: a smoke test

The same as ``retina-focal benchmark``: the command lives in
:mod:`retina_focal.cli.benchmark` (options: ``--help``).
"""
import sys

from retina_focal.cli.benchmark import run

if __name__ == "__main__":
    sys.exit(run(prog="tools/benchmark.py"))
