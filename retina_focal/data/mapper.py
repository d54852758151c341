"""A dataset mapper that reads any image, and says which file it could not read.

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
from typing import Dict, Optional

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.utils.file_io import PathManager
from PIL import Image

__all__ = ["RobustDatasetMapper", "UnreadableImageError", "read_image_any"]

logger = logging.getLogger(__name__)


class UnreadableImageError(OSError):
    """An image file that is missing, truncated or not an image."""


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
