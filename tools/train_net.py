#!/usr/bin/env python
"""Train and/or evaluate RetinaFocal (or any Detectron2 model) with a YAML config and
Detectron2's trainer.

    python tools/train_net.py --config-file configs/Synthetic/retina_focal_R_18_FPN_synthetic.yaml
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS model_final.pth
    python tools/train_net.py --config-file CFG --num-gpus 8 SOLVER.IMS_PER_BATCH 16

The same as ``retina-focal train``: the command lives in
:mod:`retina_focal.cli.train` (options: ``--help``).
"""
import sys

from retina_focal.cli.train import run

if __name__ == "__main__":
    sys.exit(run())
