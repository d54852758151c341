"""Glue between a config / dataset and the pure statistics of :mod:`.assignment` (and the
drawing of :mod:`.visualize`).

This is the one place in ``retina_focal.analysis`` that reads a config: it builds the anchor
generator, the backbone's strides and padding, and the assigner exactly as ``RetinaFocal``
does, so the analysis sees the anchors and labels the model would train with.
"""
import json
import os
import sys
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data.transforms import ResizeTransform
from detectron2.modeling import build_backbone
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.structures import Boxes, Instances
from tqdm import tqdm

from retina_focal.analysis.assignment import (
    analyze_image,
    feature_grid_sizes,
    gt_as_model_sees_it,
    plot_summaries,
    resized_image_size,
    summarize,
)
from retina_focal.analysis.visualize import (
    draw_assignment,
    gt_index_labels,
    legend_lines,
    save_png,
)
from retina_focal.data.datasets.coco import (
    check_registered,
    load_registered,
    parse_dataset_spec,
    register_coco_dataset,
)
from retina_focal.data.mapper import read_image_any
from retina_focal.engine.defaults import build_cfg
from retina_focal.modeling.anchor_assignment import build_assigner
from retina_focal.modeling.meta_arch import head_feature_shapes
from retina_focal.utils.errors import DataError

__all__ = ["AssignmentDrawing", "AssignmentSetting", "analyze_settings", "choose_dataset",
           "dataset_dicts", "describe", "draw_dataset_image", "image_size_of", "load_cfg",
           "pick_image", "register_dataset_arg", "run_setting", "write_assignment_report"]


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
        self.num_classes = cfg.MODEL.RETINANET.NUM_CLASSES
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


def describe(config_file: str, opts: Sequence[str]) -> str:
    """A setting's name in tables and progress bars: the config file's stem and its
    overrides."""
    name = os.path.splitext(os.path.basename(config_file))[0]
    return " ".join([name] + list(opts))


def run_setting(setting: AssignmentSetting, dicts: Sequence[Dict], desc: str) -> List[Dict]:
    """:meth:`AssignmentSetting.analyze`'s record of every dataset dict of ``dicts``, with its
    ``image_id`` and ``file_name`` (the base name), and a progress bar named ``desc`` on
    stderr."""
    records = []
    for d in tqdm(dicts, desc=desc, unit="img", dynamic_ncols=True, file=sys.stderr):
        rec = setting.analyze(d)
        rec.update(image_id=d.get("image_id"), file_name=os.path.basename(d["file_name"]))
        records.append(rec)
    return records


def choose_dataset(dataset_name: Optional[str], registered: Sequence[str], cfg) -> str:
    """The dataset to analyse or draw from: ``dataset_name`` (``--dataset-name``), else the
    only dataset of ``registered`` (``--dataset NAME=JSON:IMAGE_DIR``), else ``cfg``'s first
    ``DATASETS.TEST``; an error (:class:`~retina_focal.utils.errors.DataError`) if there is
    none, or it is not registered."""
    if dataset_name:
        dataset = dataset_name
    elif len(registered) == 1:
        dataset = registered[0]
    elif len(cfg.DATASETS.TEST):
        dataset = cfg.DATASETS.TEST[0]
    else:
        raise DataError("no dataset: give --dataset-name, --dataset "
                        "NAME=JSON:IMAGE_DIR, or DATASETS.TEST")
    check_registered(dataset, "--dataset-name" if dataset_name else "the dataset")
    return dataset


def pick_image(dicts: Sequence[Dict], image: str) -> Dict:
    """The dataset dict ``image`` names in ``dicts``: an index (digits), else a file name (its
    base name is enough; the first match); a :class:`DataError` naming ``--image`` when there
    is none."""
    if image.isdigit():
        i = int(image)
        if not 0 <= i < len(dicts):
            raise DataError(f"--image {image}: the dataset has {len(dicts)} images "
                            f"(indices 0..{len(dicts) - 1})")
        return dicts[i]
    hits = [d for d in dicts if d["file_name"] == image
            or os.path.basename(d["file_name"]) == os.path.basename(image)]
    if not hits:
        raise DataError(f"--image {image!r}: no image of that file name in the dataset")
    return hits[0]


class AssignmentDrawing(NamedTuple):
    """What :func:`draw_dataset_image` drew."""

    file_name: str  # the dataset image's file
    size: Tuple[int, int]  # (h, w) as the model sees it at test time
    assigner: str  # the assigner, as it prints itself
    counts: str  # "positive P, ignored I, negative N" anchors
    legend: List[str]  # per ground truth: its caption and positive anchors (legend_lines)


def draw_dataset_image(cfg, dataset: str, image: str, output: str,
                       scale: Optional[float] = None) -> AssignmentDrawing:
    """Draw, on one image of the registered ``dataset`` as the model sees it at test time,
    the ground truth and the anchors the config's assigner makes positive (in the colour of
    their ground truth) or ignored (grey); write it to the PNG file ``output``
    (:func:`~retina_focal.analysis.visualize.save_png`).

    Args:
        cfg: the config (its anchors, assigner and test size, see :class:`AssignmentSetting`).
        dataset: the dataset's name (e.g. :func:`choose_dataset`).
        image: an index into the dataset or an image file name (:func:`pick_image`).
        output: the PNG file to write (check it first with
            :func:`~retina_focal.analysis.visualize.check_output_png`).
        scale: magnification of the drawing (default: longer side >= 640 px).
    """
    d = pick_image(load_registered(dataset, "the dataset to draw from"), image)
    class_names = MetadataCatalog.get(dataset).get("thing_classes")
    setting = AssignmentSetting(cfg)
    size, boxes, classes, _ = setting.prepare(d)

    pixels = read_image_any(d["file_name"], format="RGB")  # 16-bit scaled; unreadable: named
    pixels = ResizeTransform(pixels.shape[0], pixels.shape[1], size[0], size[1]).apply_image(
        pixels)
    anchors = setting.anchors(size)
    m = len(boxes)
    gt = Instances(size, gt_boxes=Boxes(boxes), gt_classes=classes)
    with torch.no_grad():
        labels = gt_index_labels(*setting.assigner(anchors, gt), m)
    text = [f"{g}: {class_names[c] if class_names else c}" for g, c in enumerate(classes.tolist())]
    scale = scale or max(1.0, 640.0 / max(size))
    counts = (f"positive {int(((labels >= 0) & (labels < m)).sum())}, "
              f"ignored {int((labels == -1).sum())}, negative {int((labels == m).sum())}")
    drawing = draw_assignment(np.ascontiguousarray(pixels), boxes, text,
                              Boxes.cat(anchors).tensor, labels, scale,
                              title=f"{type(setting.assigner).__name__}: {counts}")
    save_png(drawing, output)
    return AssignmentDrawing(d["file_name"], tuple(size), str(setting.assigner), counts,
                             legend_lines(text, labels, m))


def dataset_dicts(dataset: str, max_images: int = 0) -> Tuple[List[Dict], List[str]]:
    """The registered ``dataset``'s dicts (the first ``max_images``, 0: all) and class names
    (its ``thing_classes``, else ``"0"``, ``"1"``, ... up to its largest category id)."""
    dicts = load_registered(dataset, "the dataset to analyse")
    if max_images > 0:
        dicts = dicts[: max_images]
    class_names = MetadataCatalog.get(dataset).get("thing_classes")
    if class_names is None:
        num = 1 + max((a["category_id"] for d in dicts for a in d.get("annotations", [])),
                      default=-1)
        class_names = [str(i) for i in range(num)]
    return dicts, class_names


def analyze_settings(specs: Sequence[Tuple[str, Sequence[str]]], cfgs: Sequence,
                     dicts: Sequence[Dict], class_names: Sequence[str],
                     iou_bins: int = 20) -> Tuple[List[Dict], Dict[str, Dict]]:
    """Analyse every setting on ``dicts``: ``specs`` are the settings' ``(config file,
    overrides)``, ``cfgs`` their configs (:func:`load_cfg`), named A, B, ... in order.

    Returns:
        ``(settings, summaries)``: per setting, ``{"name", "config_file", "opts",
        "description", "assigner", "level_names", "summary", "images"}`` (the per-image
        records of :func:`run_setting`); ``{name: summary}``
        (:func:`~retina_focal.analysis.assignment.summarize`, ``iou_bins`` bins of best IoU).
    """
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    settings_out, summaries = [], {}
    for i, ((config_file, opts), cfg) in enumerate(zip(specs, cfgs)):
        label = letters[i % 26] + (str(i // 26) if i >= 26 else "")
        setting = AssignmentSetting(cfg)
        records = run_setting(setting, dicts, f"{label}: {describe(config_file, opts)}")
        summary = summarize(records, class_names, setting.level_names, iou_bins)
        summaries[label] = summary
        settings_out.append({
            "name": label, "config_file": config_file, "opts": list(opts),
            "description": describe(config_file, opts), "assigner": repr(setting.assigner),
            "level_names": setting.level_names, "summary": summary, "images": records,
        })
    return settings_out, summaries


def write_assignment_report(output: str, dataset: str, class_names: Sequence[str],
                            settings: List[Dict],
                            summaries: Dict[str, Dict]) -> Tuple[str, List[str]]:
    """Write :func:`analyze_settings`'s result into the existing folder ``output``:
    ``assignment.json`` (the dataset, its class names, every setting) and the PNG plots
    (:func:`~retina_focal.analysis.assignment.plot_summaries`); return their paths."""
    json_path = os.path.join(output, "assignment.json")
    with open(json_path, "w") as f:
        json.dump({"dataset": dataset, "class_names": list(class_names),
                   "settings": settings}, f, indent=1)
    return json_path, plot_summaries(summaries, output)
