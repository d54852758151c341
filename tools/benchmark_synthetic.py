#!/usr/bin/env python
"""The synthetic config's data path and fused head BatchNorm against what they replace,
alternating in one process (retina_focal.benchmark.synthetic):

    python tools/benchmark_synthetic.py --output synthetic.json       # ~2 min on 2 cores
"""
import argparse
import json
import os
import sys

import torch

from retina_focal.benchmark.report import environment
from retina_focal.benchmark.synthetic import bench_head_norm, bench_mapper
from retina_focal.engine.defaults import build_cfg

DEFAULT_CONFIG = "configs/Synthetic/retina_focal_R_18_FPN_synthetic.yaml"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default=DEFAULT_CONFIG)
    p.add_argument("--images", type=int, default=300, help="training images each mapper maps")
    p.add_argument("--steps", type=int, default=5, help="training steps per timed round")
    p.add_argument("--rounds", type=int, default=6, help="alternating rounds of each side")
    p.add_argument("--only", choices=("mapper", "head_norm"), action="append")
    p.add_argument("--output", help="write the results as JSON to this file")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    if min(args.images, args.steps, args.rounds) < 1:
        p.error("--images, --steps and --rounds must be >= 1")
    import retina_focal  # noqa: F401  (registers the synthetic datasets)

    cfg = build_cfg(args.config_file, args.opts)
    argv = sys.argv[1:] if argv is None else list(argv)
    report = {"environment": environment(" ".join(["tools/benchmark_synthetic.py"] + argv),
                                         args.rounds),
              "config_file": args.config_file}
    sections = args.only or ["mapper", "head_norm"]
    print(f"benchmark_synthetic: {', '.join(sections)}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)
    if "mapper" in sections:
        report["mapper"] = bench_mapper(cfg, args.images, args.rounds)
    if "head_norm" in sections:
        report["head_norm"] = bench_head_norm(cfg, args.steps, args.rounds)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
