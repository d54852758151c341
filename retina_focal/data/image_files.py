"""Image files named on a command line (``retina-focal demo --input``): files, folders and glob
patterns expanded into a list of image paths, and those images matched by file name with the
ids of a COCO file that lists them (``--coco-json``). Messages name the options."""
import glob
import os
from typing import Any, Dict, List, Sequence, Tuple

from retina_focal.utils.errors import DataError
from retina_focal.utils.file_io import read_json

__all__ = ["IMAGE_EXTENSIONS", "coco_image_ids", "collect_images"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def collect_images(inputs: Sequence[str]) -> List[str]:
    """Expand files, folders and globs into a sorted-per-input, duplicate-free list of paths.

    A folder gives its images (by :data:`IMAGE_EXTENSIONS`, not recursive), a glob pattern
    the images it matches; an input that gives no image is a :class:`DataError` naming it as
    ``--input``."""
    paths: List[str] = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item)
                           if f.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.isfile(item):
            found = [item]
        else:
            found = sorted(p for p in glob.glob(item) if p.lower().endswith(IMAGE_EXTENSIONS))
        if not found:
            raise DataError(f"--input {item!r} matches no image file "
                            f"(extensions: {', '.join(IMAGE_EXTENSIONS)})")
        paths.extend(p for p in found if p not in paths)
    return paths


def coco_image_ids(coco_json: str, images: Sequence[str]) -> Tuple[Dict[str, Any], List[int]]:
    """Read the COCO file ``coco_json`` (``--coco-json``) and give each of ``images`` the id of
    the image of the same file name (base name) there.

    Returns:
        ``(the COCO document, one id per image)``.

    Raises:
        DataError: ``coco_json`` cannot be read, has no ``images`` and ``categories`` lists,
            or does not list one of ``images`` (the message gives up to three of them).
    """
    gt = read_json(coco_json, "--coco-json")
    if not isinstance(gt, dict) or not isinstance(gt.get("images"), list) or \
            not isinstance(gt.get("categories"), list):
        raise DataError(f"--coco-json {coco_json} is not a COCO file: it needs "
                        "'images' and 'categories' lists")
    by_name = {os.path.basename(im["file_name"]): im["id"] for im in gt["images"]}
    missing = [p for p in images if os.path.basename(p) not in by_name]
    if missing:
        raise DataError(f"{len(missing)} input image(s) are not in {coco_json} "
                        f"(by file name), e.g. {missing[:3]}")
    return gt, [by_name[os.path.basename(p)] for p in images]
