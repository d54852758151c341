#!/usr/bin/env python
"""Train and/or evaluate from a LazyConfig (Python) config file, with the YAML trainer's
guarantees (resumable, atomic and complete checkpoints, CPU processes and mixed precision).
The configs keep Detectron2's layout (``model``, ``dataloader``, ``optimizer``,
``lr_multiplier``, ``train``), so Detectron2's own ``tools/lazyconfig_train_net.py`` runs them
too.

    python tools/lazyconfig_train_net.py \
        --config-file configs/Synthetic/retina_focal_R_18_FPN_synthetic.py
    python tools/lazyconfig_train_net.py --config-file CFG.py --resume
    python tools/lazyconfig_train_net.py --config-file CFG.py --eval-only train.init_checkpoint=W
    python tools/lazyconfig_train_net.py --config-file CFG.py train.max_iter=100 optimizer.lr=0.01

The same as ``retina-focal lazy-train``: the command lives in
:mod:`retina_focal.cli.lazy_train` and :mod:`retina_focal.engine.lazy` (options: ``--help``).
"""
import sys

from retina_focal.cli.lazy_train import run

if __name__ == "__main__":
    sys.exit(run())
