"""Training and evaluation glue: a Detectron2 ``DefaultTrainer`` with COCO evaluation, and the
config setup used by ``tools/train_net.py``."""
import logging
import os

from detectron2.config import get_cfg
from detectron2.engine import default_setup
from detectron2.modeling import build_model as d2_build_model

from retina_focal.config import add_retina_focal_config
from retina_focal.data.checks import check_num_classes
from retina_focal.data.datasets.coco import register_datasets_from_args
from retina_focal.engine.trainer import ReliableTrainer
from retina_focal.evaluation.coco_report import COCOReportEvaluator

__all__ = ["Trainer", "build_model", "setup_cfg"]


def build_model(cfg):
    """The one way every tool and the trainer build a model from a YAML config: Detectron2's
    ``build_model`` (meta-architecture from the registry, moved to ``MODEL.DEVICE``)."""
    return d2_build_model(cfg)


class Trainer(ReliableTrainer):
    """Detectron2's default trainer made resumable and multi-process on CPU
    (:class:`ReliableTrainer`), evaluating every test set with Detectron2's COCOEvaluator
    (:class:`COCOReportEvaluator`: it also writes per-category AP, PR curves and a JSON)."""

    @classmethod
    def build_model(cls, cfg):
        model = build_model(cfg)
        logging.getLogger(__name__).info(f"Model:\n{model}")
        return model

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOReportEvaluator(
            dataset_name, tasks=("bbox",), distributed=True, output_dir=output_folder
        )


def setup_cfg(args):
    """Build a frozen config from ``args.config_file`` and the trailing ``args.opts``, then run
    Detectron2's ``default_setup`` (output dir, logging, seed, config dump).

    ``args.dataset`` (``--dataset NAME=JSON:IMAGE_DIR``) datasets are registered first, and the
    model's class count is checked against every dataset the config names."""
    register_datasets_from_args(args)
    cfg = get_cfg()
    add_retina_focal_config(cfg)
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    check_num_classes(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg
