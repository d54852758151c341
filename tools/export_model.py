#!/usr/bin/env python
"""Export a trained RetinaFocal (or Detectron2 RetinaNet) to TorchScript by tracing, through
Detectron2's ``TracingAdapter``, and check the exported model against the eager one.

    python tools/export_model.py --config-file CFG --output exported/ MODEL.WEIGHTS model.pth

Writes ``<output>/model.ts``. The traced module takes one (C, H, W) float image (the config's
INPUT.FORMAT, 0-255) and returns flat tensors (boxes, classes, scores, image size).
"""
import argparse
import logging
import os
import sys

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

import retina_focal  # noqa: F401
from retina_focal import add_retina_focal_config
from retina_focal.export.torchscript import run_traced, trace_model


def sample_image(cfg) -> torch.Tensor:
    """A deterministic sample of the test size (the trace is shape-generic)."""
    size = cfg.INPUT.MIN_SIZE_TEST
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (3, size, size), generator=g).float()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--sample-image", help="image file to trace with (default: synthetic)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    logger = setup_logger(name="retina_focal.export.torchscript")

    cfg = get_cfg()
    add_retina_focal_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    else:
        logger.warning("MODEL.WEIGHTS is empty: exporting a randomly initialised model")

    if args.sample_image:
        from detectron2.data.detection_utils import read_image

        image = torch.as_tensor(read_image(args.sample_image, format=cfg.INPUT.FORMAT)
                                .transpose(2, 0, 1).copy()).float()
    else:
        image = sample_image(cfg)
    traced, adapter = trace_model(model, image)
    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, "model.ts")
    traced.save(path)

    with torch.no_grad():
        eager = model([{"image": image}])[0]["instances"]
    exported = run_traced(torch.jit.load(path), adapter, image)[0]["instances"]
    same = len(eager) == len(exported) and torch.allclose(
        eager.pred_boxes.tensor, exported.pred_boxes.tensor, atol=1e-4
    ) and torch.allclose(eager.scores, exported.scores, atol=1e-4)
    logger.info(f"Wrote {path}; {len(exported)} detections on the sample image; "
                f"equal to eager model: {same}")
    if not same:
        logger.error("The exported model's detections differ from the eager model's")
        return 1
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
