"""``retina-focal export`` (``tools/export_model.py``): export a trained RetinaFocal (or
Detectron2 RetinaNet) to TorchScript by tracing, through Detectron2's ``TracingAdapter``, and
check the exported model against the eager one.

    retina-focal export --config-file CFG --output exported/ MODEL.WEIGHTS model.pth

Writes ``<output>/model.ts``. The traced module takes one (C, H, W) float image (the config's
INPUT.FORMAT, 0-255) and returns flat tensors (boxes, classes, scores, image size).

The checkpoint must fit the model exactly (a checkpoint of another class count is an error
naming MODEL.RETINANET.NUM_CLASSES). Its class map (class k of the exported model is
``class_map[k]``: ``{"id": category id in the training JSON, "name"}``) is written to
``<output>/class_map.json`` and inside ``model.ts`` as the extra file ``class_map.json``
(``null`` for a checkpoint that records none).
"""
import argparse
import json
import logging
import os

import torch
from detectron2.utils.logger import setup_logger

from retina_focal.config.loading import add_allow_unsafe_config_argument
from retina_focal.engine.checkpoint import CheckpointReadError
from retina_focal.engine.defaults import build_cfg, load_model_for_inference
from retina_focal.export.torchscript import export_torchscript, sample_image

__all__ = ["CLASS_MAP_FILE", "build_parser", "main", "run"]

CLASS_MAP_FILE = "class_map.json"


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--sample-image", help="image file to trace with (default: synthetic)")
    add_allow_unsafe_config_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser


def main(args) -> int:
    """Export; 0 when the exported model's detections equal the eager model's, else 1."""
    logger = setup_logger(name="retina_focal.export.torchscript")
    cfg = build_cfg(args.config_file, args.opts, allow_unsafe=args.allow_unsafe_config)
    if not cfg.MODEL.WEIGHTS:
        logger.warning("MODEL.WEIGHTS is empty: exporting a randomly initialised model")
    try:
        loaded = load_model_for_inference(cfg)  # every tensor from the checkpoint
    except (ValueError, FileNotFoundError, CheckpointReadError) as e:
        raise SystemExit(f"error: {e}")
    model = loaded.model
    if cfg.MODEL.WEIGHTS and loaded.class_map is None:
        logger.warning(f"The checkpoint {cfg.MODEL.WEIGHTS!r} records no class map (a Detectron2 "
                       f"or older checkpoint): {CLASS_MAP_FILE} says null; the model's "
                       f"{cfg.MODEL.RETINANET.NUM_CLASSES} classes are those it was trained on")
    class_map_text = json.dumps(loaded.class_map)

    if args.sample_image:
        from detectron2.data.detection_utils import read_image

        image = torch.as_tensor(read_image(args.sample_image, format=cfg.INPUT.FORMAT)
                                .transpose(2, 0, 1).copy()).float()
    else:
        image = sample_image(cfg)
    os.makedirs(args.output, exist_ok=True)
    check = export_torchscript(model, image, os.path.join(args.output, "model.ts"),
                               extra_files={CLASS_MAP_FILE: class_map_text})
    with open(os.path.join(args.output, CLASS_MAP_FILE), "w") as f:
        f.write(class_map_text + "\n")
    logger.info(f"Wrote {check['path']}; {check['num_detections']} detections on the sample "
                f"image; equal to eager model: {check['same']}")
    if not check["same"]:
        logger.error("The exported model's detections differ from the eager model's")
        return 1
    return 0


def run(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO)
    return main(args)
