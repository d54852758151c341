"""The shared path of every command (``retina-focal`` and ``tools/*.py``) from a command line
to a model: one argument parser (:func:`default_argument_parser`: Detectron2's plus
``--dataset``), one way to build a YAML config (:func:`build_cfg`, and :func:`setup_cfg` for
training and evaluation runs), one way to build a model (:func:`build_model`) and one way to
load its weights (:func:`build_model_and_load`), and the trainer (:class:`Trainer`)."""
import logging
import os

from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser as d2_default_argument_parser
from detectron2.engine import default_setup
from detectron2.modeling import build_model as d2_build_model

from retina_focal.config import add_retina_focal_config
from retina_focal.data.checks import check_num_classes
from retina_focal.data.datasets.coco import add_dataset_argument, register_datasets_from_args
from retina_focal.engine.checkpoint import RetinaFocalCheckpointer
from retina_focal.engine.device import apply_device_speedups_from_config
from retina_focal.engine.trainer import ReliableTrainer
from retina_focal.evaluation.coco_report import COCOReportEvaluator

__all__ = [
    "Trainer",
    "build_cfg",
    "build_model",
    "build_model_and_load",
    "default_argument_parser",
    "setup_cfg",
]


def build_model(cfg):
    """The one way every tool and the trainer build a model from a YAML config: Detectron2's
    ``build_model`` (meta-architecture from the registry, moved to ``MODEL.DEVICE``), then,
    when the config has retina_focal's keys, the device speed-ups they ask for
    (``MODEL.RETINA_FOCAL.MEMORY_FORMAT`` / ``FOLD_FROZEN_BN``, see
    :mod:`retina_focal.engine.device`), before any optimizer or DistributedDataParallel sees
    the parameters."""
    model = d2_build_model(cfg)
    if "RETINA_FOCAL" in cfg.MODEL:
        apply_device_speedups_from_config(model, cfg)
    return model


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


def default_argument_parser(epilog=None):
    """Detectron2's ``default_argument_parser`` (``--config-file``, ``--resume``,
    ``--eval-only``, ``--num-gpus``, ..., trailing ``KEY VALUE`` overrides) plus the repeatable
    ``--dataset NAME=JSON:IMAGE_DIR`` (:func:`register_datasets_from_args` registers them)."""
    return add_dataset_argument(d2_default_argument_parser(epilog))


def build_cfg(config_file=None, opts=(), *, freeze=True):
    """The one way a YAML config is built: Detectron2's defaults, retina_focal's keys
    (:func:`add_retina_focal_config`), ``config_file`` (if given), then the ``KEY VALUE``
    overrides ``opts``.

    A missing file is a ``FileNotFoundError`` and an odd ``opts`` list a ``ValueError`` (yacs
    would say less); an unknown key stays Detectron2's error (``KeyError`` in a file,
    yacs' ``AssertionError`` in ``opts``). Returned frozen unless
    ``freeze=False`` (for a caller that sets more keys, e.g. from its own options)."""
    if config_file and not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file {config_file!r} does not exist")
    opts = list(opts or [])
    if len(opts) % 2:
        raise ValueError(f"config overrides must be KEY VALUE pairs, got an odd list: {opts}")
    cfg = get_cfg()
    add_retina_focal_config(cfg)
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    if freeze:
        cfg.freeze()
    return cfg


def setup_cfg(args):
    """Build a frozen config from ``args.config_file`` and the trailing ``args.opts``
    (:func:`build_cfg`), then run Detectron2's ``default_setup`` (output dir, logging, seed,
    config dump).

    ``args.dataset`` (``--dataset NAME=JSON:IMAGE_DIR``) datasets are registered first, and the
    model's class count is checked against every dataset the config names."""
    register_datasets_from_args(args)
    cfg = build_cfg(args.config_file, args.opts, freeze=False)
    check_num_classes(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def build_model_and_load(cfg, weights=None, *, resume=False):
    """:func:`build_model` with its weights loaded, in eval mode: what evaluation, the demo,
    export and the analysis tools run.

    Args:
        weights: the checkpoint; ``None`` means ``cfg.MODEL.WEIGHTS``; empty: none (the
            model keeps its initialisation).
        resume: load the last checkpoint of ``cfg.OUTPUT_DIR`` instead, if there is one
            (``--resume --eval-only``), as training resumes.

    Weights are read by :class:`RetinaFocalCheckpointer`, so a missing, truncated or
    mismatched file is a clear error naming it.
    """
    model = build_model(cfg)
    weights = cfg.MODEL.WEIGHTS if weights is None else weights
    RetinaFocalCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(weights, resume=resume)
    return model.eval()
