"""A dataset mapper that reads any image, and says which file it could not read.

* :class:`RobustDatasetMapper`: Detectron2's ``DatasetMapper`` whose image reader accepts
  grayscale, palette, RGBA (alpha dropped) and 16-bit images (scaled to 8 bits, where PIL's
  conversion would saturate everything above 255 to white). A missing or corrupt image file
  raises an error naming the file; in training,
  ``MODEL.RETINA_FOCAL.SKIP_UNREADABLE_IMAGES`` skips it instead (another image takes its
  place; each skip is logged with the running count). Evaluation never skips: the evaluated
  set must be the dataset. ``MODEL.RETINA_FOCAL.DECODED_IMAGE_CACHE_MB`` keeps decoded training
  images in memory (up to that many MiB per loader process), so that a small dataset is
  decoded once rather than once per epoch.

It also skips work that changes nothing, with the same output as ``DatasetMapper``, value for
value: a resize to the size the image already has is not run, and box-only annotations (no
masks or keypoints in use, boxes in ``XYXY_ABS`` or ``XYWH_ABS``) are transformed as one
(N, 4) array instead of one box at a time (``tests/data/test_data_mapper.py`` compares both with
Detectron2's ``DatasetMapper``).
"""
import copy
import logging
from typing import Dict, Optional

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.utils.file_io import PathManager
from PIL import Image

from retina_focal.utils.errors import DataError, UserError

__all__ = ["RobustDatasetMapper", "UnreadableImageError", "read_image_any"]

logger = logging.getLogger(__name__)


class UnreadableImageError(UserError, OSError):
    """An image file that is missing, truncated or not an image."""


def read_image_any(file_name: str, format: Optional[str] = "BGR") -> np.ndarray:
    """Read an image as (H, W, C) uint8 in ``format`` ("BGR", "RGB" or any PIL mode).

    Unlike ``detectron2.data.detection_utils.read_image``, 16-bit images (PIL modes "I;16*",
    "I", "F") are scaled from 0..65535 to 0..255 instead of saturating. Grayscale, palette and
    RGBA images are converted by PIL. Raises :class:`UnreadableImageError` naming the file.
    """
    try:
        with PathManager.open(file_name, "rb") as f:
            image: Image.Image = Image.open(f)
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
    def __init__(self, is_train: bool, *, skip_unreadable: bool = False,
                 decoded_image_cache_mb: float = 0, **kwargs):
        """
        Args:
            skip_unreadable: in training, skip an unreadable image instead of stopping.
            decoded_image_cache_mb: in training, keep up to this many MiB of decoded images
                in memory in each process that maps (0: none); a cached image is copied out,
                so augmentations never see the cached array.
            kwargs: ``DatasetMapper``'s.
        """
        super().__init__(is_train, **kwargs)
        self.skip_unreadable = bool(skip_unreadable) and is_train
        self._num_skipped = 0
        if (isinstance(decoded_image_cache_mb, bool)
                or not isinstance(decoded_image_cache_mb, (int, float))
                or not decoded_image_cache_mb >= 0):
            raise ValueError(f"MODEL.RETINA_FOCAL.DECODED_IMAGE_CACHE_MB="
                             f"{decoded_image_cache_mb!r} is invalid: use a number of MiB >= 0 "
                             "(0: no cache)")
        self._cache_bytes_left = int(decoded_image_cache_mb * 2**20) if is_train else 0
        self._cache: Dict[str, np.ndarray] = {}

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        skip = cfg.MODEL.RETINA_FOCAL.SKIP_UNREADABLE_IMAGES
        if not isinstance(skip, bool):
            raise ValueError(f"MODEL.RETINA_FOCAL.SKIP_UNREADABLE_IMAGES={skip!r} is invalid: "
                             "use True or False")
        ret["skip_unreadable"] = skip
        ret["decoded_image_cache_mb"] = cfg.MODEL.RETINA_FOCAL.DECODED_IMAGE_CACHE_MB
        return ret

    def _read_image(self, file_name: str) -> np.ndarray:
        """:func:`read_image_any`, through the decoded-image cache when there is one."""
        cached = self._cache.get(file_name)
        if cached is not None:
            return cached.copy()
        image = read_image_any(file_name, format=self.image_format)
        if image.nbytes <= self._cache_bytes_left:
            self._cache[file_name] = image.copy()
            self._cache_bytes_left -= image.nbytes
        return image

    def __call__(self, dataset_dict: Dict) -> Optional[Dict]:
        dataset_dict = copy.deepcopy(dataset_dict)
        file_name = dataset_dict["file_name"]
        try:
            image = self._read_image(file_name)
        except UnreadableImageError as e:
            if not self.skip_unreadable:
                hint = (" (set MODEL.RETINA_FOCAL.SKIP_UNREADABLE_IMAGES True to skip such "
                        "images in training)") if self.is_train else ""
                raise UnreadableImageError(f"{e}{hint}") from e
            self._num_skipped += 1
            logger.warning(f"Skipping an unreadable image ({self._num_skipped} so far in this "
                           f"process): {e}")
            return None
        try:
            utils.check_image_size(dataset_dict, image)
        except utils.SizeMismatchError as e:  # the JSON's width / height are not the file's
            raise DataError(f"{e} (image file {dataset_dict.get('file_name')!r}, image_id "
                            f"{dataset_dict.get('image_id')}): fix its 'width' and 'height' in "
                            "the dataset's JSON") from None

        aug_input = T.AugInput(image)
        transforms = _apply_skipping_identity_resizes(self.augmentations, aug_input)
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
            if not (self._boxes_only()
                    and _transform_box_annotations(dataset_dict, transforms, image_shape)):
                self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict

    def _boxes_only(self) -> bool:
        """Whether annotations need nothing but their boxes and classes transformed (no masks
        or keypoints in use); :func:`_box_rows` then checks the boxes themselves."""
        return not (self.use_instance_mask or self.use_keypoint or self.recompute_boxes)


_BOX_ONLY_MODES = (BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)


def _apply_skipping_identity_resizes(augmentations: T.AugmentationList,
                                     aug_input: T.AugInput) -> T.TransformList:
    """``augmentations(aug_input)``, except that a ``ResizeShortestEdge`` to the size the image
    already has applies a ``NoOpTransform``: resizing to the same size copies the image
    unchanged and scales boxes by exactly 1, so the result is the same, without the copy. The
    random draws are the same as ``augmentations(aug_input)``'s."""
    transforms = []
    for augmentation in augmentations.augs:
        if type(augmentation) is T.ResizeShortestEdge:
            transform = augmentation.get_transform(aug_input.image)
            if (isinstance(transform, T.ResizeTransform) and transform.h == transform.new_h
                    and transform.w == transform.new_w):
                transform = T.NoOpTransform()
            aug_input.transform(transform)
        else:
            transform = augmentation(aug_input)
        transforms.append(transform)
    return T.TransformList(transforms)


def _box_rows(annotations) -> Optional[Dict[tuple, list]]:
    """Annotation indices grouped by (all-int box, box mode); None when a box is not in
    ``XYXY_ABS`` or ``XYWH_ABS``, or not a list or tuple of four Python ints and floats (an
    array, numpy scalars, bools).

    Detectron2's ``BoxMode.convert`` leaves an ``XYXY_ABS`` box as it is and turns an
    ``XYWH_ABS`` list into an int64 tensor (ints) or a float32 one (floats); the transforms
    then run on an int64 or float64 array (a resize truncates int coordinates). Grouping the
    boxes this way keeps each one's arithmetic."""
    rows: Dict[tuple, list] = {}
    for i, annotation in enumerate(annotations):
        box = annotation["bbox"]
        if (annotation["bbox_mode"] not in _BOX_ONLY_MODES
                or not isinstance(box, (list, tuple)) or len(box) != 4):
            return None
        kinds = {type(v) for v in box}
        if not kinds <= {int, float}:
            return None
        rows.setdefault((kinds == {int}, annotation["bbox_mode"]), []).append(i)
    return rows


def _transform_box_annotations(dataset_dict: Dict, transforms: T.TransformList,
                               image_shape) -> bool:
    """``DatasetMapper._transform_annotations`` for annotations with boxes only, with each
    group of boxes (:func:`_box_rows`) as one (N, 4) array: the same arithmetic in the same
    dtypes as Detectron2's box by box, hence the same values. Sets
    ``dataset_dict["instances"]`` (``gt_boxes``, ``gt_classes``; empty boxes removed) and
    returns True; returns False, changing nothing, for boxes it does not handle."""
    annos = [a for a in dataset_dict["annotations"] if a.get("iscrowd", 0) == 0]
    groups = _box_rows(annos)
    if groups is None:
        return False
    del dataset_dict["annotations"]
    height, width = image_shape
    boxes = np.zeros((len(annos), 4))
    for (is_int, mode), rows in groups.items():
        group = [list(annos[i]["bbox"]) for i in rows]
        if mode == BoxMode.XYXY_ABS:
            array = np.array(group, dtype=np.int64 if is_int else np.float64)
        else:  # XYWH_ABS, converted as BoxMode.convert converts a list
            tensor = torch.tensor(group, dtype=torch.int64 if is_int else torch.float32)
            tensor[:, 2:] += tensor[:, :2]
            array = tensor.numpy() if is_int else tensor.double().numpy()
        array = transforms.apply_box(array).clip(min=0)
        boxes[rows] = np.minimum(array, [width, height, width, height])
    instances = Instances(image_shape)
    instances.gt_boxes = Boxes(boxes)
    instances.gt_classes = torch.tensor([int(a["category_id"]) for a in annos],
                                        dtype=torch.int64)
    dataset_dict["instances"] = utils.filter_empty_instances(instances)
    return True
