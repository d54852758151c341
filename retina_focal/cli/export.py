"""``retina-focal export`` (``tools/export_model.py``): export a model, checked against eager.

RetinaFocal or Detectron2's RetinaNet (every format), the focal-RPN Faster R-CNN (TorchScript).

    retina-focal export --config-file CFG --output exported/ MODEL.WEIGHTS model.pth
    retina-focal export --format onnx --config-file CFG --output exported/ \\
        --verify-dataset synthetic_shapes_val MODEL.WEIGHTS model.pth

``--format`` (default ``torchscript``, the historical output, kept for existing deployments):

* ``torchscript``: ``<output>/model.ts``, traced through Detectron2's ``TracingAdapter``; the
  traced module takes one (C, H, W) float image (INPUT.FORMAT, 0-255) and returns flat tensors
  (boxes, classes, scores, image size). TorchScript is deprecated in PyTorch: prefer the others.
ONNX and exported-program files hold a RetinaNet-style detector (RetinaFocal, RetinaNet); a
two-stage model (Faster R-CNN with the focal RPN) exports with ``torchscript`` only.

* ``onnx``: ``<output>/model.onnx`` (opset 17, TorchScript-based ``torch.onnx.export``, H and W
  dynamic): with ``--graph detector`` (the default) the whole detector, image in, final
  detections out (``--input-dtype uint8`` for a graph taking uint8 pixels); with ``--graph
  head`` cut at the head: see :mod:`retina_focal.export.onnx`.
* ``exported-program``: ``<output>/model.pt2`` (``torch.export``), cut at the head: see
  :mod:`retina_focal.export.exported_program`.

ONNX and exported-program files run with :mod:`retina_focal.export.runtime` (which applies the
eager model's own post-processing to a head graph): ``retina-focal eval`` / ``demo`` take them as
``MODEL.WEIGHTS``. Every format is loaded back and compared with the eager model on a sample
image (exit status 1 if the detections differ); ``--verify-dataset NAME`` also runs both on
every image of a registered dataset (a built-in one, or your COCO files registered with
``--dataset NAME=JSON:IMAGE_DIR``) and prints the per-image maximum differences of boxes and
scores and both COCO APs (exit status 1 for other classes, scores beyond 1e-5, boxes beyond
1e-3 px + 1e-5 x |coordinate|, or APs 0.1 apart).

The checkpoint must fit the model exactly (a checkpoint of another class count is an error
naming MODEL.RETINANET.NUM_CLASSES). Its class map (class k of the exported model is
``class_map[k]``: ``{"id": category id in the training JSON, "name"}``) is written to
``<output>/class_map.json`` and inside the exported file (TorchScript: extra file
``class_map.json``; ONNX: ``metadata_props`` ``class_map``; exported program: extra file
``class_map.json``), ``null`` for a checkpoint that records none.
"""
import argparse
import json
import logging
import os
import shutil
import sys

import torch
from detectron2.utils.logger import setup_logger

from retina_focal.cli._args import command_parser, int_at_least
from retina_focal.cli._errors import reports_user_errors
from retina_focal.config.loading import add_allow_unsafe_config_argument
from retina_focal.data.datasets.coco import (
    add_dataset_argument,
    check_registered,
    register_dataset_specs,
)
from retina_focal.engine.checkpoint import CheckpointReadError
from retina_focal.engine.defaults import build_cfg, load_model_for_inference
from retina_focal.export.detector_graph import INPUT_DTYPES, check_whole_detector
from retina_focal.export.files import CLASS_MAP_FILE, FORMATS, export_file, read_sample_image
from retina_focal.export.graph import check_dense_detector
from retina_focal.export.onnx import GRAPHS
from retina_focal.export.torchscript import export_torchscript, sample_image
from retina_focal.utils.file_io import make_output_dir

__all__ = ["AP_TOLERANCE", "build_parser", "main", "run"]

AP_TOLERANCE = 0.1  # COCO AP points: exported against eager on --verify-dataset

# the command's logger (its name predates the other formats; tests and users filter on it)
LOGGER_NAME = "retina_focal.export.torchscript"
logger = logging.getLogger(LOGGER_NAME)


def build_parser():
    parser = command_parser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--format", choices=tuple(FORMATS), default="torchscript",
                        help="what to export (default torchscript)")
    parser.add_argument("--graph", choices=GRAPHS, default=None,
                        help="(onnx) what the file holds: the whole detector, image in, "
                             "detections out (default), or the network up to its head")
    parser.add_argument("--input-dtype", choices=tuple(INPUT_DTYPES), default=None,
                        help="(onnx --graph detector) the input image's dtype (default float32)")
    parser.add_argument("--sample-image", help="image file to trace with (default: synthetic)")
    parser.add_argument("--verify-dataset", metavar="NAME",
                        help="(onnx, exported-program) compare exported and eager detections on "
                             "every image of this registered dataset, and their COCO AP")
    parser.add_argument("--max-images", type=int_at_least(1), default=None,
                        help="with --verify-dataset: only the first N images")
    add_dataset_argument(parser)
    add_allow_unsafe_config_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser


def _check_image(cfg, model, fmt, image):
    """The sample image, grown to the exported program's smallest input when needed."""
    if fmt != "exported-program":
        return image
    from retina_focal.export.exported_program import min_side

    low = min_side(model)
    if min(image.shape[-2:]) >= low:
        return image
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (3, max(low, image.shape[1]), max(low, image.shape[2])),
                         generator=g).float()


def export_and_check(cfg, args, model, image, class_map) -> int:
    """ONNX / exported program: export, load back with the runtime, compare on the sample
    image (and ``--verify-dataset``); 0 when equal, else 1."""
    from retina_focal.export.parity import (
        ATOL,
        BOX_ATOL,
        BOX_RTOL,
        compare_instances,
        dataset_parity_verdict,
        parity_on_dataset,
        same_detections,
    )
    from retina_focal.export.runtime import load_exported

    path = export_file(cfg, model, image, args.format, args.output, class_map,
                       graph=args.graph, input_dtype=args.input_dtype)
    exported = load_exported(cfg, path).model
    image = _check_image(cfg, model, args.format, image)
    with torch.no_grad():
        inputs = [{"image": image}]
        diff = compare_instances(model(inputs)[0]["instances"],
                                 exported(inputs)[0]["instances"])
    same = same_detections(diff)
    logger.info(f"Wrote {path}; {diff['detections'][1]} detections on the sample image; equal "
                f"to eager model: {same} (max box difference {diff['max_box_difference']}, max "
                f"score difference {diff['max_score_difference']})")
    if not same:
        logger.error("The exported model's detections differ from the eager model's")
        return 1
    if not args.verify_dataset:
        return 0
    report = parity_on_dataset(cfg, model, exported, args.verify_dataset, class_map,
                               os.path.join(args.output, "verify"), max_images=args.max_images)
    print(f"\nPer-image maximum differences, exported ({args.format}) against eager, "
          f"{report['num_images']} images of {args.verify_dataset}:")
    print(f"  {'image_id':>8} {'detections':>11} {'classes':>8} {'max |box|':>11} "
          f"{'max |score|':>11}")
    for r in report["images"]:
        box, score = r["max_box_difference"], r["max_score_difference"]
        print(f"  {r['image_id']:>8} {r['detections'][1]:>11} "
              f"{'same' if r['same_classes'] else 'DIFFER':>8} "
              f"{'-' if box is None else f'{box:.2e}':>11} "
              f"{'-' if score is None else f'{score:.2e}':>11}")
    ap = report["ap"]
    print(f"Over all images: max box difference {report['max_box_difference']}, max score "
          f"difference {report['max_score_difference']}; every image the same (classes; "
          f"scores within {ATOL}; boxes within {BOX_ATOL} + {BOX_RTOL} x |coordinate|): "
          f"{report['all_same']}")
    print(f"COCO AP: eager {ap['eager']:.3f}, exported {ap['exported']:.3f}")
    same, reason = dataset_parity_verdict(report, AP_TOLERANCE)
    with open(os.path.join(args.output, "verify", "parity.json"), "w") as f:
        json.dump(dict(report, verdict={"same": same, "reason": reason}), f, indent=1)
    if not same:
        print(f"error: the exported model differs from the eager model on "
              f"{args.verify_dataset}: {reason}", file=sys.stderr)
        return 1
    print(f"Exported equals eager on {args.verify_dataset}: {reason}")
    return 0


def clear_earlier_export(output: str) -> None:
    """Remove an earlier export's files from ``output`` (every format's model file, the class
    map, the ``verify/`` report): left beside a new export they would describe another
    model."""
    earlier = [name for name in list(FORMATS.values()) + [CLASS_MAP_FILE, "verify"]
               if os.path.lexists(os.path.join(output, name))]
    for name in earlier:
        path = os.path.join(output, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    if earlier:
        logger.info(f"{output}: removed the earlier export's {', '.join(earlier)}")


def check_graph_options(args) -> None:
    """--graph and --input-dtype are ONNX options, --input-dtype a detector graph's: refuse them
    elsewhere (one error line), and fill in their defaults."""
    if args.format != "onnx":
        given = [o for o, v in (("--graph", args.graph), ("--input-dtype", args.input_dtype))
                 if v is not None]
        if given:
            verb = "apply" if len(given) > 1 else "applies"
            raise SystemExit(f"error: {' and '.join(given)} only {verb} to --format onnx (this "
                             f"export is --format {args.format})")
        return
    args.graph = args.graph or GRAPHS[0]
    if args.graph == "head" and args.input_dtype not in (None, "float32"):
        raise SystemExit("error: --input-dtype uint8 needs --graph detector (the head graph "
                         "takes float32 images)")
    args.input_dtype = args.input_dtype or "float32"


def main(args) -> int:
    """Export; 0 when the exported model's detections equal the eager model's, else 1."""
    setup_logger(name=LOGGER_NAME)
    cfg = build_cfg(args.config_file, args.opts, allow_unsafe=args.allow_unsafe_config)
    if args.verify_dataset and args.format == "torchscript":
        raise SystemExit("error: --verify-dataset needs --format onnx or exported-program")
    if args.max_images is not None and not args.verify_dataset:
        raise SystemExit("error: --max-images goes with --verify-dataset (it limits the images "
                         "checked)")
    check_graph_options(args)
    register_dataset_specs(args.dataset)
    if args.verify_dataset:  # before anything is exported or written
        check_registered(args.verify_dataset, "--verify-dataset")
    if not cfg.MODEL.WEIGHTS:
        logger.warning("MODEL.WEIGHTS is empty: exporting a randomly initialised model")
    try:
        loaded = load_model_for_inference(cfg)  # every tensor from the checkpoint
    except (ValueError, FileNotFoundError, CheckpointReadError) as e:
        raise SystemExit(f"error: {e}")
    model = loaded.model
    if args.format == "onnx" and args.graph == "detector":
        check_whole_detector(model)
    elif args.format != "torchscript":  # the graph ends at a dense head
        check_dense_detector(model, f"--format {args.format}")
    if args.format == "exported-program":  # refused before a file it cannot run is written
        from detectron2.modeling.meta_arch.dense_detector import DenseDetector

        from retina_focal.export.exported_program import min_side, test_size_too_small

        detector: DenseDetector = model  # check_dense_detector passed
        too_small = test_size_too_small(cfg, min_side(detector),
                                        detector.backbone.size_divisibility)
        if too_small:
            raise SystemExit(f"error: --format exported-program: {too_small}")
    if cfg.MODEL.WEIGHTS and loaded.class_map is None:
        logger.warning(f"The checkpoint {cfg.MODEL.WEIGHTS!r} records no class map (a Detectron2 "
                       f"or older checkpoint): {CLASS_MAP_FILE} says null; the model's "
                       f"{cfg.MODEL.RETINANET.NUM_CLASSES} classes are those it was trained on")
    class_map_text = json.dumps(loaded.class_map)

    if args.sample_image:
        image = read_sample_image(args.sample_image, cfg.INPUT.FORMAT)
    else:
        image = sample_image(cfg)
    make_output_dir(args.output, "--output")
    clear_earlier_export(args.output)
    with open(os.path.join(args.output, CLASS_MAP_FILE), "w") as f:
        f.write(class_map_text + "\n")
    if args.format != "torchscript":
        return export_and_check(cfg, args, model, image, loaded.class_map)
    check = export_torchscript(model, image, os.path.join(args.output, FORMATS["torchscript"]),
                               extra_files={CLASS_MAP_FILE: class_map_text})
    logger.info(f"Wrote {check['path']}; {check['num_detections']} detections on the sample "
                f"image; equal to eager model: {check['same']}")
    if not check["same"]:
        logger.error("The exported model's detections differ from the eager model's (largest "
                     f"box difference {check['max_box_difference']} px, score difference "
                     f"{check['max_score_difference']}; None: the counts differ)")
        return 1
    return 0


@reports_user_errors
def run(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO)
    return main(args)
