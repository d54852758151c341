"""``retina-focal demo`` (``tools/demo.py``): run a trained model on images and look at what it
finds.

    retina-focal demo --config-file CFG --input img.jpg photos/ 'more/*.png' \\
        --output demo_out/ --score-thresh 0.3 --device cpu MODEL.WEIGHTS model_final.pth

docs/tools.md ("Demo") says what it writes, how it matches classes and when it exits with 1.
"""
import argparse
import re
import sys

from detectron2.utils.logger import setup_logger

from retina_focal.cli._args import command_parser
from retina_focal.config.loading import add_allow_unsafe_config_argument
from retina_focal.data.datasets.coco import add_dataset_argument, register_dataset_specs
from retina_focal.data.image_files import collect_images
from retina_focal.export.demo import demo_cfg, run_demo
from retina_focal.utils.errors import reports_user_errors

__all__ = ["build_parser", "main", "parse_args", "run"]

_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


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
    register_dataset_specs(args.dataset)
    cfg = demo_cfg(args.config_file, args.opts, device=args.device,
                   score_thresh=args.score_thresh, allow_unsafe=args.allow_unsafe_config)
    images = collect_images(args.input)
    out = run_demo(cfg, images, args.output, score_thresh=args.score_thresh,
                   coco_json=args.coco_json)
    results, skipped = out.results, out.skipped
    print(f"{len(out.images)} images, {len(results)} detections with score >= "
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
