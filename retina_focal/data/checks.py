"""Checks of a dataset against the model before anything trains or evaluates.

* :func:`check_num_classes` / :func:`check_lazy_num_classes`: the model's class count against
  every dataset a YAML / LazyConfig names (their ``thing_classes``);
* :func:`sanitize_dataset_dicts` (training): boxes are clipped to their image, boxes with no
  area left (zero-area, negative size, entirely outside the image, non-finite) are dropped;
  the counts are logged once per dataset. A category id outside ``[0, NUM_CLASSES)`` is an
  error naming the image, the id and the allowed range. Images without annotations stay
  (``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` decides, as in Detectron2).
"""
import logging
import math
from collections import Counter
from typing import Dict, List, Optional, Sequence

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.structures import BoxMode

__all__ = ["check_lazy_num_classes", "check_num_classes", "sanitize_dataset_dicts"]

logger = logging.getLogger(__name__)


# Meta-architectures whose class count is MODEL.RETINANET.NUM_CLASSES.
_NUM_CLASSES_KEY = {"RetinaFocal": "MODEL.RETINANET.NUM_CLASSES",
                    "RetinaNet": "MODEL.RETINANET.NUM_CLASSES"}


def check_num_classes(cfg, dataset_names: Optional[Sequence[str]] = None) -> None:
    """Raise ValueError if the model's class count differs from a dataset's.

    Args:
        cfg: a Detectron2 CfgNode; checked for RetinaFocal / RetinaNet (NUM_CLASSES key
            ``MODEL.RETINANET.NUM_CLASSES``), other meta-architectures are left alone.
        dataset_names: default ``DATASETS.TRAIN + DATASETS.TEST``. Datasets whose metadata
            has no ``thing_classes`` yet are skipped.
    """
    key = _NUM_CLASSES_KEY.get(cfg.MODEL.META_ARCHITECTURE)
    if key is None:
        return
    num_classes = cfg.MODEL.RETINANET.NUM_CLASSES
    if dataset_names is None:
        dataset_names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    for name in dataset_names:
        _check_dataset_classes(name, num_classes, key, f"set {key} {{}}")


def _check_dataset_classes(name: str, num_classes: int, key: str, fix: str, where: str = ""):
    """ValueError if registered dataset ``name`` has categories and not ``num_classes`` of
    them; ``fix`` is the advice, formatted with the dataset's count."""
    classes = MetadataCatalog.get(name).get("thing_classes")
    if classes is not None and len(classes) != num_classes:
        shown = ", ".join(map(str, classes[:10])) + (", ..." if len(classes) > 10 else "")
        raise ValueError(
            f"{key}={num_classes} but dataset '{name}'{where} has {len(classes)} categories "
            f"({shown}); {fix.format(len(classes))}"
        )


def check_lazy_num_classes(cfg) -> None:
    """:func:`check_num_classes` for a LazyConfig: ``model.num_classes`` against the datasets
    named by ``dataloader.train.dataset.names`` and ``dataloader.test.dataset.names``."""
    num_classes = cfg.get("model", {}).get("num_classes")
    if not isinstance(num_classes, int):
        return
    for split in ("train", "test"):
        names = cfg.get("dataloader", {}).get(split, {}).get("dataset", {}).get("names")
        if names is None:
            continue
        for name in [names] if isinstance(names, str) else list(names):
            _check_dataset_classes(name, num_classes, "model.num_classes",
                                   "set model.num_classes={}",
                                   where=f" (dataloader.{split}.dataset.names)")


def sanitize_dataset_dicts(dicts: List[Dict], dataset_name: str, num_classes: int) -> List[Dict]:
    """Return ``dicts`` with every box clipped to its image and empty boxes dropped (a new
    list; records whose boxes change are copied). Raises ``ValueError`` on a category id
    outside ``[0, num_classes)``.

    Boxes are returned as ``XYXY_ABS``; records without ``width``/``height`` are not clipped.
    """
    counts: Counter = Counter()
    out = []
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
                raise ValueError(
                    f"Dataset '{dataset_name}', image {record.get('file_name')!r}: annotation "
                    f"category_id={cid!r} is not a contiguous class index in [0, {num_classes}) "
                    f"(MODEL.RETINANET.NUM_CLASSES={num_classes}); check the dataset's "
                    "categories and NUM_CLASSES"
                )
            box = BoxMode.convert(list(anno["bbox"]), anno["bbox_mode"], BoxMode.XYXY_ABS)
            x0, y0, x1, y1 = (float(v) for v in box)
            if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
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
    if counts["clipped"] or counts["dropped"]:
        logger.warning(
            f"Dataset '{dataset_name}': clipped {counts['clipped']} box(es) to their image and "
            f"dropped {counts['dropped']} box(es) with no area inside it (zero-area, negative "
            f"size, outside the image or non-finite), in {counts['images']} image(s)"
        )
    return out
