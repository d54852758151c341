"""A deterministic synthetic detection dataset: coloured shapes on cluttered, textured images.

It is the project's embedded default because no real dataset can be downloaded here. It is
built to exercise what a dense detector must handle, not to be trivial:

* ``NUM_CLASSES`` shape classes whose frequencies are imbalanced (``CLASS_WEIGHTS``: the most
  frequent class is drawn ~6x as often as the rarest), so the class-imbalance questions of
  the focal-loss paper have something to bite on;
* object sizes log-uniform in ``[min_size, max_size]`` (12 to 128 px by default) with aspect
  ratios from 1:2 to 2:1, so every FPN level and anchor shape is used;
* textured backgrounds (smooth colour noise + pixel noise) with clutter (lines, arcs and
  low-contrast blobs) that a detector must learn to reject;
* optional distractors (``num_distractors``, 0 by default): filled, saturated polygons of
  object size that belong to no class, the hard negatives of the imbalance presets;
* overlapping objects: a new object may cover up to ``max_occlusion`` of an earlier one;
* tight ground truth: every box is the exact pixel extent of the drawn shape (COCO
  ``[x, y, w, h]`` with pixel edges, so a 1-pixel object has w = h = 1).

Each image is a pure function of ``(seed, split, index)`` through its own
``numpy.random.Generator``, so generating twice gives identical files.
"""
import functools
import hashlib
import json
import logging
import math
import multiprocessing
import os
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

from retina_focal.utils.errors import DataError
from retina_focal.utils.file_io import atomic_write_bytes, make_output_dir

logger = logging.getLogger(__name__)

CLASS_NAMES = ("ellipse", "rectangle", "triangle", "cross", "star", "ring")
# Relative frequencies; max / min = 6.
CLASS_WEIGHTS = (0.36, 0.22, 0.15, 0.11, 0.10, 0.06)
FORMAT_VERSION = 1  # bump when the drawing code changes, so caches are regenerated
# the splits of a dataset folder written by write_coco_folder (``retina-focal make-dataset``)
SPLITS = ("train", "val")


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of one generated dataset; every field changes the generated files."""

    num_train: int = 1200
    num_val: int = 200
    image_size: Tuple[int, int] = (256, 256)  # (height, width)
    min_size: float = 12.0  # smallest object side (max of w, h), pixels
    max_size: float = 128.0
    min_objects: int = 2
    max_objects: int = 8
    max_occlusion: float = 0.4  # largest fraction of an earlier object a new one may cover
    num_clutter: int = 12
    # object-like clutter: saturated irregular polygons of object size that are no class's
    num_distractors: int = 0
    seed: int = 0

    def __post_init__(self):
        checks = [
            ("num_train", self.num_train >= 0),
            ("num_val", self.num_val >= 0),
            ("image_size", len(self.image_size) == 2 and min(self.image_size) >= 32),
            ("min_size", 2 <= self.min_size <= self.max_size),
            ("max_size", self.max_size <= min(self.image_size)),
            ("min_objects", 0 <= self.min_objects <= self.max_objects),
            ("max_occlusion", 0.0 <= self.max_occlusion < 1.0),
            ("num_clutter", self.num_clutter >= 0),
            ("num_distractors", self.num_distractors >= 0),
        ]
        for key, ok in checks:
            if not ok:
                raise DataError(
                    f"SyntheticConfig.{key}={getattr(self, key)!r} is invalid "
                    f"(config: {self})"
                )

    def fingerprint(self) -> str:
        fields = asdict(self)
        if not fields["num_distractors"]:
            # a config without distractors draws what it drew before the field existed:
            # its cache directory keeps its name
            del fields["num_distractors"]
        blob = json.dumps({"v": FORMAT_VERSION, **fields}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """(h, w, 3) float32 colour noise in [0, 1], smooth at a scale of ``h / cells`` pixels."""
    coarse = rng.random((cells + 1, cells + 1, 3), dtype=np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _background(rng: np.random.Generator, h: int, w: int, num_clutter: int) -> np.ndarray:
    base = rng.uniform(60, 170, size=3).astype(np.float32)
    tex = (
        base
        + 70 * (_smooth_noise(rng, h, w, int(rng.integers(2, 5))) - 0.5)
        + 35 * (_smooth_noise(rng, h, w, int(rng.integers(8, 24))) - 0.5)
    )
    img = tex.clip(0, 255).astype(np.uint8)
    for _ in range(num_clutter):
        color = tuple(int(c) for c in (base + rng.uniform(-60, 60, 3)).clip(0, 255))
        kind = rng.integers(3)
        if kind == 0:  # line
            p1 = tuple(int(v) for v in rng.integers(0, (w, h)))
            p2 = tuple(int(v) for v in rng.integers(0, (w, h)))
            cv2.line(img, p1, p2, color, int(rng.integers(1, 3)), cv2.LINE_AA)
        elif kind == 1:  # arc
            c = tuple(int(v) for v in rng.integers(0, (w, h)))
            axes = tuple(int(v) for v in rng.integers(8, 60, 2))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(img, c, axes, 0, start, start + float(rng.uniform(40, 160)), color, 1,
                        cv2.LINE_AA)
        else:  # low-contrast irregular blob
            center = rng.uniform(0, (w, h))
            n = int(rng.integers(5, 9))
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = rng.uniform(4, 22, n)
            pts = np.stack([center[0] + rad * np.cos(ang), center[1] + rad * np.sin(ang)], 1)
            blob_color = tuple(int(v) for v in (base + rng.uniform(-25, 25, 3)).clip(0, 255))
            cv2.fillPoly(img, [pts.astype(np.int32)], blob_color, cv2.LINE_AA)
    noise = rng.normal(0, 6, img.shape).astype(np.float32)
    return (img.astype(np.float32) + noise).clip(0, 255).astype(np.uint8)


def _draw_distractors(img: np.ndarray, rng: np.random.Generator, cfg: "SyntheticConfig") -> None:
    """Draw ``cfg.num_distractors`` object-like shapes that belong to no class into ``img``
    (in place): irregular polygons of 5-9 vertices (a class shape has 3, 4, 10 or a smooth
    outline), of object size and object colour, with the objects' per-pixel shading."""
    H, W = img.shape[:2]
    for _ in range(cfg.num_distractors):
        side = math.exp(rng.uniform(math.log(cfg.min_size), math.log(cfg.max_size)))
        c = rng.uniform(0, (W, H))
        n = int(rng.integers(5, 10))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(0.3, 0.5, n) * side
        pts = np.stack([c[0] + rad * np.cos(ang), c[1] + rad * np.sin(ang)], 1)
        mask = np.zeros((H, W), np.uint8)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1, cv2.LINE_8)
        ys, xs = np.nonzero(mask)
        if not len(ys):
            continue
        color = _object_color(rng)
        shade = 1.0 + rng.normal(0, 0.06, (len(ys), 1)).astype(np.float32)
        img[ys, xs] = (color * shade).clip(0, 255).astype(np.uint8)


def _shape_mask(cls: int, w: float, h: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of a shape of class ``cls`` filling a ``w`` x ``h`` box (before cropping)."""
    W, H = int(math.ceil(w)) + 2, int(math.ceil(h)) + 2
    m = np.zeros((H, W), np.uint8)
    cx, cy = W / 2.0, H / 2.0
    name = CLASS_NAMES[cls]
    S = 16  # sub-pixel precision for cv2 drawing
    shift = 4

    def poly(points):
        pts = np.round(np.asarray(points) * S).astype(np.int32)
        cv2.fillPoly(m, [pts], 1, cv2.LINE_8, shift)

    if name == "ellipse":
        cv2.ellipse(m, (round(cx * S), round(cy * S)), (round(w / 2 * S), round(h / 2 * S)), 0,
                    0, 360, 1, -1, cv2.LINE_8, shift)
    elif name == "rectangle":
        poly([(cx - w / 2, cy - h / 2), (cx + w / 2, cy - h / 2), (cx + w / 2, cy + h / 2),
              (cx - w / 2, cy + h / 2)])
    elif name == "triangle":
        apex = cx + rng.uniform(-0.3, 0.3) * w
        if rng.random() < 0.5:
            poly([(apex, cy - h / 2), (cx + w / 2, cy + h / 2), (cx - w / 2, cy + h / 2)])
        else:
            poly([(apex, cy + h / 2), (cx + w / 2, cy - h / 2), (cx - w / 2, cy - h / 2)])
    elif name == "cross":
        t = rng.uniform(0.25, 0.4)
        poly([(cx - w / 2, cy - h * t / 2), (cx + w / 2, cy - h * t / 2),
              (cx + w / 2, cy + h * t / 2), (cx - w / 2, cy + h * t / 2)])
        poly([(cx - w * t / 2, cy - h / 2), (cx + w * t / 2, cy - h / 2),
              (cx + w * t / 2, cy + h / 2), (cx - w * t / 2, cy + h / 2)])
    elif name == "star":
        rot = rng.uniform(0, 2 * np.pi / 5)
        ang = rot + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        poly(np.stack([cx + rad * np.cos(ang) * w / 2, cy + rad * np.sin(ang) * h / 2], 1))
    elif name == "ring":
        cv2.ellipse(m, (round(cx * S), round(cy * S)), (round(w / 2 * S), round(h / 2 * S)), 0,
                    0, 360, 1, -1, cv2.LINE_8, shift)
        inner = np.zeros_like(m)
        k = rng.uniform(0.45, 0.65)
        cv2.ellipse(inner, (round(cx * S), round(cy * S)),
                    (round(w / 2 * k * S), round(h / 2 * k * S)), 0, 0, 360, 1, -1, cv2.LINE_8,
                    shift)
        m &= 1 - inner
    else:  # pragma: no cover - CLASS_NAMES and this function are edited together
        raise AssertionError(name)
    return m.astype(bool)


def _object_color(rng: np.random.Generator) -> np.ndarray:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(140, 255), rng.uniform(130, 255)]]],
                   np.float32).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def generate_image(cfg: SyntheticConfig, split: str, index: int) -> Tuple[np.ndarray, List[Dict]]:
    """Draw one image.

    Returns:
        image: (H, W, 3) uint8 BGR.
        objects: list of ``{"category_id": int (0-based), "bbox": [x, y, w, h]}``, tight.
    """
    split_id = {"train": 1, "val": 2}[split]
    rng = np.random.default_rng([cfg.seed, split_id, index])
    H, W = cfg.image_size
    img = _background(rng, H, W, cfg.num_clutter)
    if cfg.num_distractors:  # (drawing none draws no random number: the default is unchanged)
        _draw_distractors(img, rng, cfg)
    owner = np.full((H, W), -1, np.int32)  # which object a pixel shows now
    areas: List[int] = []
    objects: List[Dict] = []
    num = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    for _ in range(num):
        for _attempt in range(20):
            cls = int(rng.choice(len(CLASS_NAMES), p=np.asarray(CLASS_WEIGHTS)))
            side = math.exp(rng.uniform(math.log(cfg.min_size), math.log(cfg.max_size)))
            ratio = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))  # w / h
            w, h = (side, side / ratio) if ratio >= 1 else (side * ratio, side)
            w, h = max(w, cfg.min_size * 0.5), max(h, cfg.min_size * 0.5)
            mask = _shape_mask(cls, w, h, rng)
            mh, mw = mask.shape
            if mh > H or mw > W:
                continue
            y0 = int(rng.integers(0, H - mh + 1))
            x0 = int(rng.integers(0, W - mw + 1))
            region = owner[y0:y0 + mh, x0:x0 + mw]
            covered = np.bincount(region[mask & (region >= 0)], minlength=len(areas))
            visible = np.bincount(owner[owner >= 0], minlength=len(areas))
            if len(areas) and np.any(covered > cfg.max_occlusion * np.maximum(visible, 1)):
                continue
            ys, xs = np.nonzero(mask)
            color = _object_color(rng)
            shade = 1.0 + rng.normal(0, 0.06, (len(ys), 1)).astype(np.float32)
            img[y0 + ys, x0 + xs] = (color * shade).clip(0, 255).astype(np.uint8)
            region[mask] = len(areas)
            areas.append(len(ys))
            bx, by = x0 + xs.min(), y0 + ys.min()
            bw, bh = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
            objects.append({"category_id": cls, "bbox": [int(bx), int(by), int(bw), int(bh)]})
            break
    return img, objects


def _render(cfg: SyntheticConfig, split: str,
            index: int) -> Tuple[bytes, Tuple[int, int], List[Dict]]:
    """One image of ``split`` as (PNG bytes, (H, W), objects): the unit of parallel work."""
    img, objects = generate_image(cfg, split, index)
    return _encode_png(img), img.shape[:2], objects


# Below this many images a split is drawn in this process: starting workers costs more.
_MIN_IMAGES_PER_WORKER = 64


def _default_workers(count: int) -> int:
    """Processes to draw ``count`` images with: one per CPU, where ``fork`` exists (a forked
    worker starts at once; a spawned one would import torch and detectron2 first)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(os.cpu_count() or 1, count // _MIN_IMAGES_PER_WORKER))


def write_split(cfg: SyntheticConfig, split: str, root: str, progress: bool = True,
                workers: Optional[int] = None) -> str:
    """Generate one split into ``root`` (images in ``root/<split>/``); return its JSON path.

    ``workers`` processes draw the images (default: one per CPU for large splits, see
    :func:`_default_workers`). Every image is a pure function of its index and the files are
    written in index order by this process, so the result is byte-identical for any
    ``workers``.
    """
    count = cfg.num_train if split == "train" else cfg.num_val
    image_dir = os.path.join(root, split)
    os.makedirs(image_dir, exist_ok=True)
    images: List[Dict[str, Any]] = []
    annotations: List[Dict[str, Any]] = []
    workers = _default_workers(count) if workers is None else workers
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
    try:
        render = functools.partial(_render, cfg, split)
        rendered = (pool.imap(render, range(count), chunksize=8) if pool is not None
                    else map(render, range(count)))
        if progress:
            from tqdm import tqdm

            rendered = tqdm(rendered, total=count, desc=f"generating synthetic {split}",
                            unit="img", disable=None, mininterval=2.0)
        for i, (png, (height, width), objects) in enumerate(rendered):
            file_name = f"{i:06d}.png"
            atomic_write_bytes(os.path.join(image_dir, file_name), png)
            images.append({"id": i + 1, "file_name": file_name, "height": height,
                           "width": width})
            for obj in objects:
                x, y, w, h = obj["bbox"]
                annotations.append({
                    "id": len(annotations) + 1, "image_id": i + 1,
                    "category_id": obj["category_id"] + 1, "bbox": [x, y, w, h],
                    "area": w * h, "iscrowd": 0,
                })
    finally:
        if pool is not None:
            pool.terminate()
    coco = {
        "info": {"description": "retina_focal synthetic shapes", "config": asdict(cfg),
                 "format_version": FORMAT_VERSION},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": n} for k, n in enumerate(CLASS_NAMES)],
    }
    json_path = os.path.join(root, f"{split}.json")
    # The JSON appears only once every image is written, so its presence means "complete".
    atomic_write_bytes(json_path, json.dumps(coco).encode())
    return json_path


def check_output_is_free(output: str) -> None:
    """Raise :class:`DataError` if ``output`` already holds a split: ``<split>.json`` or a
    non-empty ``<split>/`` folder (a file there too)."""
    found = []
    for split in SPLITS:
        json_file, image_dir = os.path.join(output, f"{split}.json"), os.path.join(output, split)
        if os.path.lexists(json_file):
            found.append(f"{split}.json")
        files = os.listdir(image_dir) if os.path.isdir(image_dir) else []
        if files:
            found.append(f"{split}/ ({len(files)} files)")
        elif os.path.lexists(image_dir) and not os.path.isdir(image_dir):
            found.append(f"{split} (a file)")
    if found:
        raise DataError(f"--output {output!r} already holds a dataset ({', '.join(found)}); "
                        "give an empty or new folder, or remove those first (nothing was "
                        "written)")


def write_coco_folder(output: str, *, num_train: int = 200, num_val: int = 50,
                      size: int = 128, seed: int = 0,
                      on_split: Optional[Callable[[str, str], None]] = None) -> Dict[str, str]:
    """Write the synthetic dataset as a plain COCO-format dataset folder (what
    ``retina-focal make-dataset`` writes): ``output/<split>.json`` and ``output/<split>/*.png``
    for each of :data:`SPLITS`.

    Args:
        output: the folder (created if needed; messages name it ``--output``). One that already
            holds a split is refused (:func:`check_output_is_free`) before anything is written.
        num_train, num_val: the number of images of each split.
        size: image height and width in pixels; objects are up to ``size / 2``.
        seed: the generator's seed.
        on_split: called with ``(split, json_path)`` once each split is written.

    Returns:
        ``{split: COCO JSON path}``.
    """
    config = SyntheticConfig(num_train=num_train, num_val=num_val,
                             image_size=(size, size), max_size=size / 2,
                             seed=seed)
    make_output_dir(output, "--output")
    check_output_is_free(output)
    paths = {}
    for split in SPLITS:
        paths[split] = write_split(config, split, output)  # a progress bar on a terminal
        if on_split is not None:
            on_split(split, paths[split])
    return paths


def _encode_png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise OSError("PNG encoding failed")
    return buf.tobytes()


def default_cache_root() -> str:
    """``$RETINA_FOCAL_DATASETS`` or ``~/.cache/retina_focal/datasets``."""
    return os.environ.get(
        "RETINA_FOCAL_DATASETS", os.path.join(os.path.expanduser("~"), ".cache", "retina_focal",
                                              "datasets")
    )


def dataset_dir(cfg: SyntheticConfig, cache_root: Optional[str] = None) -> str:
    return os.path.join(cache_root or default_cache_root(), f"synthetic-{cfg.fingerprint()}")


def ensure_generated(cfg: SyntheticConfig, split: str, root: str) -> str:
    """Generate ``split`` into the dataset directory ``root`` unless its JSON is already there;
    return the JSON path."""
    json_path = os.path.join(root, f"{split}.json")
    if not os.path.exists(json_path):
        logger.info(f"Generating synthetic {split} split into {root} ...")
        write_split(cfg, split, root)
    return json_path
