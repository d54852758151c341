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

Classes come from the checkpoint's class map (the training set's categories, see
:mod:`retina_focal.data.class_map`) and are matched by name with --coco-json's (else the
config's first DATASETS.TEST's): the same classes under other ids get that file's ids; other
names are an error showing both lists. An image that cannot be read is skipped and named in
the log; everything else is written, images.json lists the skipped images under
``skipped_images``, and the command exits with status 1.

Trailing ``KEY VALUE`` pairs override the config (``MODEL.WEIGHTS`` is the checkpoint, or an
exported ``.onnx`` / ``.pt2`` model of ``retina-focal export``, run with onnxruntime /
torch.export: a whole-detector graph as it is, a head graph with the eager post-processing).
"""
import argparse
import glob
import json
import logging
import os
import re
import sys
from typing import Dict, List, Optional, Tuple

import cv2
from detectron2.data.catalog import Metadata
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import Visualizer
from tqdm import tqdm

from retina_focal.cli._args import command_parser
from retina_focal.cli._errors import reports_user_errors
from retina_focal.config.loading import add_allow_unsafe_config_argument
from retina_focal.data.class_map import (
    ClassMap,
    class_map_from_categories,
    class_map_of_datasets,
    outputs_class_map,
    results_category_ids,
)
from retina_focal.data.datasets.coco import add_dataset_argument, register_dataset_specs
from retina_focal.data.mapper import read_image_any
from retina_focal.engine.checkpoint import CheckpointReadError
from retina_focal.engine.defaults import build_cfg
from retina_focal.export.predictor import Predictor
from retina_focal.export.runtime import ExportedModelError, is_exported_model
from retina_focal.utils.errors import DataError
from retina_focal.utils.file_io import make_output_dir, read_json

__all__ = [
    "build_parser",
    "collect_images",
    "data_classes",
    "main",
    "parse_args",
    "run",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")

logger = logging.getLogger("retina_focal.demo")


def build_parser():
    parser = command_parser(description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    # required, checked in parse_args: after the overrides it is read as one of them
    parser.add_argument("--input", nargs="+", default=None, metavar="PATH",
                        help="image files, folders and/or glob patterns (required)")
    parser.add_argument("--output", default="demo_output", metavar="DIR")
    parser.add_argument("--score-thresh", type=float, default=0.5,
                        help="minimum score of a drawn / saved detection (default 0.5)")
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, cuda:1, ... (default: the config's MODEL.DEVICE)")
    parser.add_argument("--coco-json", metavar="JSON",
                        help="take image ids and categories from this COCO file (matched by "
                             "file name), so results.json can be evaluated against it")
    add_dataset_argument(parser)
    add_allow_unsafe_config_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides: KEY VALUE pairs (e.g. MODEL.WEIGHTS ckpt.pth)")
    return parser


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    if args.input is None:
        if "--input" in args.opts:
            raise SystemExit("error: option --input comes after the KEY VALUE config overrides, "
                             "where it would be read as a key: put options before the overrides")
        raise SystemExit("error: --input is required: image files, folders and/or glob "
                         "patterns")
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


def output_names(images: List[str]) -> List[str]:
    """The annotated image's file name in ``--output`` for each input path: its base name,
    prefixed with its index where two inputs share one."""
    names, used = [], set()
    for i, path in enumerate(images):
        name = os.path.basename(path)
        if name in used:  # same file name in two input folders
            name = f"{i:05d}_{name}"
        used.add(name)
        names.append(name)
    return names


def _is_demo_output(folder: str) -> bool:
    """Whether ``folder`` holds an earlier demo's output (its ``images.json``)."""
    try:
        with open(os.path.join(folder, "images.json")) as f:
            return "skipped_images" in json.load(f)
    except (OSError, ValueError, TypeError):
        return False


def check_output_files(output: str, names: List[str], images: List[str]) -> None:
    """Refuse (:class:`DataError`, before anything is written) an ``--output`` where the demo
    would overwrite one of its input images, or files that an earlier demo did not write
    there; an earlier demo's output folder may be written again."""
    targets = [os.path.join(output, n) for n in names + ["results.json", "images.json"]]
    inputs = {os.path.realpath(p) for p in images}
    clash = [t for t in targets if os.path.realpath(t) in inputs]
    if clash:
        raise DataError(f"--output {output!r}: the annotated images would overwrite the input "
                        f"image {clash[0]!r} ({len(clash)} in all); choose another folder")
    existing = [t for t in targets if os.path.lexists(t)]
    if existing and not _is_demo_output(output):
        more = (f" and {len(existing) - 1} more of the files to write"
                if len(existing) > 1 else "")
        raise DataError(f"--output {output!r} already holds {os.path.basename(existing[0])!r}"
                        f"{more}, not an earlier demo's output (no demo images.json there); "
                        "choose a new or empty folder (nothing was written)")


def setup(args):
    register_dataset_specs(args.dataset)
    cfg = build_cfg(args.config_file, args.opts, freeze=False,
                    allow_unsafe=args.allow_unsafe_config)
    if args.device:
        cfg.MODEL.DEVICE = args.device
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = args.score_thresh
    if not cfg.MODEL.WEIGHTS:
        raise SystemExit("error: MODEL.WEIGHTS is empty: add `MODEL.WEIGHTS path/to/model.pth`")
    cfg.freeze()
    return cfg


def data_classes(cfg, gt: Optional[Dict]) -> Tuple[Optional[ClassMap], str]:
    """The classes results are written for: --coco-json's categories, else those of the
    config's first DATASETS.TEST (when it has any); ``(None, "")`` when there are none."""
    if gt is not None:
        return class_map_from_categories(gt["categories"]), "--coco-json"
    if len(cfg.DATASETS.TEST):
        cmap = class_map_of_datasets(cfg.DATASETS.TEST[:1])
        if cmap is not None:
            return cmap, f"DATASETS.TEST '{cfg.DATASETS.TEST[0]}'"
    return None, ""


# for images of another dataset than DATASETS.TEST, when the classes do not match
_OTHER_DATASET_HINT = (
    "\nThe config's DATASETS.TEST is taken to be the dataset of the images. For images of "
    "another dataset give its categories: --coco-json FILE, or --dataset NAME=JSON:IMAGE_DIR "
    "with DATASETS.TEST \"('NAME',)\"; DATASETS.TEST \"()\" writes the checkpoint's own "
    "classes and ids")


def main(args):
    """Run the model on every input image; write the annotated images, results.json and
    images.json.

    An image that cannot be read is skipped (named in the log) and the others are still
    processed and written; images.json lists the skipped ones under ``skipped_images``
    (file name and error), and :func:`run` then exits with status 1.

    Returns:
        ``{"results": detections (COCO results format), "skipped": [{"file_name", "error"}]}``
    """
    setup_logger(name="retina_focal")
    cfg = setup(args)
    images = collect_images(args.input)
    image_ids, gt = None, None
    if args.coco_json:  # read and checked before anything is written
        gt = read_json(args.coco_json, "--coco-json")
        if not isinstance(gt, dict) or not isinstance(gt.get("images"), list) or \
                not isinstance(gt.get("categories"), list):
            raise SystemExit(f"error: --coco-json {args.coco_json} is not a COCO file: it needs "
                             "'images' and 'categories' lists")
        by_name = {os.path.basename(im["file_name"]): im["id"] for im in gt["images"]}
        missing = [p for p in images if os.path.basename(p) not in by_name]
        if missing:
            raise SystemExit(f"error: {len(missing)} input image(s) are not in {args.coco_json} "
                             f"(by file name), e.g. {missing[:3]}")
        image_ids = [by_name[os.path.basename(p)] for p in images]
    names = output_names(images)
    check_output_files(args.output, names, images)
    try:
        predictor = Predictor(cfg)  # the checkpoint must fit the model exactly
    except ExportedModelError as e:
        if e.key == "MODEL.RETINANET.SCORE_THRESH_TEST":  # set by --score-thresh
            raise SystemExit(
                f"error: --score-thresh {args.score_thresh} is below the score threshold the "
                f"whole-detector graph {cfg.MODEL.WEIGHTS!r} was exported with ({e.stored}): "
                f"use --score-thresh {e.stored} or more, or export it with "
                f"MODEL.RETINANET.SCORE_THRESH_TEST 0.0 to choose any threshold later")
        raise SystemExit(f"error: {e}")
    except (ValueError, FileNotFoundError, CheckpointReadError) as e:
        raise SystemExit(f"error: {e}")
    make_output_dir(args.output, "--output")  # after every check: a refused run writes nothing
    data_map, data_desc = data_classes(cfg, gt)
    model_map = outputs_class_map(
        predictor.class_map, cfg.MODEL.RETINANET.NUM_CLASSES,
        list(cfg.DATASETS.TEST) or list(cfg.DATASETS.TRAIN), data_map, "--coco-json",
        weights=cfg.MODEL.WEIGHTS)
    to_dataset_id, categories = results_category_ids(
        model_map, data_map, data_desc,
        f"{'exported model' if is_exported_model(cfg.MODEL.WEIGHTS) else 'checkpoint'} "
        f"{os.path.basename(cfg.MODEL.WEIGHTS)!r}",
        hint="" if data_desc == "--coco-json" else _OTHER_DATASET_HINT)
    metadata = Metadata(name="retina_focal_demo", thing_classes=[c["name"] for c in model_map])

    results, image_entries, skipped = [], [], []
    for i, path in enumerate(tqdm(images, desc="demo", unit="img", disable=None)):
        try:
            img = read_image_any(path, format="BGR")  # 16-bit scaled, not saturated
        except Exception as e:  # any reader error: the image is skipped, the others go on
            skipped.append({"file_name": os.path.abspath(path),
                            "error": f"{type(e).__name__}: {e}"})
            logger.error(f"{path}: cannot read the image, skipped ({type(e).__name__}: {e})")
            continue
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
        cv2.imwrite(os.path.join(args.output, names[i]), drawn)
        logger.info(f"{path}: {len(instances)} detections")

    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump(results, f)
    with open(os.path.join(args.output, "images.json"), "w") as f:
        json.dump({"images": image_entries, "categories": categories, "annotations": [],
                   "skipped_images": skipped}, f)
    print(f"{len(image_entries)} images, {len(results)} detections with score >= "
          f"{args.score_thresh}: annotated images and results.json / images.json in "
          f"{args.output}")
    if skipped:  # the command's one error line (exit status 1)
        first = skipped[0]
        print(f"error: skipped {len(skipped)} unreadable image(s), listed in images.json "
              f"'skipped_images': {first['file_name']} ({first['error']})"
              + (f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""), file=sys.stderr)
    return {"results": results, "skipped": skipped}


@reports_user_errors
def run(argv=None) -> int:
    """0 when every image was processed; 1 when an unreadable image was skipped (the others'
    results are written all the same)."""
    return 1 if main(parse_args(argv))["skipped"] else 0
