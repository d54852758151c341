"""The GPU checks (``retina-focal gpu-checks``, ``scripts/gpu_checks.sh``): on a CUDA machine,
in one call of a few minutes, the CUDA tests, the GPU benchmark and torch.compile's
recompilation counts, all written to one JSON file.

Sections, each recorded as ``{"status": ..., ...}`` in the report:

* ``tests``: ``pytest tests -k cuda`` in a child process (a CUDA error in a test cannot leave
  the benchmark's process in a bad state), its per-test outcomes read from a JUnit XML file.
* ``focal_loss``: forward + backward of the focal loss on one COCO-scale batch (2 images of
  800x1333: ~400k anchors, 80 classes) for ours (fused: the compiled closed form; portable),
  fvcore, torchvision and Detectron2's loss path, with the peak CUDA memory of each beyond
  what was allocated before it (``torch.cuda.max_memory_allocated``).
* ``train_step``: one training iteration of RetinaFocal and Detectron2's RetinaNet (R50-FPN,
  80 classes, 2 x 800x1333, same weights; :func:`retina_focal.benchmark.models.bench_train`)
  and the peak CUDA memory of each.
* ``inference``: one image's inference, both models
  (:func:`retina_focal.benchmark.models.bench_inference`).
* ``recompiles``: how often torch.compile compiles the closed-form loss over batches of
  other image sizes (so other anchor counts): the loss alone, then RetinaFocal's training
  step, counted with ``torch._dynamo.utils.counters`` and the "recompiles" log's reasons.

Without CUDA every section is skipped with the reason (a dry run of a second or two).

One module per concern: :mod:`.environment` (versions, devices; why CUDA is missing:
:mod:`retina_focal.utils.environment`),
:mod:`.suite` (the CUDA tests), :mod:`.cuda` (the benchmarks), :mod:`.recompiles`; this one
runs the sections and writes the report.
"""
import time
import traceback
from typing import Callable, Dict

from retina_focal.benchmark.gpu.cuda import (
    anchor_count,
    bench_focal_cuda,
    bench_inference_cuda,
    bench_train_cuda,
    image_sizes,
)
from retina_focal.benchmark.gpu.environment import cpu_kernel_built, gpu_environment
from retina_focal.benchmark.gpu.recompiles import count_compiles, loss_recompiles, model_recompiles
from retina_focal.benchmark.gpu.suite import parse_junit, run_tests
from retina_focal.benchmark.timing import log
from retina_focal.utils.environment import cuda_unavailable_reason

__all__ = [
    "SECTIONS", "anchor_count", "bench_focal_cuda", "bench_train_cuda", "count_compiles",
    "cuda_unavailable_reason", "gpu_environment", "image_sizes", "parse_junit", "run_checks",
    "run_tests",
]

SECTIONS = ("tests", "focal_loss", "train_step", "inference", "recompiles")


def _section(report: Dict, name: str, fn: Callable[[], Dict], write: Callable[[], None]):
    """Run one section, record its result or its error, write the report so far."""
    log(f"\n== gpu-checks: {name}")
    start = time.perf_counter()
    try:
        result = fn()
    except Exception as e:
        result = {"status": "error", "error": f"{type(e).__name__}: {e}",
                  "traceback": traceback.format_exc()[-4000:]}
        log(result["traceback"])
    result["seconds"] = time.perf_counter() - start
    report["sections"][name] = result
    write()


def run_checks(args, command: str, write: Callable[[Dict], None]) -> Dict:
    """Every section of ``args.only``, in order, within ``args.budget_s`` seconds (the model
    sections take ``args.model_args``: ``retina-focal benchmark``'s arguments); the report
    is written with ``write(report)`` after each section (a run cut short keeps what it
    measured). ``args.device`` "cpu" runs the measurements on the CPU (a smoke test of this
    harness, no memory figures) and skips the tests."""
    start = time.perf_counter()
    report: Dict = {"environment": gpu_environment(command), "sections": {}}
    device = args.device
    no_cuda = cuda_unavailable_reason() if device.startswith("cuda") else None
    report["dry_run"] = no_cuda is not None

    def remaining():
        return args.budget_s - (time.perf_counter() - start)

    sections = {
        "tests": lambda: run_tests(args.root, args.tests, args.junit,
                                   min(args.tests_timeout_s, remaining())),
        "focal_loss": lambda: bench_focal_cuda(args, device),
        "train_step": lambda: bench_train_cuda(args.model_args, device),
        "inference": lambda: bench_inference_cuda(args.model_args, device),
        "recompiles": lambda: {
            "status": "measured", "loss": loss_recompiles(args, device),
            "training_step": model_recompiles(args.model_args, device, args.compile_batches)},
    }
    for name in SECTIONS:
        skip = None
        if name not in args.only:
            skip = "not selected (--only)"
        elif no_cuda is not None:
            skip = no_cuda
        elif name == "tests" and not device.startswith("cuda"):
            skip = f"--device {device}: the tests selected are the CUDA ones"
        elif remaining() < 20:
            skip = f"the time budget of {args.budget_s:.0f} s is spent (--budget-s)"
        if skip is None:
            _section(report, name, sections[name], lambda: write(report))
        else:
            report["sections"][name] = {"status": "skipped", "reason": skip}
            log(f"== gpu-checks: {name}: skipped ({skip})")
    report["environment"]["cpu_kernel_built_in_this_process"] = cpu_kernel_built()
    report["seconds"] = time.perf_counter() - start
    report["summary"] = summary(report)
    write(report)
    return report


def summary(report: Dict) -> Dict:
    """Per section its status; ``ok``: nothing failed or errored (skipped sections are not
    failures: a dry run is ok)."""
    statuses = {name: s["status"] for name, s in report["sections"].items()}
    return {"statuses": statuses,
            "ok": not any(s in ("failed", "error") for s in statuses.values())}
