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
"""
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from retina_focal.benchmark.timing import Progress, alternate, log, summarize
from retina_focal.utils.cpu import describe_cpu

__all__ = [
    "SECTIONS", "anchor_count", "bench_focal_cuda", "bench_train_cuda", "count_compiles",
    "cuda_unavailable_reason", "gpu_environment", "image_sizes", "parse_junit", "run_checks",
    "run_tests",
]

SECTIONS = ("tests", "focal_loss", "train_step", "inference", "recompiles")

# RetinaNet's anchors: FPN levels P3-P7 (strides 8..128), 3 scales x 3 aspect ratios.
ANCHOR_STRIDES = (8, 16, 32, 64, 128)
ANCHORS_PER_LOCATION = 9


def cuda_unavailable_reason() -> Optional[str]:
    """None when a CUDA device can be used, else why not (the reason each section records)."""
    if not torch.cuda.is_available():
        built = torch.version.cuda
        return ("no CUDA device: torch.cuda.is_available() is False (torch "
                f"{torch.__version__}, built {'with CUDA ' + built if built else 'without CUDA'})")
    return None


def _version(module: str) -> Optional[str]:
    try:
        return __import__(module).__version__
    except Exception as e:  # not installed, or broken: the report says which
        return f"unavailable ({type(e).__name__}: {e})"


def gpu_environment(command: str) -> Dict:
    """Where the checks ran: versions, the GPU, and whether a C/C++ compiler exists (Triton
    builds its launcher with one; the fused CPU kernel needs g++)."""
    import detectron2

    cuda = torch.cuda.is_available()
    return {
        "command": command,
        "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "python": platform.python_version(), "torch": torch.__version__,
        "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cuda_available": cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_capability": list(torch.cuda.get_device_capability(0)) if cuda else None,
        "gpu_memory_gib": (torch.cuda.get_device_properties(0).total_memory / 2**30
                           if cuda else None),
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "torchvision": _version("torchvision"), "triton": _version("triton"),
        "fvcore": _version("fvcore"),
        "detectron2": detectron2.__version__,
        "detectron2_path": os.path.dirname(detectron2.__file__),
        "retina_focal_path": os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        "compilers": {c: shutil.which(c) for c in ("cc", "gcc", "g++")},
        "cpu_threads": torch.get_num_threads(), "cpu": describe_cpu(),
        # the C++ CPU focal-loss kernel is built on first use on the CPU only: the GPU checks
        # never need it (False here at the end of a run shows it)
        "cpu_kernel_built_in_this_process": _cpu_kernel_built(),
    }


# ---------------------------------------------------------------------------- the tests


def parse_junit(path: str) -> Dict:
    """Outcome of each test case of a pytest ``--junitxml`` file: ``{"counts": {...},
    "tests": {nodeid: {"outcome", "message"?}}}`` (outcome passed / failed / error /
    skipped)."""
    cases: Dict[str, Dict] = {}
    for case in ET.parse(path).iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        node = f"{classname.replace('.', '/')}.py::{name}" if classname else name
        outcome, message = "passed", None
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                message = (child.get("message") or child.text or "")[:2000]
                break
        cases[node] = {"outcome": outcome, **({"message": message} if message else {})}
    counts = {k: sum(c["outcome"] == k for c in cases.values())
              for k in ("passed", "failed", "error", "skipped")}
    return {"counts": counts, "tests": cases}


def run_tests(root: str, selection: Sequence[str], junit: str, timeout_s: float) -> Dict:
    """``python -m pytest SELECTION`` in ``root``, in a child process; the outcome of each test.

    ``--continue-on-collection-errors``: a test module that cannot be imported on this machine
    (a missing optional package) is one error in the report, not a run without tests."""
    command = [sys.executable, "-m", "pytest", "-q", "-rfEs",
               "--continue-on-collection-errors", f"--junitxml={junit}", *selection]
    log(f"tests: {' '.join(command[1:])} (timeout {timeout_s:.0f} s)")
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=root, capture_output=True, text=True,
                              timeout=timeout_s)
        returncode, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        returncode = None
        output = ((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes)
                  else (e.stdout or "")) + f"\n[gpu-checks] pytest timed out after {timeout_s} s"
    result = {"command": " ".join(command[1:]), "returncode": returncode,
              "seconds": time.perf_counter() - start, "output_tail": output[-6000:]}
    if os.path.exists(junit):
        result.update(parse_junit(junit))
    print(output[-3000:], flush=True)
    counts = result.get("counts", {})
    ok = returncode == 0 and counts.get("passed", 0) > 0
    # pytest exits 0 also when every selected test was skipped: not a pass on a GPU machine
    result["status"] = "passed" if ok else "failed"
    return result


# ---------------------------------------------------------------------------- measurements


def peak_cuda_bytes(fn: Callable[[], None], device: str) -> int:
    """Largest CUDA memory allocated during ``fn()`` beyond what was allocated before it."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def anchor_count(height: int, width: int, images: int = 1) -> int:
    """RetinaNet's anchors for ``images`` images padded to ``height x width`` (P3-P7, 9 per
    location)."""
    per_image = sum(-(-height // s) * -(-width // s) for s in ANCHOR_STRIDES)
    return images * per_image * ANCHORS_PER_LOCATION


def image_sizes(count: int, largest: Tuple[int, int], seed: int = 0,
                divisibility: int = 32) -> List[Tuple[int, int]]:
    """``count`` different padded batch sizes (H, W) like multi-scale training's for images
    of at most ``largest`` (COCO's 800 x 1333): short side from 0.6x to 1x ``largest[0]``,
    aspect ratio 1 to 1.6, long side at most ``largest[1]``, both rounded up to
    ``divisibility``."""
    g = torch.Generator().manual_seed(seed)
    short_max, long_max = largest
    sizes: List[Tuple[int, int]] = []
    for _ in range(100 * count):
        s = int(torch.randint(int(short_max * 0.6), short_max + 1, (1,), generator=g))
        h, w = s, min(int(s * (1.0 + 0.6 * float(torch.rand(1, generator=g)))), long_max)
        h, w = (-(-h // divisibility) * divisibility, -(-w // divisibility) * divisibility)
        if (h, w) not in sizes:
            sizes.append((h, w))
        if len(sizes) == count:
            return sizes
    raise ValueError(f"cannot draw {count} different image sizes up to {largest}")


def bench_focal_cuda(args, device: str) -> Dict:
    """Focal loss forward + backward: times (medians of alternating rounds) and, on CUDA,
    the peak memory of each method. The same methods and problem as the CPU benchmark
    (:mod:`retina_focal.benchmark.focal_loss`)."""
    import torch.nn.functional as F
    from fvcore.nn import sigmoid_focal_loss as fvcore_eager
    from fvcore.nn import sigmoid_focal_loss_jit as fvcore_jit
    from torchvision.ops import sigmoid_focal_loss as tv_loss

    from retina_focal.benchmark.focal_loss import focal_problem
    from retina_focal.ops import sigmoid_focal_loss_labels
    from retina_focal.ops.focal_loss import resolve_impl

    N, K, alpha, gamma = args.images, args.classes, 0.25, 2.0
    R = args.anchors or anchor_count(*args.image_size, images=N)
    logits, labels = focal_problem(N, R, K, device)
    flat_labels = labels.flatten()
    valid = flat_labels >= 0
    valid_logits = logits.flatten(0, 1)[valid].contiguous()
    valid_targets = F.one_hot(flat_labels[valid], K + 1)[:, :K].to(logits.dtype)
    leaves: Dict[str, torch.Tensor] = {}

    def leaf(name, t):
        if name not in leaves:
            leaves[name] = t.detach().clone().requires_grad_()
        leaves[name].grad = None
        return leaves[name]

    inputs = {torch.float32: logits, torch.bfloat16: logits.to(torch.bfloat16)}

    def ours(impl, dtype=torch.float32):
        def run():
            x = leaf(f"ours {impl} {dtype}", inputs[dtype])
            sigmoid_focal_loss_labels(x.flatten(0, 1), flat_labels, alpha, gamma, "sum",
                                      impl=impl).backward()
        return run

    def dense(fn, name):
        def run():
            fn(leaf(name, valid_logits), valid_targets, alpha, gamma, "sum").backward()
        return run

    def detectron2_path():  # Detectron2's RetinaNet.losses, classification term
        x = leaf("d2", logits)
        mask = labels >= 0
        target = F.one_hot(labels[mask], num_classes=K + 1)[:, :-1]
        fvcore_jit(x[mask], target.to(x.dtype), alpha=alpha, gamma=gamma,
                   reduction="sum").backward()

    fused = resolve_impl(None, logits)
    fns = {
        "ours (fused)": ours(fused),
        "ours (fused), bfloat16 logits": ours(fused, torch.bfloat16),
        "ours (portable)": ours("portable"),
        "fvcore eager": dense(fvcore_eager, "fve"),
        "fvcore TorchScript": dense(fvcore_jit, "fvj"),
        "torchvision": dense(tv_loss, "tv"),
        "Detectron2 loss path": detectron2_path,
    }
    progress = Progress("focal loss", len(fns) + args.repeats)
    # the first call of the fused path compiles it: timed apart, then warm-up as usual
    start = time.perf_counter()
    fns["ours (fused)"]()
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    first_call_s = time.perf_counter() - start
    times = alternate(fns, args.repeats, warmup=args.warmup, device=device, progress=progress)
    results = {name: summarize(t) for name, t in times.items()}
    base = results["ours (fused)"]
    for name, fn in fns.items():
        r = results[name]
        r["time_vs_ours"] = r["median_s"] / base["median_s"]
        if device.startswith("cuda"):  # the inputs exist; the gradient is allocated in fn
            for x in leaves.values():
                x.grad = None
            r["peak_mb"] = peak_cuda_bytes(fn, device) / 2**20
    if "peak_mb" in base:
        for r in results.values():
            r["memory_vs_ours"] = r["peak_mb"] / base["peak_mb"]
    problem = {
        "images": N, "image_size": list(args.image_size), "anchors": R, "classes": K,
        "positive": int(((flat_labels >= 0) & (flat_labels < K)).sum()),
        "ignored": int((~valid).sum()), "alpha": alpha, "gamma": gamma,
        "dtype": str(logits.dtype).replace("torch.", ""), "device": device,
        "fused_impl": fused, "fused_first_call_s": first_call_s,
    }
    return {"status": "measured", "problem": problem, "results": results}


def bench_train_cuda(args, device: str) -> Dict:
    """:func:`retina_focal.benchmark.models.bench_train` (which checks the two models' first
    losses agree), plus the peak CUDA memory of one training step of each model."""
    from detectron2.utils.events import EventStorage

    from retina_focal.benchmark.models import bench_train, build_models, make_batch

    report = bench_train(args, device)
    if device.startswith("cuda"):
        _, ours, theirs = build_models(args, device)
        batch = make_batch(args.images, args.image_size[0], args.image_size[1], args.classes,
                           device)
        for name, model in (("RetinaFocal", ours), ("Detectron2 RetinaNet", theirs)):
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

            def step(model=model, opt=opt):
                losses = model(batch)
                opt.zero_grad(set_to_none=True)
                sum(losses.values()).backward()
                opt.step()
            with EventStorage(0):
                step()  # momentum buffers and cuDNN workspaces exist after one step
                report["results"][name]["peak_mb"] = peak_cuda_bytes(step, device) / 2**20
        del ours, theirs
        torch.cuda.empty_cache()
        r = report["results"]
        report["memory_ratio_ours_over_d2"] = (r["RetinaFocal"]["peak_mb"]
                                               / r["Detectron2 RetinaNet"]["peak_mb"])
    return {"status": "measured", **report}


# ---------------------------------------------------------------------------- recompilation


class _RecompileLog(logging.Handler):
    """Collects torch's "recompiles" log records and its recompile-limit warnings."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: List[str] = []

    def emit(self, record):
        msg = record.getMessage()
        if "recompiles" in record.name or "recompile_limit" in msg or "cache_size_limit" in msg:
            self.messages.append(msg[:600])


def _dynamo_counts() -> Dict[str, int]:
    from torch._dynamo.utils import counters

    return {"frames": counters["frames"]["total"], "frames_ok": counters["frames"]["ok"],
            "graphs": counters["stats"]["unique_graphs"]}


def _recompile_limit() -> Optional[int]:
    import torch._dynamo.config as config

    # renamed in torch 2.7 (the old name is an alias there)
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            return int(getattr(config, name))
    return None


def count_compiles(calls: Sequence[Tuple[str, Callable[[], None]]], device: str,
                   reset: bool = True) -> Dict:
    """Run each ``(label, fn)`` in turn and count what torch.compile did during each: frames
    compiled (a first compile or a recompile of a function), graphs, and the "recompiles"
    log's reasons. ``reset``: forget every earlier compilation first (``torch._dynamo.reset``),
    so that the first call's compile is counted too."""
    if reset:
        torch._dynamo.reset()
    handler = _RecompileLog()
    dynamo_logger = logging.getLogger("torch._dynamo")
    dynamo_logger.addHandler(handler)
    torch._logging.set_logs(recompiles=True)
    per_call = []
    try:
        for label, fn in calls:
            before, n_msgs = _dynamo_counts(), len(handler.messages)
            start = time.perf_counter()
            fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)
            after = _dynamo_counts()
            per_call.append({"call": label, "seconds": time.perf_counter() - start,
                             **{k: after[k] - before[k] for k in after},
                             "recompiles_logged": len(handler.messages) - n_msgs})
    finally:
        torch._logging.set_logs()
        dynamo_logger.removeHandler(handler)
    frames = [c["frames"] for c in per_call]
    return {
        "calls": per_call,
        "frames_compiled": sum(frames),
        "frames_compiled_after_first_call": sum(frames[1:]),
        "calls_that_compiled": sum(f > 0 for f in frames),
        "graphs": sum(c["graphs"] for c in per_call),
        "recompile_limit": _recompile_limit(),
        "recompile_reasons": handler.messages[:20],
    }


def loss_recompiles(args, device: str) -> Dict:
    """The fused loss (forward + backward, "sum") over batches of ``args.compile_batches``
    image sizes, then the same sizes again in bfloat16 and with per-anchor weights."""
    from retina_focal.benchmark.focal_loss import focal_problem
    from retina_focal.ops import sigmoid_focal_loss_labels

    sizes = image_sizes(args.compile_batches, args.image_size)
    calls = []
    for variant in ("float32", "bfloat16", "float32 + weights"):
        for i, (h, w) in enumerate(sizes):
            R = anchor_count(h, w, images=args.images)
            logits, labels = focal_problem(args.images, R, args.classes, device, seed=i)
            logits = logits.flatten(0, 1)
            if variant == "bfloat16":
                logits = logits.to(torch.bfloat16)
            weights = (torch.rand(R, device=device) if variant.endswith("weights") else None)

            def run(x=logits.requires_grad_(), y=labels.flatten(), weights=weights):
                sigmoid_focal_loss_labels(x, y, 0.25, 2.0, "sum", weights=weights).backward()
            calls.append((f"{variant} {args.images}x{h}x{w} ({R} anchors)", run))
    return count_compiles(calls, device)


def model_recompiles(args, device: str, batches: int) -> Dict:
    """RetinaFocal's training steps (``args.config_file``) on ``batches`` batches of other
    image sizes: what the loss compiles inside a real step."""
    from detectron2.utils.events import EventStorage

    from retina_focal.benchmark.models import build_models, make_batch

    _, model, theirs = build_models(args, device)
    del theirs  # (built alongside; only RetinaFocal is stepped here)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    calls = []
    for i, (h, w) in enumerate(image_sizes(batches, args.image_size, seed=1)):
        batch = make_batch(args.images, h, w, args.classes, device, seed=i)

        def step(batch=batch):
            with EventStorage(0):
                losses = model(batch)
                opt.zero_grad(set_to_none=True)
                sum(losses.values()).backward()
                opt.step()
        calls.append((f"training step {args.images}x{h}x{w}", step))
    return count_compiles(calls, device)


# ---------------------------------------------------------------------------- the run


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
        "inference": lambda: _inference(args.model_args, device),
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
    report["environment"]["cpu_kernel_built_in_this_process"] = _cpu_kernel_built()
    report["seconds"] = time.perf_counter() - start
    report["summary"] = summary(report)
    write(report)
    return report


def _cpu_kernel_built() -> bool:
    from retina_focal.ops import _cpu_kernel

    return _cpu_kernel._cached is not None


def _inference(args, device):
    from retina_focal.benchmark.models import bench_inference

    return {"status": "measured", **bench_inference(args, device)}


def summary(report: Dict) -> Dict:
    """Per section its status; ``ok``: nothing failed or errored (skipped sections are not
    failures: a dry run is ok)."""
    statuses = {name: s["status"] for name, s in report["sections"].items()}
    return {"statuses": statuses,
            "ok": not any(s in ("failed", "error") for s in statuses.values())}
