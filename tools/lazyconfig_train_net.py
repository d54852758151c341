#!/usr/bin/env python
"""Train and/or evaluate from a LazyConfig (Python) config file, for users without Detectron2's
source tree. It reads the same config layout as Detectron2's own
``tools/lazyconfig_train_net.py`` (which works with our configs too):

* ``model``: instantiates to the model;
* ``dataloader.train`` / ``dataloader.test``: instantiate to data loaders;
* ``dataloader.evaluator``: instantiates to the evaluator of the test loader;
* ``optimizer``: instantiates to an optimizer (its ``params.model`` is set here);
* ``lr_multiplier``: instantiates to an fvcore ``ParamScheduler`` over training progress;
* ``train``: ``output_dir``, ``init_checkpoint``, ``max_iter``, ``amp.enabled``, ``ddp``,
  ``checkpointer`` (``period``, ``max_to_keep``), ``eval_period``, ``log_period``, ``device``.

    python tools/lazyconfig_train_net.py \
        --config-file configs/Synthetic/retina_focal_R_18_FPN_synthetic.py
    python tools/lazyconfig_train_net.py --config-file CFG.py --eval-only train.init_checkpoint=W
    python tools/lazyconfig_train_net.py --config-file CFG.py train.max_iter=100 optimizer.lr=0.01

Overrides are ``key=value`` (Hydra syntax). ``--dataset NAME=JSON:IMAGE_DIR`` registers a
COCO-format dataset, e.g. for ``dataloader.train.dataset.names=NAME``.
"""
import logging

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    default_argument_parser,
    default_setup,
    default_writers,
    hooks,
)
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm

from retina_focal.data.checks import check_lazy_num_classes
from retina_focal.data.datasets.coco import add_dataset_argument, register_datasets_from_args
from retina_focal.engine.launch import launch  # Detectron2's on GPUs; GLOO processes on CPU
from retina_focal.engine.trainer import wrap_distributed

logger = logging.getLogger("retina_focal")


def run_evaluation(cfg, model):
    """Evaluate ``model`` on ``dataloader.test`` with ``dataloader.evaluator`` (if the config
    has one); return the results dict (empty on processes other than the main one)."""
    if "evaluator" not in cfg.dataloader:
        logger.warning("The config has no dataloader.evaluator: nothing to evaluate")
        return {}
    loader = instantiate(cfg.dataloader.test)
    evaluator = instantiate(cfg.dataloader.evaluator)
    results = inference_on_dataset(model, loader, evaluator)
    if comm.is_main_process():
        print_csv_format(results)
    return results


def build_hooks(cfg, model, trainer, checkpointer):
    main_process = comm.is_main_process()
    return [
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
        if main_process else None,
        hooks.EvalHook(cfg.train.eval_period, lambda: run_evaluation(cfg, model)),
        # metric printer with ETA, metrics.json and TensorBoard events
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter),
                             period=cfg.train.log_period)
        if main_process else None,
    ]


def ddp(model, options):
    """Detectron2's DistributedDataParallel wrapper on GPUs; on CPU processes (GLOO), one
    without ``device_ids`` (Detectron2's always names a GPU)."""
    if torch.cuda.is_available():
        return create_ddp_model(model, **options)
    return wrap_distributed(model)


def train(args, cfg):
    model = instantiate(cfg.model)
    logger.info(f"Model:\n{model}")
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    data = instantiate(cfg.dataloader.train)
    model = ddp(model, cfg.train.ddp)
    trainer_cls = AMPTrainer if cfg.train.amp.enabled else SimpleTrainer
    trainer = trainer_cls(model, data, optimizer)
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    trainer.register_hooks(build_hooks(cfg, model, trainer, checkpointer))
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    # a checkpoint stores the last finished iteration: continue after it
    start = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    trainer.train(start, cfg.train.max_iter)
    return model


def main(args):
    register_datasets_from_args(args)
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    check_lazy_num_classes(cfg)
    default_setup(cfg, args)
    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        model = ddp(model, {})
        DetectionCheckpointer(model).load(cfg.train.init_checkpoint)
        return run_evaluation(cfg, model)
    train(args, cfg)  # EvalHook also evaluates the final model


if __name__ == "__main__":
    args = add_dataset_argument(default_argument_parser(__doc__)).parse_args()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
