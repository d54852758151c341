#!/usr/bin/env python
"""Train and/or evaluate RetinaFocal (or any Detectron2 model) with Detectron2's trainer.

    python tools/train_net.py --config-file configs/Synthetic/retina_focal_R_18_FPN_synthetic.yaml
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS model_final.pth
    python tools/train_net.py --config-file CFG --num-gpus 8 SOLVER.IMS_PER_BATCH 16

Trailing ``KEY VALUE`` pairs override the config. Evaluation uses Detectron2's COCOEvaluator
(plus per-category AP, PR curves and coco_report.json in OUTPUT_DIR/inference/<dataset>/).
``--dataset NAME=JSON:IMAGE_DIR`` (repeatable) registers a COCO-format dataset for the config:

    python tools/train_net.py --config-file CFG --dataset mine_train=train.json:train/ \
        DATASETS.TRAIN '("mine_train",)' MODEL.RETINANET.NUM_CLASSES 3
"""
import logging

import detectron2.utils.comm as comm
from detectron2.engine import default_argument_parser

import retina_focal  # noqa: F401  (registers RetinaFocal, its components and datasets)
from retina_focal.data.datasets.coco import add_dataset_argument
from retina_focal.engine.checkpoint import RetinaFocalCheckpointer
from retina_focal.engine.defaults import Trainer, setup_cfg
from retina_focal.engine.launch import launch  # Detectron2's on GPUs; GLOO processes on CPU

logger = logging.getLogger("retina_focal")


def main(args):
    cfg = setup_cfg(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        RetinaFocalCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            logger.info(f"Evaluation results: {dict(results)}")
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = add_dataset_argument(default_argument_parser()).parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
