"""``retina-focal benchmark`` (``tools/benchmark.py``): measure RetinaFocal against Detectron2:
focal loss, a training iteration, inference (and, named with ``--only export``, the exported
model in onnxruntime).

    retina-focal benchmark --output benchmark.json            # full run, ~10-20 min, 2 cores
    retina-focal benchmark --repeats 3 --image-size 384 480   # a few minutes
    retina-focal benchmark --quick --output /tmp/b.json       # seconds: a smoke test

Both sides are measured in one process, alternating after warm-up, and reported as medians
and ratios; what each section measures and how is in docs/performance.md ("Benchmark tool")
and in each section's function in :mod:`retina_focal.benchmark`.
"""
import argparse
import sys
from dataclasses import fields
from typing import Any, Dict

import torch

from retina_focal.benchmark import (
    bench_focal,
    bench_inference,
    bench_train,
    print_report,
    write_json,
)
from retina_focal.benchmark.focal_loss import focal_params
from retina_focal.benchmark.models import DEFAULT_CONFIG, QUICK_CONFIG
from retina_focal.benchmark.settings import BenchSettings
from retina_focal.benchmark.timing import log
from retina_focal.cli._args import command_parser, int_at_least
from retina_focal.config.zoo import resolve_config_file
from retina_focal.engine.defaults import build_cfg
from retina_focal.engine.device import check_device_available
from retina_focal.modeling.detectron2_reference import check_detectron2_comparable
from retina_focal.utils.environment import measurement_environment, require_packages
from retina_focal.utils.errors import reports_user_errors
from retina_focal.utils.file_io import check_output_file

__all__ = ["build_parser", "main", "parse_args", "run"]


NUM_CLASSES_KEY = "MODEL.RETINANET.NUM_CLASSES"
# --quick's sizes: for each option the user did not give
QUICK = {"repeats": 1, "warmup": 1, "image_size": (128, 160), "anchors": 4000}
# this command's defaults of the options add_model_options shares with gpu-checks
DEFAULTS = {"repeats": 7, "warmup": 2, "image_size": (512, 640), "anchors": 240000}


def add_model_options(p: argparse.ArgumentParser, defaults: Dict[str, Any],
                      anchors_help: str) -> None:
    """The options of the model and loss sections (this command's and gpu-checks'); those of
    ``defaults`` are filled by :func:`check_model_options` (from ``--quick``'s sizes where the
    user gave none)."""
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes and one repeat, for the options not given (a smoke test of "
                        "the tool, not a measurement)")
    p.add_argument("--repeats", type=int_at_least(1),
                   help=f"timed rounds per figure (median; default {defaults['repeats']})")
    p.add_argument("--warmup", type=int_at_least(0),
                   help=f"untimed runs of each method first (default {defaults['warmup']})")
    p.add_argument("--anchors", type=int_at_least(1), help=anchors_help)
    p.add_argument("--classes", type=int_at_least(1), default=80,
                   help="classes of every section: the models (MODEL.RETINANET.NUM_CLASSES), "
                        "the training labels and the loss batch (default 80)")
    p.add_argument("--images", type=int_at_least(1), default=2, help="images per batch")
    p.add_argument("--image-size", type=int_at_least(32), nargs=2, metavar=("H", "W"),
                   help="image height and width (default %d %d)" % defaults["image_size"])
    p.add_argument("--config-file", default=None,
                   help="model config (default R50-FPN; with --quick the tiny config)")
    p.add_argument("--no-gn-head", dest="gn_head", action="store_false",
                   help="keep the config's head norm instead of GroupNorm")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")


def build_parser():
    p = command_parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", help="write the results as JSON to this file")
    add_model_options(p, DEFAULTS, anchors_help="anchors in the loss batch (default 240000)")
    p.add_argument("--only", choices=("loss", "train", "inference", "export"), action="append",
                   help="run only these sections (repeatable; export runs only when named)")
    p.add_argument("--ort-threads", type=int, default=0,
                   help="export section: onnxruntime intra-op threads (0: one per core; with "
                        "--threads N, give N to match torch's)")
    p.add_argument("--ort-opt-level", default="all",
                   choices=("disable", "basic", "extended", "all"),
                   help="export section: onnxruntime graph optimisation level")
    p.add_argument("--threads", type=int_at_least(0), default=0,
                   help="torch intra-op threads (default: torch's choice); 1 is steadier on a "
                        "machine shared with other jobs, where OpenMP barriers stall")
    p.add_argument("--train-bfloat16", action="store_true",
                   help="train section: also time both models under CPU bfloat16 autocast "
                        "(SOLVER.AMP.ENABLED on a CPU with bfloat16 instructions)")
    p.add_argument("--profile", action="store_true",
                   help="train section: profile one float32 step of each model and print the "
                        "convolutions' share (the floor of the step ratio)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--with-compile", action="store_true",
                   help="also time the closed form compiled by torch.compile (compiles ~15 s)")
    return p


def check_model_options(p: argparse.ArgumentParser, args: argparse.Namespace,
                        defaults: Dict[str, Any], check_device: bool = True) -> None:
    """Fill the options the user did not give (``--quick``'s sizes, else ``defaults``);
    refuse now, before any section runs: a missing config, a bad override (a bad focal-loss
    alpha or gamma included), ``MODEL.RETINANET.NUM_CLASSES`` among the overrides (the
    sections' classes are ``--classes``), an option placed among the overrides, a device this
    machine lacks, an ``--output`` that is a folder or whose folder cannot be made, a config
    whose RetinaFocal is not Detectron2's RetinaNet (another loss, assigner, sampler, head,
    normaliser or meta-architecture: the sections would compare different models)."""
    for name, value in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, QUICK[name] if args.quick and name in QUICK else value)
    if args.config_file is None:  # a config given with --quick is the one used
        args.config_file = QUICK_CONFIG if args.quick else DEFAULT_CONFIG
    if args.output is not None:  # empty, a folder, or in a folder that cannot be made:
        # refused before any work
        check_output_file(args.output, "--output")
    args.config_file = resolve_config_file(args.config_file)
    cfg = build_cfg(args.config_file, args.opts)  # a bad key or value: ConfigError naming it
    keys = args.opts[::2]
    if NUM_CLASSES_KEY in keys:  # --classes gives the models, batches and loss their classes
        value = args.opts[2 * keys.index(NUM_CLASSES_KEY) + 1]
        wanted = value if value.isdigit() and int(value) >= 1 else "N (an integer >= 1)"
        raise SystemExit(f"error: {NUM_CLASSES_KEY} {value} among the overrides: the classes of "
                         f"every section (models, training labels, loss batch) are --classes "
                         f"(now {args.classes}); give --classes {wanted} instead")
    # every section compares RetinaFocal with Detectron2 (or fvcore's, torchvision's and
    # Detectron2's sigmoid focal loss): a config that makes it another model is refused
    check_detectron2_comparable(cfg, "the benchmark compares RetinaFocal with Detectron2's "
                                     "RetinaNet built from the same config")
    # the loss section's alpha and gamma, from the config built here: a bad value names its key
    args.alpha, args.gamma = focal_params(cfg)
    if check_device:
        check_device_available(args.device, "--device")


def parse_args(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    check_model_options(p, args, DEFAULTS)
    if "export" in (args.only or ()):  # before the other sections run
        require_packages("--only export")
    return args


def settings_from_args(args) -> BenchSettings:
    """The sections' settings from the command's options (the settings' defaults for those
    a command does not have)."""
    values = {f.name: getattr(args, f.name) for f in fields(BenchSettings) if hasattr(args, f.name)}
    return BenchSettings(**dict(values, opts=tuple(args.opts), image_size=tuple(args.image_size)))


def main(args, command: str = ""):
    """Run the sections ``args`` asks for; print the tables, write the JSON; return the
    report."""
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = args.only or ["loss", "train", "inference"]
    settings = settings_from_args(args)
    report = {"environment": measurement_environment(command, args.repeats)}
    log(f"benchmark: {', '.join(sections)}; {args.repeats} repeats; torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads")
    if "loss" in sections:
        report["focal_loss"] = bench_focal(settings, args.device)
    if "train" in sections:
        report["train_iteration"] = bench_train(settings, args.device)
    if "inference" in sections:
        report["inference"] = bench_inference(settings, args.device)
    if "export" in sections:
        from retina_focal.benchmark.export import bench_export

        report["export"] = bench_export(settings, args.device)
    print_report(report)
    if args.output is not None:
        write_json(report, args.output)
    return report


@reports_user_errors
def run(argv=None, prog: str = "retina-focal benchmark") -> int:
    """``prog`` + ``argv`` is the command recorded in the report's environment."""
    argv = sys.argv[1:] if argv is None else list(argv)
    main(parse_args(argv), command=" ".join(prog.split() + argv))
    return 0
