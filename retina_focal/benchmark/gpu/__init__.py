"""The GPU checks (``retina-focal gpu-checks``, ``scripts/gpu_checks.sh``; docs/performance.md,
"GPU", says what each section measures): the CUDA tests
(:mod:`retina_focal.utils.pytest_run`), the benchmarks (:mod:`retina_focal.benchmark`; sizes:
:mod:`.sizes`) and torch.compile's recompilation counts (:mod:`.recompiles`), into one report;
without CUDA every section is skipped with its reason."""
import os
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Dict, Tuple

from retina_focal.benchmark.focal_loss import bench_focal
from retina_focal.benchmark.gpu.recompiles import loss_recompiles, model_recompiles
from retina_focal.benchmark.gpu.sizes import image_sizes
from retina_focal.benchmark.models import bench_inference, bench_train
from retina_focal.benchmark.settings import BenchSettings
from retina_focal.benchmark.timing import log
from retina_focal.ops._cpu_kernel import is_built as cpu_kernel_built
from retina_focal.utils.environment import cuda_unavailable_reason, gpu_environment
from retina_focal.utils.pytest_run import run_tests

__all__ = ["GpuChecks", "SECTIONS", "image_sizes", "run_checks", "summary"]

SECTIONS = ("tests", "focal_loss", "train_step", "inference", "recompiles")


@dataclass(frozen=True)
class GpuChecks:
    """What one run checks (``retina-focal gpu-checks --help`` says each option).

    Attributes:
        bench: the model and loss sections' settings (``anchors``: the focal-loss batch's).
        device: "cuda", or "cpu": a smoke test of the harness (no tests).
        only: the sections to run, of :data:`SECTIONS`.
        compile_batches: batches of other image sizes for the recompilation counts.
        tests_root, tests, junit, tests_timeout_s: where pytest runs, its selection, the
            JUnit file it writes and its time limit.
        budget_s: no section starts after this many seconds.
    """

    bench: BenchSettings
    tests_root: str
    junit: str
    device: str = "cuda"
    only: Tuple[str, ...] = SECTIONS
    compile_batches: int = 10
    tests: Tuple[str, ...] = ("tests", "-k", "cuda")
    tests_timeout_s: float = 240
    budget_s: float = 450


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


def run_checks(checks: GpuChecks, command: str, write: Callable[[Dict], None]) -> Dict:
    """Every section of ``checks.only``, in order, within ``checks.budget_s`` seconds; the
    report is written with ``write(report)`` after each section (a run cut short keeps what it
    measured)."""
    start = time.perf_counter()
    report: Dict = {"environment": gpu_environment(command, checks.bench.repeats), "sections": {}}
    # the C++ CPU focal-loss kernel is built on first use on the CPU only: the GPU checks never
    # need it (False here at the end of a run shows it)
    report["environment"]["cpu_kernel_built_in_this_process"] = cpu_kernel_built()
    device, bench = checks.device, checks.bench
    no_cuda = cuda_unavailable_reason() if device.startswith("cuda") else None
    report["dry_run"] = no_cuda is not None

    def remaining():
        return checks.budget_s - (time.perf_counter() - start)

    sections = {
        "tests": lambda: run_tests(checks.tests_root, checks.tests, checks.junit,
                                   min(checks.tests_timeout_s, remaining())),
        "focal_loss": lambda: {"status": "measured", **bench_focal(bench, device)},
        "train_step": lambda: {"status": "measured", **bench_train(bench, device)},
        "inference": lambda: {"status": "measured", **bench_inference(bench, device)},
        "recompiles": lambda: {
            "status": "measured", "loss": loss_recompiles(bench, device, checks.compile_batches),
            "training_step": model_recompiles(bench, device, checks.compile_batches)},
    }
    for name in SECTIONS:
        skip = None
        if name not in checks.only:
            skip = "not selected (--only)"
        elif no_cuda is not None:
            skip = no_cuda
        elif name == "tests" and not device.startswith("cuda"):
            skip = f"--device {device}: the tests selected are the CUDA ones"
        elif name == "tests" and not os.path.exists(os.path.join(checks.tests_root,
                                                                 checks.tests[0])):
            skip = (f"{checks.tests[0]!r} is not in {checks.tests_root}: the tests run from "
                    "the source checkout (an installed wheel has none)")
        elif remaining() < 20:
            skip = f"the time budget of {checks.budget_s:.0f} s is spent (--budget-s)"
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
