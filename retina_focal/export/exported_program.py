"""``torch.export`` of a RetinaNet-style model, cut at its head
(:mod:`retina_focal.export.graph`), saved with ``torch.export.save`` as a ``.pt2`` file and run
with ``torch.export.load(path).module()`` (:mod:`retina_focal.export.runtime`).

The program's input is what eager's ``model.preprocess_image`` returns: one (1, 3, H, W)
normalised image padded to the backbone's size divisibility d (32 for P3-P7). H and W are
dynamic, as multiples of d: torch.export cannot keep them dynamic through the padding
arithmetic, so the runtime pads with the eager function. One more bound: every FPN level must
be at least 2 pixels wide, so H, W > the largest level stride (128 for P7); on a 1-pixel map
torch.export adds a guard it cannot express otherwise (a contiguity check of P7's
convolution). The runtime says so in an error naming the size; the ONNX model has no such
bound.

The model is exported in NCHW (``torch.contiguous_format``): channels-last weights add
stride guards that specialise the sizes. Extra files in the archive: ``class_map.json`` and
``retina_focal.json`` (the export info, as in the ONNX metadata).
"""
import copy
import json
from typing import Dict, Optional

import torch
from detectron2.modeling.meta_arch.dense_detector import DenseDetector

from retina_focal.export.graph import DenseHeadGraph

__all__ = ["CLASS_MAP_FILE", "INFO_FILE", "MAX_SIDE", "export_program", "min_side",
           "test_size_too_small"]

CLASS_MAP_FILE = "class_map.json"
INFO_FILE = "retina_focal.json"
MAX_SIDE = 8192  # the largest padded side the program accepts


def min_side(model: DenseDetector) -> int:
    """The smallest padded side the program takes: the largest level stride + the size
    divisibility (every level at least 2 pixels)."""
    strides = [model.backbone.output_shape()[f].stride for f in model.head_in_features]
    return max(strides) + model.backbone.size_divisibility


def test_size_too_small(cfg, low: int, divisibility: int) -> Optional[str]:
    """Why every image the config's test resize gives would be too small for a program whose
    smallest padded side is ``low``, or None: ``INPUT.MIN_SIZE_TEST`` (capped by
    ``MAX_SIZE_TEST``), padded to ``divisibility``, under ``low``. (``MIN_SIZE_TEST`` 0, no
    resize, is checked image by image.)"""
    short = min(int(cfg.INPUT.MIN_SIZE_TEST), int(cfg.INPUT.MAX_SIZE_TEST))
    if short <= 0:
        return None
    padded = -(-short // divisibility) * divisibility if divisibility > 1 else short
    if padded >= low:
        return None
    return (f"the exported program takes padded images of at least {low} pixels a side (every "
            f"FPN level 2 pixels or more), and INPUT.MIN_SIZE_TEST {cfg.INPUT.MIN_SIZE_TEST} "
            f"(MAX_SIZE_TEST {cfg.INPUT.MAX_SIZE_TEST}) gives {padded}: use --format onnx, "
            f"which takes any size, or INPUT.MIN_SIZE_TEST {low} or more")


def export_program(model: DenseDetector, image: torch.Tensor, path: str, info: Dict,
                   class_map: Optional[list]) -> str:
    """Export ``model`` (eval mode) cut at its head with ``torch.export`` to ``path`` (.pt2).

    Args:
        image: a (3, H, W) sample image (``INPUT.FORMAT``, 0-255); it is preprocessed and, if
            smaller than :func:`min_side`, padded further for the trace only.
        info, class_map: stored in the archive as ``retina_focal.json`` and ``class_map.json``.
    """
    from torch.export import Dim

    model = copy.deepcopy(model).to(memory_format=torch.contiguous_format).eval()
    div = model.backbone.size_divisibility
    low = min_side(model)
    with torch.no_grad():
        sample = model.preprocess_image([{"image": image}]).tensor
    pad_h, pad_w = max(0, low - sample.shape[2]), max(0, low - sample.shape[3])
    sample = torch.nn.functional.pad(sample, (0, pad_w, 0, pad_h))
    dims = {"image": {2: div * Dim("height_blocks", min=low // div, max=MAX_SIDE // div),
                      3: div * Dim("width_blocks", min=low // div, max=MAX_SIDE // div)}}
    graph = DenseHeadGraph(model, preprocess=False).eval()
    with torch.no_grad():
        program = torch.export.export(graph, (sample,), dynamic_shapes=dims)
    extra = {CLASS_MAP_FILE: json.dumps(class_map),
             INFO_FILE: json.dumps(dict(info, min_side=low, size_divisibility=div,
                                        exporter="torch.export.export (non-strict)"))}
    torch.export.save(program, path, extra_files=extra)
    return path
