"""Glue between a config / dataset and the pure statistics of :mod:`.assignment`.

This is the one place in ``retina_focal.analysis`` that reads a config: it builds the anchor
generator, the backbone's strides and padding, and the assigner exactly as ``RetinaFocal``
does, so the analysis sees the anchors and labels the model would train with.
"""
from typing import Dict, List, Tuple

import torch
from detectron2.modeling import build_backbone
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.structures import Boxes

from retina_focal.analysis.assignment import (
    analyze_image,
    feature_grid_sizes,
    gt_as_model_sees_it,
    resized_image_size,
)
from retina_focal.data.datasets.coco import parse_dataset_spec, register_coco_dataset
from retina_focal.engine.defaults import build_cfg
from retina_focal.modeling.anchor_assignment import build_assigner
from retina_focal.modeling.meta_arch import head_feature_shapes

__all__ = ["AssignmentSetting", "load_cfg", "register_dataset_arg", "image_size_of"]


def load_cfg(config_file: str, opts: List[str], *, allow_unsafe: bool = False):
    """A frozen config: the shared YAML config path
    (:func:`retina_focal.engine.defaults.build_cfg`: Detectron2's defaults + retina_focal's
    keys + the file + ``opts``), whose file must exist. The file is read with a safe YAML
    loader: a Python tag is an error unless ``allow_unsafe`` (``--allow-unsafe-config``)."""
    if not config_file:
        raise FileNotFoundError("no config file given")
    return build_cfg(config_file, opts, allow_unsafe=allow_unsafe)


def register_dataset_arg(spec: str) -> str:
    """Register ``NAME=JSON:IMAGE_DIR`` as a COCO-format dataset (once); return NAME.
    The same parsing and checks as every tool's ``--dataset``
    (:mod:`retina_focal.data.datasets.coco`)."""
    name, json_file, image_dir = parse_dataset_spec(spec)
    register_coco_dataset(name, json_file, image_dir)
    return name


def image_size_of(d: Dict) -> Tuple[int, int]:
    """(h, w) of a dataset dict, from its fields or, if absent, the image header."""
    if "height" in d and "width" in d:
        return int(d["height"]), int(d["width"])
    from PIL import Image

    with Image.open(d["file_name"]) as im:
        return im.height, im.width


class AssignmentSetting:
    """The model's anchor generator and assigner for one config, applied image by image."""

    def __init__(self, cfg) -> None:
        rcfg = cfg.MODEL.RETINANET
        backbone = build_backbone(cfg)
        feature_shapes = head_feature_shapes(backbone, rcfg.IN_FEATURES)
        self.level_names = list(rcfg.IN_FEATURES)
        self.strides = [s.stride for s in feature_shapes]
        self.size_divisibility = backbone.size_divisibility
        self.anchor_generator = build_anchor_generator(cfg, feature_shapes)
        self.assigner = build_assigner(cfg)
        self.min_size, self.max_size = cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST
        self._anchor_cache: Dict[Tuple[int, ...], List[Boxes]] = {}
        del backbone

    def anchors(self, image_size: Tuple[int, int]) -> List[Boxes]:
        """The L Boxes of anchors for one (resized) image, as the model generates them."""
        key = tuple(image_size)
        if key not in self._anchor_cache:
            grids = feature_grid_sizes(image_size, self.strides, self.size_divisibility)
            with torch.no_grad():
                feats = [torch.empty(1, 0, h, w) for h, w in grids]
                self._anchor_cache[key] = self.anchor_generator(feats)
            if len(self._anchor_cache) > 64:  # many sizes (COCO): keep memory bounded
                self._anchor_cache.pop(next(iter(self._anchor_cache)))
        return self._anchor_cache[key]

    def prepare(self, d: Dict):
        """(resized (h, w), gt boxes (M, 4), classes (M,), original areas (M,)) of a dict."""
        orig = image_size_of(d)
        size = resized_image_size(*orig, self.min_size, self.max_size)
        boxes, classes, areas = gt_as_model_sees_it(d.get("annotations", []), orig, size)
        return size, boxes, classes, areas

    def analyze(self, d: Dict) -> Dict:
        """:func:`~retina_focal.analysis.assignment.analyze_image`'s record of one dataset
        dict (its anchors labelled by the assigner at test size), with ``image_size``: the
        resized (h, w)."""
        size, boxes, classes, areas = self.prepare(d)
        record = analyze_image(self.anchors(size), boxes, classes, areas, size, self.assigner)
        record["image_size"] = list(size)
        return record
