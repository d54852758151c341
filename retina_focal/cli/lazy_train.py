"""``retina-focal lazy-train`` (``tools/lazyconfig_train_net.py``): train and/or evaluate from a
LazyConfig (Python) config file, with the YAML trainer's guarantees (all of it lives in
:mod:`retina_focal.engine.lazy`).

    retina-focal lazy-train --config-file configs/Synthetic/retina_focal_R_18_FPN_synthetic.py
    retina-focal lazy-train --config-file CFG.py --resume
    retina-focal lazy-train --config-file CFG.py --eval-only train.init_checkpoint=W
    retina-focal lazy-train --config-file CFG.py train.max_iter=100 optimizer.lr=0.01

Overrides are ``key=value`` (Hydra syntax). ``--dataset NAME=JSON:IMAGE_DIR`` registers a
COCO-format dataset, e.g. for ``dataloader.train.dataset.names=NAME``.
"""
from retina_focal.cli._errors import reports_user_errors
from retina_focal.engine.defaults import default_argument_parser
from retina_focal.engine.launch import launch_from_args
from retina_focal.engine.lazy import main

__all__ = ["build_parser", "main", "run"]


def build_parser():
    return default_argument_parser(__doc__)


@reports_user_errors
def run(argv=None) -> int:
    launch_from_args(main, build_parser().parse_args(argv))
    return 0
