#!/usr/bin/env python
"""The synthetic config's data path and fused head BatchNorm against what they replace,
alternating in one process:

    python tools/benchmark_synthetic.py --output synthetic.json       # ~2 min on 2 cores

The same as ``retina-focal benchmark-synthetic``: the command lives in
:mod:`retina_focal.cli.benchmark_synthetic` (options: ``--help``).
"""
import sys

from retina_focal.cli.benchmark_synthetic import run

if __name__ == "__main__":
    sys.exit(run(prog="tools/benchmark_synthetic.py"))
