"""``retina-focal gpu-checks`` (``tools/gpu_checks.py``, ``scripts/gpu_checks.sh``): on a CUDA
machine, in a few minutes, the CUDA tests, the GPU benchmark (focal loss with peak memory,
training step at COCO resolution, inference, against fvcore / torchvision / Detectron2) and
torch.compile's recompilation counts over batches of other image sizes, into one JSON file.

    retina-focal gpu-checks --output gpu.json               # everything (sized for < 8 min)
    retina-focal gpu-checks --output gpu.json --only tests  # the CUDA tests only
    retina-focal gpu-checks --output /tmp/g.json --device cpu --quick --only focal_loss

Without CUDA every section is skipped with its reason in the JSON, and the exit status is 0
(a dry run). The exit status is 1 when a test failed or a section stopped with an error.
docs/performance.md ("GPU") says what each section measures.
"""
import os
import sys

from retina_focal.analysis.assignment import anchor_count
from retina_focal.benchmark.gpu import SECTIONS, GpuChecks, run_checks
from retina_focal.benchmark.models import SOURCE_ROOT
from retina_focal.benchmark.report import save_json
from retina_focal.benchmark.timing import log
from retina_focal.cli._args import command_parser, int_at_least, positive_float
from retina_focal.cli.benchmark import add_model_options, check_model_options, settings_from_args
from retina_focal.utils.errors import reports_user_errors

__all__ = ["build_parser", "checks_from_args", "main", "parse_args", "run"]


# the defaults of the options shared with benchmark: COCO's image size (the anchors follow it)
DEFAULTS = {"repeats": 5, "warmup": 2, "image_size": (800, 1333), "anchors": None}


def build_parser():
    p = command_parser(description=__doc__.split("\n\n")[0])
    # required, checked in parse_args: placed after the overrides it is read as one of them
    p.add_argument("--output", help="the JSON report (written after each section; required)")
    add_model_options(p, DEFAULTS, anchors_help="anchors of the focal-loss batch (default: "
                                                "RetinaNet's for --images of --image-size)")
    p.add_argument("--only", choices=SECTIONS, action="append",
                   help="run only these sections (repeatable; default: all)")
    p.add_argument("--device", default="cuda",
                   help="cuda (default), or cpu: the measurements on the CPU, a smoke test of "
                        "the harness (no tests)")
    p.add_argument("--compile-batches", type=int_at_least(1),
                   help="batches of different image sizes for the recompilation counts "
                        "(default 10; 3 with --quick)")
    p.add_argument("--tests-path", default="tests",
                   help="the test folder or files (relative to the source checkout)")
    p.add_argument("-k", dest="tests_k", default="cuda", help="pytest -k expression of the tests")
    p.add_argument("--tests-timeout-s", type=positive_float, default=240)
    p.add_argument("--budget-s", type=positive_float, default=450,
                   help="stop starting sections after this many seconds (default 7.5 min)")
    return p


def parse_args(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if args.output is None and "--output" not in args.opts:  # else: named as misplaced
        p.error("the following arguments are required: --output")
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        p.error(f"--device {args.device!r}: use cuda, cuda:N or cpu")
    # without CUDA, "cuda" is a dry run (each section says why it is skipped), not an error
    check_model_options(p, args, DEFAULTS, check_device=False)
    if args.compile_batches is None:
        args.compile_batches = 3 if args.quick else 10
    if args.anchors is None:
        args.anchors = anchor_count(*args.image_size, images=args.images)
    args.only = args.only or list(SECTIONS)
    return args


def checks_from_args(args) -> GpuChecks:
    """What to run, from the command's options."""
    return GpuChecks(
        bench=settings_from_args(args), tests_root=SOURCE_ROOT,
        junit=os.path.splitext(os.path.abspath(args.output))[0] + "_tests.xml",
        device=args.device, only=tuple(args.only), compile_batches=args.compile_batches,
        tests=(args.tests_path, "-k", args.tests_k), tests_timeout_s=args.tests_timeout_s,
        budget_s=args.budget_s)


def main(args, command: str = ""):
    """Run the checks, write the JSON after each section, print the summary; return the
    report."""
    report = run_checks(checks_from_args(args), command, lambda r: save_json(r, args.output))
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
