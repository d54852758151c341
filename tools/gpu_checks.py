#!/usr/bin/env python
"""The GPU checks in one call: CUDA tests, GPU benchmark, torch.compile recompilation counts.

    python tools/gpu_checks.py --output gpu.json      # without CUDA: a dry run, exit status 0

The same as ``retina-focal gpu-checks``: the command lives in
:mod:`retina_focal.cli.gpu_checks` (options: ``--help``). On the lent GPU machine run
``scripts/gpu_checks.sh`` (it needs no install).
"""
import sys

from retina_focal.cli.gpu_checks import run

if __name__ == "__main__":
    sys.exit(run(prog="tools/gpu_checks.py"))
