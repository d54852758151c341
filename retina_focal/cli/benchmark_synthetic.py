"""``retina-focal benchmark-synthetic`` (``tools/benchmark_synthetic.py``): the synthetic
config's data path and fused head BatchNorm against what they replace, alternating in one
process (:mod:`retina_focal.benchmark.synthetic`)."""
import argparse
import sys

import torch

from retina_focal.cli._args import command_parser, int_at_least
from retina_focal.utils.errors import reports_user_errors
from retina_focal.utils.file_io import check_output_file

__all__ = ["build_parser", "main", "run"]

DEFAULT_CONFIG = "configs/Synthetic/retina_focal_R_18_FPN_synthetic.yaml"


def build_parser(prog: str = "retina-focal benchmark-synthetic") -> argparse.ArgumentParser:
    p = command_parser(
        prog=prog,
        description="Mapper ms per image (Detectron2's DatasetMapper, ours, ours cached) and "
        "the bfloat16 synthetic training step with the fused head BatchNorm against "
        "Detectron2's, alternating in one process (~2 min on 2 cores).")
    p.add_argument("--config-file", default=DEFAULT_CONFIG)
    p.add_argument("--images", type=int_at_least(1), default=300,
                   help="training images each mapper maps")
    p.add_argument("--steps", type=int_at_least(1), default=5,
                   help="training steps per timed round")
    p.add_argument("--rounds", type=int_at_least(1), default=6,
                   help="alternating rounds of each side")
    p.add_argument("--only", choices=("mapper", "head_norm"), action="append")
    p.add_argument("--output", help="write the results as JSON to this file")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p


def main(args, command: str = "") -> dict:
    """Run the sections ``args`` asks for; write the JSON; return the report."""
    import retina_focal  # noqa: F401  (registers the synthetic datasets)
    from retina_focal.benchmark.report import write_json
    from retina_focal.benchmark.synthetic import bench_head_norm, bench_mapper
    from retina_focal.config.zoo import resolve_config_file
    from retina_focal.data.datasets.coco import check_registered
    from retina_focal.engine.defaults import build_cfg
    from retina_focal.utils.environment import measurement_environment

    if args.output is not None:  # empty, a folder, or in a folder that cannot be made:
        # refused before any work
        check_output_file(args.output, "--output")
    config_file = resolve_config_file(args.config_file)
    cfg = build_cfg(config_file, args.opts)
    check_registered(cfg.DATASETS.TRAIN, "DATASETS.TRAIN", can_register=False)
    sections = args.only or ["mapper", "head_norm"]
    if "head_norm" in sections and cfg.MODEL.RETINANET.NORM != "BN":
        overridden = "MODEL.RETINANET.NORM" in args.opts[::2]
        fix = "leave it out" if overridden else "use a config with a BN head"
        raise SystemExit(f"error: the head_norm section times the head's fused BatchNorm, but "
                         f"{'the override' if overridden else args.config_file} sets "
                         f"MODEL.RETINANET.NORM {cfg.MODEL.RETINANET.NORM!r} (both sides would "
                         f"run the same code): {fix}, or --only mapper")
    report = {"environment": measurement_environment(command, args.rounds),
              "config_file": config_file}
    print(f"benchmark-synthetic: {', '.join(sections)}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)
    if "mapper" in sections:
        report["mapper"] = bench_mapper(cfg, args.images, args.rounds)
    if "head_norm" in sections:
        report["head_norm"] = bench_head_norm(cfg, args.steps, args.rounds)
    if args.output is not None:
        write_json(report, args.output)
    return report


@reports_user_errors
def run(argv=None, prog: str = "retina-focal benchmark-synthetic") -> int:
    """``prog`` + ``argv`` is the command recorded in the report's environment."""
    argv = sys.argv[1:] if argv is None else list(argv)
    main(build_parser(prog).parse_args(argv), command=" ".join(prog.split() + argv))
    return 0
