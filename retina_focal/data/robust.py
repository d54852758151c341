"""Messy datasets: checked dataset dicts and a dataset mapper that reads any image.

* :func:`sanitize_dataset_dicts` (training): boxes are clipped to their image, boxes with no
  area left (zero-area, negative size, entirely outside the image, non-finite) are dropped;
  the counts are logged once per dataset. A category id outside ``[0, NUM_CLASSES)`` is an
  error naming the image, the id and the allowed range. Images without annotations stay
  (``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` decides, as in Detectron2).
* :class:`RobustDatasetMapper`: Detectron2's ``DatasetMapper`` whose image reader accepts
  grayscale, palette, RGBA (alpha dropped) and 16-bit images (scaled to 8 bits, where PIL's
  conversion would saturate everything above 255 to white). A missing or corrupt image file
  raises an error naming the file; in training,
  ``MODEL.RETINA_FOCAL.SKIP_UNREADABLE_IMAGES`` skips it instead (another image takes its
  place; each skip is logged with the running count). Evaluation never skips: the evaluated
  set must be the dataset.
"""
import copy
import logging
import math
from collections import Counter
from typing import Dict, List, Optional

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from detectron2.utils.file_io import PathManager
from PIL import Image

__all__ = ["RobustDatasetMapper", "UnreadableImageError", "read_image_any",
           "sanitize_dataset_dicts"]

logger = logging.getLogger(__name__)


class UnreadableImageError(OSError):
    """An image file that is missing, truncated or not an image."""


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


def read_image_any(file_name: str, format: Optional[str] = "BGR") -> np.ndarray:
    """Read an image as (H, W, C) uint8 in ``format`` ("BGR", "RGB" or any PIL mode).

    Unlike ``detectron2.data.detection_utils.read_image``, 16-bit images (PIL modes "I;16*",
    "I", "F") are scaled from 0..65535 to 0..255 instead of saturating. Grayscale, palette and
    RGBA images are converted by PIL. Raises :class:`UnreadableImageError` naming the file.
    """
    try:
        with PathManager.open(file_name, "rb") as f:
            image = Image.open(f)
            image = utils._apply_exif_orientation(image)
            image.load()  # decode now: a truncated file fails here, inside this try
            if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                array = np.asarray(image, dtype=np.float64)
                array = np.clip(np.rint(array / 257.0), 0, 255).astype(np.uint8)
                image = Image.fromarray(array)  # 2-D uint8: mode "L"
            return utils.convert_PIL_to_numpy(image, format)
    except Exception as e:
        raise UnreadableImageError(
            f"Cannot read image {file_name!r}: {type(e).__name__}: {e}") from e


class RobustDatasetMapper(DatasetMapper):
    """``DatasetMapper`` with :func:`read_image_any` and, in training, optional skipping of
    unreadable images (returns ``None``, which the training dataset replaces by another image).
    """

    @configurable
    def __init__(self, is_train: bool, *, skip_unreadable: bool = False, **kwargs):
        super().__init__(is_train, **kwargs)
        self.skip_unreadable = bool(skip_unreadable) and is_train
        self._num_skipped = 0

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        skip = cfg.MODEL.RETINA_FOCAL.SKIP_UNREADABLE_IMAGES
        if not isinstance(skip, bool):
            raise ValueError(f"MODEL.RETINA_FOCAL.SKIP_UNREADABLE_IMAGES={skip!r} is invalid: "
                             "use True or False")
        ret["skip_unreadable"] = skip
        return ret

    def __call__(self, dataset_dict: Dict) -> Optional[Dict]:
        dataset_dict = copy.deepcopy(dataset_dict)
        file_name = dataset_dict["file_name"]
        try:
            image = read_image_any(file_name, format=self.image_format)
        except UnreadableImageError as e:
            if not self.skip_unreadable:
                hint = (" (set MODEL.RETINA_FOCAL.SKIP_UNREADABLE_IMAGES True to skip such "
                        "images in training)") if self.is_train else ""
                raise UnreadableImageError(f"{e}{hint}") from e
            self._num_skipped += 1
            logger.warning(f"Skipping an unreadable image ({self._num_skipped} so far in this "
                           f"process): {e}")
            return None
        utils.check_image_size(dataset_dict, image)

        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if self.proposal_topk is not None:
            utils.transform_proposals(dataset_dict, image_shape, transforms,
                                      proposal_topk=self.proposal_topk)
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict
