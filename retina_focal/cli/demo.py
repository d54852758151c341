"""``retina-focal demo`` (``tools/demo.py``): run a trained model on images and look at what it
finds.

    retina-focal demo --config-file CFG --input img.jpg photos/ 'more/*.png' \\
        --output demo_out/ --score-thresh 0.3 --device cpu MODEL.WEIGHTS model_final.pth

Inputs are image files, folders (their images, not recursive) and glob patterns. Writes, into
--output: every image annotated with Detectron2's Visualizer, ``results.json`` (the detections in
COCO results format: image_id, category_id, bbox [x, y, w, h], score) and ``images.json`` (a COCO
file listing the images and categories those ids refer to, so
``COCO("images.json").loadRes("results.json")`` works). With ``--coco-json GT`` the ids are
taken from that ground truth instead (matched by file name), so
``retina-focal eval --results results.json --gt-json GT`` evaluates them.

Trailing ``KEY VALUE`` pairs override the config (``MODEL.WEIGHTS`` is the checkpoint).
"""
import argparse
import glob
import json
import logging
import os
import re

import cv2
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import Visualizer
from tqdm import tqdm

from retina_focal.data.datasets.coco import add_dataset_argument, register_datasets_from_args
from retina_focal.engine.defaults import build_cfg
from retina_focal.engine.predictor import Predictor

__all__ = ["build_parser", "collect_images", "main", "parse_args", "run"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")

logger = logging.getLogger("retina_focal.demo")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", nargs="+", required=True, metavar="PATH",
                        help="image files, folders and/or glob patterns")
    parser.add_argument("--output", default="demo_output", metavar="DIR")
    parser.add_argument("--score-thresh", type=float, default=0.5,
                        help="minimum score of a drawn / saved detection (default 0.5)")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, cuda:1, ... (default: the config's MODEL.DEVICE)")
    parser.add_argument("--coco-json", metavar="JSON",
                        help="take image ids and categories from this COCO file (matched by "
                             "file name), so results.json can be evaluated against it")
    add_dataset_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides: KEY VALUE pairs (e.g. MODEL.WEIGHTS ckpt.pth)")
    return parser


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    # `--input a.jpg b.jpg MODEL.WEIGHTS w.pth`: the overrides start at the first config key.
    for i, token in enumerate(args.input):
        if _CONFIG_KEY.match(token):
            args.opts = args.input[i:] + list(args.opts)
            args.input = args.input[:i]
            break
    if not args.input:
        raise SystemExit("error: --input needs at least one image, folder or glob pattern")
    if not 0.0 <= args.score_thresh <= 1.0:
        raise SystemExit(f"error: --score-thresh {args.score_thresh} is invalid: use [0, 1]")
    return args


def collect_images(inputs):
    """Expand files, folders and globs into a sorted-per-input, duplicate-free list of paths."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item)
                           if f.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.isfile(item):
            found = [item]
        else:
            found = sorted(p for p in glob.glob(item) if p.lower().endswith(IMAGE_EXTENSIONS))
        if not found:
            raise SystemExit(f"error: --input {item!r} matches no image file "
                             f"(extensions: {', '.join(IMAGE_EXTENSIONS)})")
        paths.extend(p for p in found if p not in paths)
    return paths


def setup(args):
    register_datasets_from_args(args)
    cfg = build_cfg(args.config_file, args.opts, freeze=False)
    if args.device:
        cfg.MODEL.DEVICE = args.device
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = args.score_thresh
    if not cfg.MODEL.WEIGHTS:
        raise SystemExit("error: MODEL.WEIGHTS is empty: add `MODEL.WEIGHTS path/to/model.pth`")
    cfg.freeze()
    return cfg


def category_ids(metadata, num_classes):
    """contiguous id -> dataset category id (1..K when the metadata has no mapping)."""
    mapping = metadata.get("thing_dataset_id_to_contiguous_id")
    if mapping:
        return {v: k for k, v in mapping.items()}
    return {k: k + 1 for k in range(num_classes)}


def main(args):
    """Run the model on every input image; write the annotated images, results.json and
    images.json; return the detections (COCO results format)."""
    setup_logger(name="retina_focal")
    cfg = setup(args)
    images = collect_images(args.input)
    os.makedirs(args.output, exist_ok=True)

    names = list(cfg.DATASETS.TEST) or list(cfg.DATASETS.TRAIN)
    metadata = MetadataCatalog.get(names[0] if names else "__retina_focal_demo")
    num_classes = cfg.MODEL.RETINANET.NUM_CLASSES
    classes = list(metadata.get("thing_classes", None) or [str(k) for k in range(num_classes)])
    if len(classes) != num_classes:
        raise SystemExit(f"error: MODEL.RETINANET.NUM_CLASSES={num_classes} but dataset "
                         f"'{names[0]}' has {len(classes)} classes")
    to_dataset_id = category_ids(metadata, num_classes)
    image_ids = None
    if args.coco_json:
        with open(args.coco_json) as f:
            gt = json.load(f)
        by_name = {os.path.basename(im["file_name"]): im["id"] for im in gt["images"]}
        missing = [p for p in images if os.path.basename(p) not in by_name]
        if missing:
            raise SystemExit(f"error: {len(missing)} input image(s) are not in {args.coco_json} "
                             f"(by file name), e.g. {missing[:3]}")
        image_ids = [by_name[os.path.basename(p)] for p in images]
        gt_cats = {c["id"] for c in gt["categories"]}
        if not set(to_dataset_id.values()) <= gt_cats:
            raise SystemExit(f"error: the model's category ids {sorted(to_dataset_id.values())} "
                             f"are not all in {args.coco_json} ({sorted(gt_cats)})")

    predictor = Predictor(cfg)
    results, image_entries, used_names = [], [], set()
    for i, path in enumerate(tqdm(images, desc="demo", unit="img", disable=None)):
        img = read_image(path, format="BGR")
        instances = predictor(img)["instances"].to("cpu")
        instances = instances[instances.scores >= args.score_thresh]
        image_id = image_ids[i] if image_ids else i + 1
        for det in instances_to_coco_json(instances, image_id):
            det["category_id"] = to_dataset_id[det["category_id"]]
            results.append(det)
        image_entries.append({"id": image_id, "file_name": os.path.abspath(path),
                              "height": img.shape[0], "width": img.shape[1]})

        vis = Visualizer(img[:, :, ::-1], metadata=metadata)
        drawn = vis.draw_instance_predictions(instances).get_image()[:, :, ::-1]
        name = os.path.basename(path)
        if name in used_names:  # same file name in two input folders
            name = f"{i:05d}_{name}"
        used_names.add(name)
        cv2.imwrite(os.path.join(args.output, name), drawn)
        logger.info(f"{path}: {len(instances)} detections")

    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump(results, f)
    categories = [{"id": to_dataset_id[k], "name": classes[k]} for k in range(num_classes)]
    with open(os.path.join(args.output, "images.json"), "w") as f:
        json.dump({"images": image_entries, "categories": categories, "annotations": []}, f)
    print(f"{len(images)} images, {len(results)} detections with score >= {args.score_thresh}: "
          f"annotated images and results.json / images.json in {args.output}")
    return results


def run(argv=None) -> int:
    return 0 if main(parse_args(argv)) is not None else 1
