#!/usr/bin/env python
"""COCO box evaluation with a full report (AP table, per-category AP, PR curves, JSON)
of a checkpoint or of a detections file.

    python tools/evaluate.py --config-file CFG MODEL.WEIGHTS model_final.pth
    python tools/evaluate.py --config-file CFG --gt-json val.json --image-dir val/ \\
        MODEL.WEIGHTS model_final.pth
    python tools/evaluate.py --results coco_instances_results.json --gt-json val.json

The same as ``retina-focal eval``: the command lives in
:mod:`retina_focal.cli.evaluate` (options: ``--help``).
"""
import sys

from retina_focal.cli.evaluate import run

if __name__ == "__main__":
    sys.exit(run())
