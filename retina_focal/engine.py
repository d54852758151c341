"""Training and evaluation glue: a Detectron2 ``DefaultTrainer`` with COCO evaluation, and the
config setup used by ``tools/train_net.py``."""
import os

from detectron2.config import get_cfg
from detectron2.engine import default_setup
from detectron2.evaluation import COCOEvaluator

from .compat import coco_evaluator_kwargs
from .config import add_retina_focal_config
from .data import ensure_datasets
from .trainer import ReliableTrainer

__all__ = ["Trainer", "setup_cfg"]


class Trainer(ReliableTrainer):
    """Detectron2's default trainer made resumable and multi-process on CPU
    (:class:`ReliableTrainer`), evaluating every test set with :class:`COCOEvaluator`."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        ensure_datasets([dataset_name])  # COCOEvaluator reads the JSON when it is built
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOEvaluator(
            dataset_name,
            tasks=("bbox",),
            distributed=True,
            output_dir=output_folder,
            **coco_evaluator_kwargs(),
        )


def setup_cfg(args):
    """Build a frozen config from ``args.config_file`` and the trailing ``args.opts``, then run
    Detectron2's ``default_setup`` (output dir, logging, seed, config dump)."""
    cfg = get_cfg()
    add_retina_focal_config(cfg)
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg
