"""``retina-focal export`` (``tools/export_model.py``): export a model, checked against eager.

    retina-focal export --config-file CFG --output exported/ MODEL.WEIGHTS model.pth
    retina-focal export --format onnx --config-file CFG --output exported/ \\
        --verify-dataset synthetic_shapes_val MODEL.WEIGHTS model.pth

docs/export.md says the formats, the checks (exit status 1), the class map and the refusals.
"""
import argparse
import logging

from detectron2.utils.logger import setup_logger

from retina_focal.cli._args import command_parser, int_at_least
from retina_focal.config.loading import add_allow_unsafe_config_argument
from retina_focal.data.datasets.coco import (
    add_dataset_argument,
    check_registered,
    register_dataset_specs,
)
from retina_focal.engine.checkpoint import CheckpointReadError
from retina_focal.engine.defaults import build_cfg, load_model_for_inference
from retina_focal.export.checked import (
    AP_TOLERANCE,
    LOGGER_NAME,
    check_exportable,
    check_graph_options,
    export_checked,
)
from retina_focal.export.detector_graph import INPUT_DTYPES
from retina_focal.export.files import CLASS_MAP_FILE, FORMATS, read_sample_image
from retina_focal.export.onnx import GRAPHS
from retina_focal.export.torchscript import sample_image
from retina_focal.utils.errors import reports_user_errors
from retina_focal.utils.file_io import make_output_dir

__all__ = ["AP_TOLERANCE", "build_parser", "main", "run"]

# the command's logger (export.checked.LOGGER_NAME: its name predates the other formats; tests
# and users filter on it)
logger = logging.getLogger(LOGGER_NAME)


def build_parser():
    parser = command_parser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    # required, checked in main: placed after the overrides it is read as one of them
    parser.add_argument("--output", help="output directory (required)")
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


def main(args) -> int:
    """Export; 0 when the exported model's detections equal the eager model's, else 1."""
    setup_logger(name=LOGGER_NAME)
    if args.output is None:  # an --output among the overrides: build_cfg names it
        if "--output" not in args.opts:
            raise SystemExit("error: the following arguments are required: --output")
    cfg = build_cfg(args.config_file, args.opts, allow_unsafe=args.allow_unsafe_config)
    if args.verify_dataset and args.format == "torchscript":
        raise SystemExit("error: --verify-dataset needs --format onnx or exported-program")
    if args.max_images is not None and not args.verify_dataset:
        raise SystemExit("error: --max-images goes with --verify-dataset (it limits the images "
                         "checked)")
    args.graph, args.input_dtype = check_graph_options(args.format, args.graph, args.input_dtype)
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
    check_exportable(cfg, model, args.format, args.graph)
    if cfg.MODEL.WEIGHTS and loaded.class_map is None:
        logger.warning(f"The checkpoint {cfg.MODEL.WEIGHTS!r} records no class map (a Detectron2 "
                       f"or older checkpoint): {CLASS_MAP_FILE} says null; the model's "
                       f"{cfg.MODEL.RETINANET.NUM_CLASSES} classes are those it was trained on")

    if args.sample_image:
        image = read_sample_image(args.sample_image, cfg.INPUT.FORMAT)
    else:
        image = sample_image(cfg)
    make_output_dir(args.output, "--output")
    return export_checked(cfg, model, image, loaded.class_map, args.format, args.output,
                          graph=args.graph, input_dtype=args.input_dtype,
                          verify_dataset=args.verify_dataset, max_images=args.max_images)


@reports_user_errors
def run(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO)
    return main(args)
