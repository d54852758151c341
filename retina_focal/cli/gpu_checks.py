"""``retina-focal gpu-checks`` (``tools/gpu_checks.py``, ``scripts/gpu_checks.sh``): on a CUDA
machine, in a few minutes, the CUDA tests, the GPU benchmark (focal loss with peak memory,
training step at COCO resolution, inference, against fvcore / torchvision / Detectron2) and
torch.compile's recompilation counts over batches of other image sizes, into one JSON file.

    retina-focal gpu-checks --output gpu.json               # everything (sized for < 8 min)
    retina-focal gpu-checks --output gpu.json --only tests  # the CUDA tests only
    retina-focal gpu-checks --output /tmp/g.json --device cpu --quick --only focal_loss

Without CUDA every section is skipped with its reason in the JSON, and the exit status is 0
(a dry run). The exit status is 1 when a test failed or a section stopped with an error.
The sections are described in :mod:`retina_focal.benchmark.gpu`.
"""
import argparse
import os
import sys

from retina_focal.benchmark.gpu import SECTIONS, run_checks
from retina_focal.benchmark.models import DEFAULT_CONFIG, QUICK_CONFIG, SOURCE_ROOT
from retina_focal.benchmark.report import save_json
from retina_focal.benchmark.timing import log
from retina_focal.cli import benchmark
from retina_focal.cli._args import command_parser
from retina_focal.utils.errors import reports_user_errors

__all__ = ["build_parser", "main", "parse_args", "run"]


def build_parser():
    p = command_parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", required=True, help="the JSON report (written after each section)")
    p.add_argument("--only", choices=SECTIONS, action="append",
                   help="run only these sections (repeatable; default: all)")
    p.add_argument("--device", default="cuda",
                   help="cuda (default), or cpu: the measurements on the CPU, a smoke test of "
                        "the harness (no memory figures, no tests)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, one repeat, 3 compile batches: a smoke test, not figures")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per figure (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs of each method first")
    p.add_argument("--images", type=int, default=2, help="images per batch")
    p.add_argument("--image-size", type=int, nargs=2, default=(800, 1333), metavar=("H", "W"))
    p.add_argument("--anchors", type=int, default=0,
                   help="anchors of the focal-loss batch (default: RetinaNet's for --images of "
                        "--image-size, ~400k)")
    p.add_argument("--classes", type=int, default=80)
    p.add_argument("--config-file", default=DEFAULT_CONFIG, help="model config (default R50-FPN)")
    p.add_argument("--no-gn-head", dest="gn_head", action="store_false",
                   help="keep the config's head norm instead of GroupNorm")
    p.add_argument("--compile-batches", type=int,
                   help="batches of different image sizes for the recompilation counts "
                        "(default 10; 3 with --quick)")
    p.add_argument("--tests-path", default="tests",
                   help="the test folder or files (relative to the source checkout)")
    p.add_argument("-k", dest="tests_k", default="cuda", help="pytest -k expression of the tests")
    p.add_argument("--tests-timeout-s", type=float, default=240)
    p.add_argument("--budget-s", type=float, default=450,
                   help="stop starting sections after this many seconds (default 7.5 min)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p


def parse_args(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.image_size = 1, 1, (128, 160)
        args.config_file = QUICK_CONFIG
    if args.compile_batches is None:
        args.compile_batches = 3 if args.quick else 10
    if args.repeats < 1 or args.compile_batches < 1:
        p.error("--repeats and --compile-batches must be >= 1")
    # the model sections run retina-focal benchmark's code: its own parser gives every
    # option it reads, with its defaults, and ours where they differ
    args.model_args = benchmark.parse_args(
        ["--device", args.device, "--repeats", str(args.repeats), "--warmup", str(args.warmup),
         "--images", str(args.images), "--image-size", *map(str, args.image_size),
         "--classes", str(args.classes), "--config-file", args.config_file]
        + ([] if args.gn_head else ["--no-gn-head"]) + list(args.opts))
    args.only = args.only or list(SECTIONS)
    args.root = SOURCE_ROOT
    args.tests = [args.tests_path, "-k", args.tests_k]
    args.junit = os.path.splitext(os.path.abspath(args.output))[0] + "_tests.xml"
    if not os.path.exists(os.path.join(args.root, args.tests_path)) and "tests" in args.only:
        p.error(f"--tests-path {args.tests_path!r}: not found in {args.root} (the tests need "
                f"the source checkout; leave them out with --only)")
    return args


def main(args, command: str = ""):
    """Run the checks, write the JSON after each section, print the summary; return the
    report."""
    report = run_checks(args, command, lambda r: save_json(r, args.output))
    log("\n== gpu-checks summary")
    for name, section in report["sections"].items():
        why = section.get("reason") or section.get("error") or ""
        log(f"  {name:<11} {section['status']:<8} {why}")
    log(f"wrote {args.output} ({report['seconds']:.0f} s"
        f"{', dry run: no CUDA' if report['dry_run'] else ''})")
    return report


@reports_user_errors
def run(argv=None, prog: str = "retina-focal gpu-checks") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    report = main(parse_args(argv), command=" ".join(prog.split() + argv))
    return 0 if report["summary"]["ok"] else 1
