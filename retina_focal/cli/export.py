"""``retina-focal export`` (``tools/export_model.py``): export a trained RetinaFocal (or
Detectron2 RetinaNet) to TorchScript by tracing, through Detectron2's ``TracingAdapter``, and
check the exported model against the eager one.

    retina-focal export --config-file CFG --output exported/ MODEL.WEIGHTS model.pth

Writes ``<output>/model.ts``. The traced module takes one (C, H, W) float image (the config's
INPUT.FORMAT, 0-255) and returns flat tensors (boxes, classes, scores, image size).
"""
import argparse
import logging
import os

import torch
from detectron2.utils.logger import setup_logger

from retina_focal.engine.defaults import build_cfg, build_model_and_load
from retina_focal.export.torchscript import export_torchscript, sample_image

__all__ = ["build_parser", "main", "run"]


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--sample-image", help="image file to trace with (default: synthetic)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser


def main(args) -> int:
    """Export; 0 when the exported model's detections equal the eager model's, else 1."""
    logger = setup_logger(name="retina_focal.export.torchscript")
    cfg = build_cfg(args.config_file, args.opts)
    if not cfg.MODEL.WEIGHTS:
        logger.warning("MODEL.WEIGHTS is empty: exporting a randomly initialised model")
    model = build_model_and_load(cfg)

    if args.sample_image:
        from detectron2.data.detection_utils import read_image

        image = torch.as_tensor(read_image(args.sample_image, format=cfg.INPUT.FORMAT)
                                .transpose(2, 0, 1).copy()).float()
    else:
        image = sample_image(cfg)
    os.makedirs(args.output, exist_ok=True)
    check = export_torchscript(model, image, os.path.join(args.output, "model.ts"))
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
