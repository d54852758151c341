"""``retina-focal visualize`` (``tools/visualize_assignment.py``): draw, on one dataset image as
the model sees it at test time, the ground truth and the anchors the configured assigner makes
positive (in the colour of their ground truth) or ignored (grey).

    retina-focal visualize --config-file CFG --image 0 --output assign.png \\
        [--dataset NAME=JSON:IMAGE_DIR] [--dataset-name NAME] [KEY VALUE ...]

``--image`` is an index into the dataset or an image file name (its base name is enough).
"""
import argparse
import os

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.transforms import ResizeTransform
from detectron2.structures import Boxes, Instances
from PIL import Image, PngImagePlugin

from retina_focal.analysis.settings import AssignmentSetting, load_cfg, register_dataset_arg
from retina_focal.analysis.visualize import draw_assignment, gt_index_labels, legend_lines
from retina_focal.cli._args import command_parser, positive_float
from retina_focal.cli._errors import reports_user_errors
from retina_focal.config.loading import add_allow_unsafe_config_argument
from retina_focal.data.datasets.coco import add_dataset_argument, check_registered
from retina_focal.data.mapper import read_image_any
from retina_focal.utils.errors import DataError
from retina_focal.utils.file_io import make_output_dir


def build_parser():
    p = command_parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE")
    add_dataset_argument(p)
    p.add_argument("--dataset-name", default=None,
                   help="dataset to take the image from (default: the only --dataset, else "
                        "the config's first DATASETS.TEST)")
    p.add_argument("--image", default="0", help="index in the dataset, or image file name")
    p.add_argument("--output", default="output/assignment.png", metavar="PNG",
                   help="the PNG file to write (an existing file only if this command wrote "
                        "it)")
    p.add_argument("--scale", type=positive_float, default=None,
                   help="magnification of the drawing (default: longer side >= 640 px)")
    add_allow_unsafe_config_argument(p)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides of the config")
    return p


def pick(dicts, image):
    if image.isdigit():
        i = int(image)
        if not 0 <= i < len(dicts):
            raise SystemExit(f"error: --image {image}: the dataset has {len(dicts)} images "
                             f"(indices 0..{len(dicts) - 1})")
        return dicts[i]
    hits = [d for d in dicts if d["file_name"] == image
            or os.path.basename(d["file_name"]) == os.path.basename(image)]
    if not hits:
        raise SystemExit(f"error: --image {image!r}: no image of that file name in the dataset")
    return hits[0]


# the PNG text entry that marks a file as this command's drawing (it may be written again)
PNG_MARK = ("Software", "retina-focal visualize")


def check_output_png(path: str) -> None:
    """Refuse (:class:`DataError`, before anything is read) an ``--output`` that is not a
    ``.png`` path, is a folder, or is an existing file this command did not write (an image of
    a dataset, say)."""
    if os.path.isdir(path):
        raise DataError(f"--output {path!r} is a folder; give the PNG file to write, e.g. "
                        f"{os.path.join(path, 'assignment.png')}")
    if not path.lower().endswith(".png"):
        raise DataError(f"--output {path!r} is not a .png file name; the drawing is a PNG")
    if os.path.lexists(path):
        try:
            with Image.open(path) as im:
                ours = im.format == "PNG" and im.info.get(PNG_MARK[0]) == PNG_MARK[1]
        except (OSError, ValueError):
            ours = False
        if not ours:
            raise DataError(f"--output {path!r} exists and is not a drawing of this command; "
                            "give a new file name (it was left as it was)")


def main(args):
    """Draw the assignment of one image into ``args.output``; print its counts."""
    check_output_png(args.output)
    registered = [register_dataset_arg(spec) for spec in args.dataset]
    cfg = load_cfg(args.config_file, args.opts, allow_unsafe=args.allow_unsafe_config)
    dataset = args.dataset_name or (registered[0] if len(registered) == 1 else None) or \
        (cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else None)
    if dataset is None:
        raise SystemExit("error: no dataset: give --dataset-name, --dataset "
                         "NAME=JSON:IMAGE_DIR, or DATASETS.TEST")
    check_registered(dataset, "--dataset-name" if args.dataset_name else "the dataset")
    d = pick(DatasetCatalog.get(dataset), args.image)
    class_names = MetadataCatalog.get(dataset).get("thing_classes")
    setting = AssignmentSetting(cfg)
    size, boxes, classes, _ = setting.prepare(d)

    image = read_image_any(d["file_name"], format="RGB")  # 16-bit scaled; unreadable: named
    image = ResizeTransform(image.shape[0], image.shape[1], size[0], size[1]).apply_image(image)
    anchors = setting.anchors(size)
    m = len(boxes)
    gt = Instances(size, gt_boxes=Boxes(boxes), gt_classes=classes)
    with torch.no_grad():
        labels = gt_index_labels(*setting.assigner(anchors, gt), m)
    text = [f"{g}: {class_names[c] if class_names else c}" for g, c in enumerate(classes.tolist())]
    scale = args.scale or max(1.0, 640.0 / max(size))
    counts = (f"positive {int(((labels >= 0) & (labels < m)).sum())}, "
              f"ignored {int((labels == -1).sum())}, negative {int((labels == m).sum())}")
    drawing = draw_assignment(np.ascontiguousarray(image), boxes, text,
                              Boxes.cat(anchors).tensor, labels, scale,
                              title=f"{type(setting.assigner).__name__}: {counts}")
    make_output_dir(os.path.dirname(os.path.abspath(args.output)), "--output")
    info = PngImagePlugin.PngInfo()
    info.add_text(*PNG_MARK)
    drawing.save(args.output, format="PNG", pnginfo=info)
    print(f"{os.path.basename(d['file_name'])} at {size[1]}x{size[0]}, {setting.assigner}")
    print(counts)
    for line in legend_lines(text, labels, m):
        print("  " + line)
    print(f"wrote {args.output}")


@reports_user_errors
def run(argv=None) -> int:
    main(build_parser().parse_args(argv))
    return 0
