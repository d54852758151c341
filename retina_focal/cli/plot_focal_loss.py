"""``retina-focal plot-focal-loss`` (``tools/plot_focal_loss.py``): plot the focal loss as the
paper does.

    # Figure 1 only: loss vs p_t for gamma in {0, .5, 1, 2, 5}
    retina-focal plot-focal-loss --output plots/
    # Figure 1 and Figure 4: cumulative normalised loss of a trained model's anchors
    retina-focal plot-focal-loss --output plots/ \\
        --config-file configs/Synthetic/retina_focal_R_18_FPN_synthetic.yaml \\
        [--dataset synthetic_shapes_val] [--num-images 100] MODEL.WEIGHTS model_final.pth

Writes ``figure1.png`` + ``figure1.json`` (the plotted values) and, with ``--config-file``,
``figure4.png`` + ``figure4.json``. Anchors are labelled by the model's own assigner.
"""
import argparse
import json
import logging
import os
import time
from typing import Any, Dict

from retina_focal.analysis.loss_curves import (
    anchor_probabilities,
    figure1_data,
    loss_cdf,
    plot_figure1,
    plot_figure4,
)
from retina_focal.cli._args import command_parser
from retina_focal.cli._errors import reports_user_errors
from retina_focal.config.loading import add_allow_unsafe_config_argument
from retina_focal.utils.file_io import make_output_dir

__all__ = ["build_parser", "figure4", "main", "parse_args", "run"]

logger = logging.getLogger("retina_focal.plot_focal_loss")


def _gammas(text: str):
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    if not values or any(not g >= 0 for g in values):
        raise argparse.ArgumentTypeError(f"gammas must be >= 0, got {text!r}")
    return values


def build_parser():
    p = command_parser(description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="directory for the PNG and JSON files")
    p.add_argument("--gammas", type=_gammas, default=[0.0, 0.5, 1.0, 2.0, 5.0],
                   help="Figure 1 gammas (default 0,0.5,1,2,5)")
    p.add_argument("--config-file", default=None, metavar="FILE",
                   help="config of a trained model: also draw Figure 4")
    p.add_argument("--dataset", default=None,
                   help="registered dataset for Figure 4 (default: the config's first "
                        "DATASETS.TEST)")
    p.add_argument("--num-images", type=int, default=100, help="images used for Figure 4")
    p.add_argument("--fig4-gammas", type=_gammas, default=[0.0, 0.5, 1.0, 2.0],
                   help="gammas for Figure 4 (default 0,0.5,1,2 as the paper)")
    add_allow_unsafe_config_argument(p)
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                   help="KEY VALUE config overrides, e.g. MODEL.WEIGHTS model_final.pth")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def figure4(args) -> str:
    from detectron2.data import DatasetCatalog, DatasetMapper
    from detectron2.data import transforms as T

    from retina_focal.data.datasets.coco import check_registered
    from retina_focal.engine.checkpoint import CheckpointReadError
    from retina_focal.engine.defaults import build_cfg, build_model_and_load

    cfg = build_cfg(args.config_file, args.opts, allow_unsafe=args.allow_unsafe_config)
    dataset = args.dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None)
    if dataset is None:
        raise ValueError("No dataset: pass --dataset NAME or set DATASETS.TEST in the config")
    check_registered(dataset, "--dataset" if args.dataset else "DATASETS.TEST",
                     can_register=False)
    if args.num_images < 1:
        raise ValueError(f"--num-images={args.num_images} is invalid: use 1 or more")

    if not cfg.MODEL.WEIGHTS:
        logger.warning("MODEL.WEIGHTS is empty: Figure 4 of a randomly initialised model")
    try:  # every tensor from the checkpoint: a model of another class count is an error
        model = build_model_and_load(cfg)
    except CheckpointReadError as e:  # truncated / corrupt: an error message like the others
        raise ValueError(str(e)) from e
    # test-time resizing, but keep the annotations (is_train=True) to label the anchors
    mapper = DatasetMapper(
        is_train=True,
        augmentations=[T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)],
        image_format=cfg.INPUT.FORMAT,
    )
    dicts = DatasetCatalog.get(dataset)[: args.num_images]
    batch_size = 4

    def batches():
        t0 = time.time()
        for i in range(0, len(dicts), batch_size):
            yield [mapper(dict(d)) for d in dicts[i:i + batch_size]]
            done = min(i + batch_size, len(dicts))
            eta = (time.time() - t0) / done * (len(dicts) - done)
            print(f"Figure 4: {done}/{len(dicts)} images, ETA {eta:.0f} s", flush=True)

    pos_p, neg_p = anchor_probabilities(model, batches())
    if pos_p.size == 0 or neg_p.size == 0:
        raise ValueError(f"{dataset}: the first {len(dicts)} images gave {pos_p.size} positive "
                         f"and {neg_p.size} negative samples; Figure 4 needs both")
    data = {"dataset": dataset, "num_images": len(dicts), "weights": cfg.MODEL.WEIGHTS}
    for kind, p_t in (("positive", pos_p), ("negative", 1.0 - neg_p)):
        entry: Dict[str, Any] = {"num_samples": int(p_t.size), "cdf": {}}
        for g in args.fig4_gammas:
            entry["fraction"], cdf = loss_cdf(p_t, g)
            entry["cdf"][repr(g)] = cdf.tolist()
        entry["fraction"] = entry["fraction"].tolist()
        data[kind] = entry
    path = os.path.join(args.output, "figure4.png")
    with open(os.path.join(args.output, "figure4.json"), "w") as f:
        json.dump(data, f)
    plot_figure4(data, path)
    return path


def main(args) -> int:
    """Write Figure 1 (and Figure 4 with ``--config-file``, first: a bad input stops the
    command before either figure is written); 0, or ``SystemExit("error: ...")``."""
    make_output_dir(args.output, "--output")
    if args.config_file:
        try:
            print(f"wrote {figure4(args)}")
        except (ValueError, FileNotFoundError) as e:
            raise SystemExit(f"error: {e}") from e
    data = figure1_data(args.gammas)
    with open(os.path.join(args.output, "figure1.json"), "w") as f:
        json.dump(data, f)
    plot_figure1(data, os.path.join(args.output, "figure1.png"))
    print(f"wrote {os.path.join(args.output, 'figure1.png')}")
    return 0


@reports_user_errors
def run(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    return main(args)
