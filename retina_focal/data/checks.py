"""Checks of a dataset against the model before anything trains or evaluates.

* :func:`check_num_classes` / :func:`check_lazy_num_classes`: the model's class count against
  every dataset a YAML / LazyConfig names (their ``thing_classes``);
* :func:`sanitize_dataset_dicts` (training): boxes are clipped to their image, boxes with no
  area left (zero-area, negative size, entirely outside the image) are dropped;
  the counts are logged once per dataset. A malformed box (not 4 finite numbers: 3 values,
  strings, ``None``, NaN) is an error naming the dataset, its JSON file, the image, the
  annotation and the value (:func:`bbox_problem`); so is a category id outside
  ``[0, NUM_CLASSES)``, with the allowed range. Images without annotations stay
  (``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` decides, as in Detectron2).
"""
import logging
import math
import os
from collections import Counter
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import BoxMode

from retina_focal.config.validation import config_value
from retina_focal.data.class_map import class_map_of_datasets, match_class_maps
from retina_focal.utils.errors import DataError

__all__ = [
    "bbox_problem",
    "check_dataset_classes",
    "check_lazy_num_classes",
    "check_num_classes",
    "model_num_classes",
    "lazy_dataset_names",
    "describe_annotation",
    "sanitize_dataset_dicts",
]

logger = logging.getLogger(__name__)


# The class-count key of each meta-architecture checked (ProposalNetwork has no classes).
_NUM_CLASSES_KEY = {"RetinaFocal": "MODEL.RETINANET.NUM_CLASSES",
                    "RetinaNet": "MODEL.RETINANET.NUM_CLASSES",
                    "GeneralizedRCNN": "MODEL.ROI_HEADS.NUM_CLASSES"}


def check_num_classes(cfg, *, evaluation_only: bool = False) -> None:
    """Raise ValueError if the model's class count differs from a dataset's, or if the test
    sets of a training run have other classes than its training sets.

    Args:
        cfg: a Detectron2 CfgNode; checked for RetinaFocal / RetinaNet (NUM_CLASSES key
            ``MODEL.RETINANET.NUM_CLASSES``) and GeneralizedRCNN
            (``MODEL.ROI_HEADS.NUM_CLASSES``), other meta-architectures are left alone.
            The datasets are ``DATASETS.TRAIN`` and ``DATASETS.TEST``; those whose metadata
            has no ``thing_classes`` yet are skipped.
        evaluation_only: a checkpoint is evaluated (``--eval-only``, ``retina-focal eval``):
            ``DATASETS.TRAIN`` is not read. The checkpoint (its class map, or the
            NUM_CLASSES it must fit) is the model's side and ``DATASETS.TEST`` the data's; a
            config's training set says nothing about a checkpoint, and checking it too gave
            contradictory advice when it had another class count.

    When training, each ``DATASETS.TEST`` must have the class names of ``DATASETS.TRAIN``, in
    any id order (evaluation matches them by name): else the error shows both lists before
    training starts. :func:`check_lazy_num_classes` is the same check for a LazyConfig.
    """
    key = _NUM_CLASSES_KEY.get(cfg.MODEL.META_ARCHITECTURE)
    if key is None:
        return
    check_dataset_classes(config_value(cfg, key), key, f"set {key} {{}}",
                          ("DATASETS.TRAIN", list(cfg.DATASETS.TRAIN)),
                          ("DATASETS.TEST", list(cfg.DATASETS.TEST)),
                          evaluation_only=evaluation_only)


def check_dataset_classes(num_classes: int, key: str, fix: str, train: Tuple[str, List[str]],
                          test: Tuple[str, List[str]], *, evaluation_only: bool = False,
                          name_split: bool = False) -> None:
    """The class checks of a run, for either config system: ``num_classes`` (the value of
    ``key``) against every dataset of ``test`` and, unless ``evaluation_only``, of ``train``
    (each a ``(key, dataset names)`` pair), ``fix`` being the advice formatted with a
    dataset's count (``name_split``: the message also names the split's key); and when
    training, the test sets' class names against the training sets' (first: when they differ,
    the advice to change ``key`` to one dataset's count would fail on the other's)."""
    if not evaluation_only:  # first: with the datasets at odds, no NUM_CLASSES fits both
        _check_test_classes(train[1], test[1], train[0], test[0])
    for split_key, names in [test] if evaluation_only else [train, test]:
        for name in names:
            _check_dataset_classes(name, num_classes, key, fix,
                                   where=f" ({split_key})" if name_split else "")


def model_num_classes(cfg) -> Optional[int]:
    """The class count of ``cfg``'s meta-architecture (``MODEL.RETINANET.NUM_CLASSES`` for
    RetinaFocal / RetinaNet, ``MODEL.ROI_HEADS.NUM_CLASSES`` for GeneralizedRCNN); None for one
    without classes (ProposalNetwork) or unknown here."""
    key = _NUM_CLASSES_KEY.get(cfg.MODEL.META_ARCHITECTURE)
    return None if key is None else config_value(cfg, key)


def _check_test_classes(train: List[str], test: List[str], train_key: str, test_key: str):
    """ValueError (both lists shown) if a test dataset's class names are not the training
    datasets'; another id order is fine (evaluation renumbers by name)."""
    train_map = class_map_of_datasets(train) if train else None
    if train_map is None:
        return
    for name in test:
        test_map = class_map_of_datasets([name])
        if test_map is not None:
            match_class_maps(train_map, test_map,
                             model_desc=f"{train_key} ({', '.join(train)})",
                             data_desc=f"{test_key} '{name}'",
                             advice=f"Set {test_key} to a dataset with the training set's "
                                    f"classes (e.g. a split of the same COCO file), or train on "
                                    f"one with the test set's")


def _check_dataset_classes(name: str, num_classes: int, key: str, fix: str, where: str = ""):
    """ValueError if registered dataset ``name`` has categories and not ``num_classes`` of
    them; ``fix`` is the advice, formatted with the dataset's count."""
    classes = MetadataCatalog.get(name).get("thing_classes")
    if classes is not None and len(classes) != num_classes:
        shown = ", ".join(map(str, classes[:10])) + (", ..." if len(classes) > 10 else "")
        raise DataError(
            f"{key}={num_classes} but dataset '{name}'{where} has {len(classes)} categories "
            f"({shown}); {fix.format(len(classes))}"
        )


def lazy_dataset_names(cfg, split: str) -> List[str]:
    """The dataset names of a LazyConfig's ``dataloader.<split>.dataset.names`` (a name or a
    list; ``[]`` when the config has none)."""
    names = cfg.get("dataloader", {}).get(split, {}).get("dataset", {}).get("names")
    if names is None:
        return []
    return [names] if isinstance(names, str) else list(names)


def check_lazy_num_classes(cfg, *, evaluation_only: bool = False) -> None:
    """:func:`check_num_classes` for a LazyConfig: ``model.num_classes`` (an R-CNN's
    ``model.roi_heads.num_classes``) against the datasets
    named by ``dataloader.train.dataset.names`` (not with ``evaluation_only``) and
    ``dataloader.test.dataset.names``; when training, the test datasets' class names against
    the training datasets'."""
    model = cfg.get("model", {})
    # a dense detector's model.num_classes, or an R-CNN's model.roi_heads.num_classes
    key, num_classes = "model.num_classes", model.get("num_classes")
    if num_classes is None:
        key, num_classes = "model.roi_heads.num_classes", model.get("roi_heads", {}).get(
            "num_classes")
    if not isinstance(num_classes, int):
        return
    check_dataset_classes(
        num_classes, key, f"set {key}={{}}",
        ("dataloader.train.dataset.names", lazy_dataset_names(cfg, "train")),
        ("dataloader.test.dataset.names", lazy_dataset_names(cfg, "test")),
        evaluation_only=evaluation_only, name_split=True)


def bbox_problem(bbox, length: int = 4) -> Optional[str]:
    """Why ``bbox`` is not ``length`` finite numbers (a phrase to follow "bbox <value>"), or
    ``None`` if it is. A list, tuple, 1-D array or tensor of ints or floats passes; ``bool``
    does not (``True`` is not a coordinate)."""
    if isinstance(bbox, (np.ndarray, torch.Tensor)) and bbox.ndim == 1:
        bbox = bbox.tolist()
    if not isinstance(bbox, (list, tuple)):
        return f"is a {type(bbox).__name__}, not a list of {length} numbers"
    if len(bbox) != length:
        return f"has {len(bbox)} values, not {length}"
    for v in bbox:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.number)):
            return f"has the value {v!r} of type {type(v).__name__}, not a number"
    for v in bbox:
        if not math.isfinite(v):
            return f"has the non-finite value {v!r}"
    return None


def describe_annotation(dataset: str, json_file: Optional[str], file_name, image_id,
                        annotation_id) -> str:
    """``"Dataset 'd' (a.json), image 'x.png' (image_id 3), annotation id 7"``: where an
    annotation is, for an error message (the JSON file only if known)."""
    source = f" ({json_file})" if json_file else ""
    return (f"Dataset '{dataset}'{source}, image {file_name!r} (image_id {image_id}), "
            f"annotation id {annotation_id}")


def _json_file_of(dataset_names: str, file_name) -> Optional[str]:
    """The COCO JSON a record of ``dataset_names`` (one name, or several joined by ",") came
    from, from the datasets' metadata: the one whose image folder holds ``file_name``, else
    every candidate."""
    metas = [MetadataCatalog.get(n) for n in dataset_names.split(",")
             if n in MetadataCatalog.list()]
    metas = [m for m in metas if m.get("json_file")]
    if len(metas) > 1 and isinstance(file_name, str):
        inside = [m for m in metas if m.get("image_root") and os.path.abspath(file_name)
                  .startswith(os.path.join(os.path.abspath(m.image_root), ""))]
        metas = inside if len(inside) == 1 else metas
    return " or ".join(m.json_file for m in metas) or None


def sanitize_dataset_dicts(dicts: List[Dict], dataset_name: str, num_classes: int) -> List[Dict]:
    """Return ``dicts`` with every box clipped to its image and empty boxes dropped (a new
    list; records whose boxes change are copied).

    Raises ``ValueError`` on a category id outside ``[0, num_classes)``, and on a malformed
    box: no ``bbox``/``bbox_mode``, or a bbox that is not 4 finite numbers (5 for
    ``XYWHA_ABS``): 3 values, strings, ``None``, NaN or inf. A malformed box is corrupt data,
    not a degenerate object, so it is not dropped: the message names the dataset, its JSON
    file (if registered with one), the image file and id, the annotation id and the value,
    and counts the other malformed boxes.

    Boxes are returned as ``XYXY_ABS``; records without ``width``/``height`` are not clipped.
    """
    counts: Counter = Counter()
    out = []
    malformed = []  # (record, annotation, problem) of each malformed box
    for record in dicts:
        annos = record.get("annotations")
        if not annos:
            out.append(record)
            continue
        w, h = record.get("width"), record.get("height")
        kept, changed = [], False
        for anno in annos:
            cid = anno.get("category_id")
            if not isinstance(cid, (int, np.integer)) or not 0 <= cid < num_classes:
                raise DataError(
                    f"Dataset '{dataset_name}', image {record.get('file_name')!r}: annotation "
                    f"category_id={cid!r} is not a contiguous class index in [0, {num_classes}) "
                    f"(MODEL.RETINANET.NUM_CLASSES={num_classes}); check the dataset's "
                    "categories and NUM_CLASSES"
                )
            problem = _annotation_box_problem(anno)
            if problem:
                malformed.append((record, anno, problem))
                continue
            box = BoxMode.convert(list(anno["bbox"]), anno["bbox_mode"], BoxMode.XYXY_ABS)
            x0, y0, x1, y1 = (float(v) for v in box)
            if x1 <= x0 or y1 <= y0:
                counts["dropped"] += 1
                changed = True
                continue
            if w is not None and h is not None:
                c = [min(max(x0, 0.0), w), min(max(y0, 0.0), h), min(max(x1, 0.0), w),
                     min(max(y1, 0.0), h)]
                if c[2] <= c[0] or c[3] <= c[1]:  # nothing of it inside the image
                    counts["dropped"] += 1
                    changed = True
                    continue
                if c != [x0, y0, x1, y1]:
                    counts["clipped"] += 1
                x0, y0, x1, y1 = c
            new = dict(anno, bbox=[x0, y0, x1, y1], bbox_mode=BoxMode.XYXY_ABS)
            changed = changed or new["bbox"] != list(anno["bbox"])
            kept.append(new)
        if changed:
            counts["images"] += 1
            record = dict(record, annotations=kept)
        out.append(record)
    if malformed:
        record, anno, problem = malformed[0]
        where = describe_annotation(dataset_name, _json_file_of(dataset_name, record.get(
            "file_name")), record.get("file_name"), record.get("image_id"), anno.get("id"))
        more = (f"; {len(malformed) - 1} more annotation(s) of this dataset have a malformed "
                "box" if len(malformed) > 1 else "")
        raise DataError(f"{where}: {problem}; fix or remove the annotation{more}")
    if counts["clipped"] or counts["dropped"]:
        logger.warning(
            f"Dataset '{dataset_name}': clipped {counts['clipped']} box(es) to their image and "
            f"dropped {counts['dropped']} box(es) with no area inside it (zero-area, negative "
            f"size or outside the image), in {counts['images']} image(s)"
        )
    return out


def _annotation_box_problem(anno: Dict) -> Optional[str]:
    """What is wrong with an annotation's ``bbox`` / ``bbox_mode`` ("bbox ... has 3 values,
    not 4"), or ``None``."""
    if "bbox" not in anno:
        return "it has no 'bbox'"
    if "bbox_mode" not in anno:
        return f"bbox {anno['bbox']!r} has no 'bbox_mode'"
    try:
        mode = BoxMode(anno["bbox_mode"])
    except ValueError:
        return f"bbox_mode {anno['bbox_mode']!r} is not a detectron2 BoxMode"
    length = 5 if mode == BoxMode.XYWHA_ABS else 4
    problem = bbox_problem(anno["bbox"], length)
    return f"bbox {anno['bbox']!r} ({mode.name}) {problem}" if problem else None
