"""What ``retina-focal demo`` does once its arguments are parsed: run a model (a checkpoint or an
exported model, through :class:`~retina_focal.export.predictor.Predictor`) on image files and
write, into one output folder, every image annotated with Detectron2's Visualizer,
``results.json`` (the detections in COCO results format) and ``images.json`` (a COCO file
listing the images and categories those ids refer to).

It lives with the predictor, above both ``engine`` and the exported-model runtime. Its messages
name the command's options (``--output``, ``--score-thresh``, ``--coco-json``).
"""
import json
import logging
import os
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import cv2
from detectron2.data.catalog import Metadata
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.utils.visualizer import Visualizer
from tqdm import tqdm

from retina_focal.config.loading import ConfigError
from retina_focal.data.class_map import data_class_map, outputs_class_map, results_category_ids
from retina_focal.data.image_files import coco_image_ids
from retina_focal.data.mapper import read_image_any
from retina_focal.engine.checkpoint import CheckpointReadError
from retina_focal.engine.defaults import build_cfg
from retina_focal.export.predictor import Predictor
from retina_focal.export.runtime import ExportedModelError, is_exported_model
from retina_focal.utils.errors import DataError, UserError
from retina_focal.utils.file_io import make_output_dir

__all__ = [
    "DemoOutput",
    "check_output_files",
    "demo_cfg",
    "load_predictor",
    "output_names",
    "run_demo",
]

logger = logging.getLogger("retina_focal.demo")


def demo_cfg(config_file: str, opts: Sequence[str] = (), *, device: Optional[str] = None,
             score_thresh: float = 0.5, allow_unsafe: bool = False):
    """The frozen config of a demo run: ``config_file`` with ``opts`` (``KEY VALUE`` pairs;
    ``MODEL.WEIGHTS`` is the checkpoint or exported model), ``MODEL.DEVICE`` set to ``device``
    when given and ``MODEL.RETINANET.SCORE_THRESH_TEST`` to ``score_thresh``. The datasets it
    names must be registered first. An empty ``MODEL.WEIGHTS`` is a :class:`ConfigError`."""
    cfg = build_cfg(config_file, list(opts), freeze=False, allow_unsafe=allow_unsafe)
    if device:
        cfg.MODEL.DEVICE = device
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = score_thresh
    if not cfg.MODEL.WEIGHTS:
        raise ConfigError("MODEL.WEIGHTS is empty: add `MODEL.WEIGHTS path/to/model.pth`")
    cfg.freeze()
    return cfg


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


def load_predictor(cfg, score_thresh: float) -> Predictor:
    """The :class:`Predictor` of ``cfg`` (the checkpoint must fit the model exactly); what
    keeps it from loading is a :class:`UserError` (a whole-detector graph exported with a
    higher score threshold than ``score_thresh``, set by ``--score-thresh``: says which to
    use)."""
    try:
        return Predictor(cfg)  # the checkpoint must fit the model exactly
    except ExportedModelError as e:
        if e.key == "MODEL.RETINANET.SCORE_THRESH_TEST":  # set by --score-thresh
            raise ConfigError(
                f"--score-thresh {score_thresh} is below the score threshold the "
                f"whole-detector graph {cfg.MODEL.WEIGHTS!r} was exported with ({e.stored}): "
                f"use --score-thresh {e.stored} or more, or export it with "
                f"MODEL.RETINANET.SCORE_THRESH_TEST 0.0 to choose any threshold later") from e
        raise
    except (ValueError, FileNotFoundError, CheckpointReadError) as e:
        if isinstance(e, UserError):
            raise
        raise UserError(str(e)) from e


# for images of another dataset than DATASETS.TEST, when the classes do not match
_OTHER_DATASET_HINT = (
    "\nThe config's DATASETS.TEST is taken to be the dataset of the images. For images of "
    "another dataset give its categories: --coco-json FILE, or --dataset NAME=JSON:IMAGE_DIR "
    "with DATASETS.TEST \"('NAME',)\"; DATASETS.TEST \"()\" writes the checkpoint's own "
    "classes and ids")


class DemoOutput(NamedTuple):
    """What :func:`run_demo` wrote."""

    results: List[Dict[str, Any]]  # the detections, COCO results format (results.json)
    images: List[Dict[str, Any]]  # the processed images: id, file_name, height, width
    skipped: List[Dict[str, str]]  # the unreadable images: {"file_name", "error"}


def run_demo(cfg, images: Sequence[str], output: str, *, score_thresh: float,
             coco_json: Optional[str] = None) -> DemoOutput:
    """Run the model of ``cfg`` (:func:`demo_cfg`) on every image of ``images``; write into the
    folder ``output`` the annotated images (:func:`output_names`), ``results.json`` and
    ``images.json``.

    Everything is checked before anything is written (``coco_json``, ``output``, the model).
    Classes come from the checkpoint's class map and are matched by name with ``coco_json``'s
    (else the config's first DATASETS.TEST's): the same classes under other ids get that
    file's ids; other names are a :class:`DataError` showing both lists. Image ids are
    ``coco_json``'s (matched by file name), else 1, 2, ...

    An image that cannot be read is skipped (named in the log) and the others are still
    processed and written; images.json lists the skipped ones under ``skipped_images``
    (file name and error).

    Args:
        cfg: the frozen config (``MODEL.WEIGHTS``: a checkpoint or an exported model).
        images: image paths (e.g. :func:`~retina_focal.data.image_files.collect_images`).
        output: the output folder (created; one holding other files is refused).
        score_thresh: minimum score of a drawn / saved detection.
        coco_json: a COCO file to take image ids and categories from.
    """
    images = list(images)
    image_ids, gt = None, None
    if coco_json:  # read and checked before anything is written
        gt, image_ids = coco_image_ids(coco_json, images)
    names = output_names(images)
    check_output_files(output, names, images)
    predictor = load_predictor(cfg, score_thresh)
    data_map, data_desc = data_class_map(gt["categories"] if gt is not None else None,
                                         list(cfg.DATASETS.TEST))
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
    make_output_dir(output, "--output")  # after every check: a refused run writes nothing

    results: List[Dict[str, Any]] = []
    image_entries: List[Dict[str, Any]] = []
    skipped: List[Dict[str, str]] = []
    for i, path in enumerate(tqdm(images, desc="demo", unit="img", disable=None)):
        try:
            img = read_image_any(path, format="BGR")  # 16-bit scaled, not saturated
        except Exception as e:  # any reader error: the image is skipped, the others go on
            skipped.append({"file_name": os.path.abspath(path),
                            "error": f"{type(e).__name__}: {e}"})
            logger.error(f"{path}: cannot read the image, skipped ({type(e).__name__}: {e})")
            continue
        instances = predictor(img)["instances"].to("cpu")
        instances = instances[instances.scores >= score_thresh]
        image_id = image_ids[i] if image_ids else i + 1
        for det in instances_to_coco_json(instances, image_id):
            det["category_id"] = to_dataset_id[det["category_id"]]
            results.append(det)
        image_entries.append({"id": image_id, "file_name": os.path.abspath(path),
                              "height": img.shape[0], "width": img.shape[1]})

        vis = Visualizer(img[:, :, ::-1], metadata=metadata)
        drawn = vis.draw_instance_predictions(instances).get_image()[:, :, ::-1]
        cv2.imwrite(os.path.join(output, names[i]), drawn)
        logger.info(f"{path}: {len(instances)} detections")

    with open(os.path.join(output, "results.json"), "w") as f:
        json.dump(results, f)
    with open(os.path.join(output, "images.json"), "w") as f:
        json.dump({"images": image_entries, "categories": categories, "annotations": [],
                   "skipped_images": skipped}, f)
    return DemoOutput(results, image_entries, skipped)
