"""What a function's computation costs, measured while it runs: the FLOPs of a model's
convolutions, the convolutions' share of a step's time, the peak memory it allocates, what
torch.compile compiles during each call, and this CPU's float32 matrix-product rate (the
ceiling those FLOPs run against). The benchmarks report these beside their timings."""
import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

__all__ = ["CONV_OPS", "conv_flops", "count_compiles", "matmul_gflops", "peak_extra_bytes",
           "profile_step", "sync"]


def _quiet_profiler() -> None:
    """Keep the profiler's own log (Kineto's) off stderr: on a machine without a GPU it prints
    an ``ERROR ... gpuGetDeviceCount failed`` line in a run that went well. A
    ``KINETO_LOG_LEVEL`` already set is kept."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")


def sync(device: str) -> None:
    """Wait for ``device``'s queued work (CUDA); nothing on the CPU."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def conv_flops(model: torch.nn.Module, run: Callable[[], None]) -> int:
    """Floating-point operations (2 per multiply-add) of every 2D convolution of ``model``
    during ``run()``: ``2 * N * C_out * H_out * W_out * (C_in / groups) * kH * kW`` each,
    counted from the shapes the convolutions actually see (all levels, both subnets)."""
    total = 0

    def count(conv, inputs, output):
        nonlocal total
        kh, kw = conv.kernel_size
        total += 2 * output.numel() * (conv.in_channels // conv.groups) * kh * kw

    handles = [m.register_forward_hook(count) for m in model.modules()
               if isinstance(m, torch.nn.Conv2d)]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return total


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The best float32 throughput (GFLOP/s) of a ``size`` x ``size`` matrix product over
    ``repeats`` runs, on PyTorch's current threads: a practical ceiling for any float32
    convolution on this CPU, measured in the same run as the figures it bounds."""
    a, b = torch.randn(size, size), torch.randn(size, size)

    def product() -> None:
        torch.mm(a, b)

    product()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def peak_extra_bytes(fn: Callable[[], None], device: str = "cpu") -> int:
    """Largest tensor memory live during ``fn()`` beyond what was live before it: on CUDA the
    caching allocator's peak, on the CPU from the allocation and free events the profiler
    records (``profile_memory=True``)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    _quiet_profiler()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        if e.device_type() == torch.device("cpu").type or str(e.device_type()).endswith("CPU"):
            live += e.nbytes()
            peak = max(peak, live)
    return peak


# The aten operators of a convolution's forward and backward passes on CPU and CUDA.
CONV_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_slow_conv2d",
            "aten::cudnn_convolution", "aten::thnn_conv2d", "aten::_convolution_depthwise2d")


def profile_step(step, device: str, runs: int = 2) -> dict:
    """Where one training step's time goes: the self time of the convolutions (forward and
    backward, :data:`CONV_OPS`) against the step's wall time, averaged over ``runs`` steps
    under ``torch.profiler``. A model whose step is mostly convolutions cannot get faster by
    more than its non-convolution share without faster convolutions."""
    from torch.profiler import ProfilerActivity, profile

    _quiet_profiler()

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(runs):
            step()
            sync(device)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6 / runs
    conv = sum(e.self_cpu_time_total for e in events if e.key in CONV_OPS) / 1e6 / runs
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
    return {"self_time_s": total, "conv_s": conv, "conv_share": conv / total if total else 0.0,
            "top_ops": {e.key: e.self_cpu_time_total / 1e6 / runs for e in top}}


class _RecompileLog(logging.Handler):
    """Collects torch's "recompiles" log records and its recompile-limit warnings."""

    def __init__(self) -> None:
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
    per_call: List[Dict[str, Any]] = []
    try:
        for label, fn in calls:
            before, n_msgs = _dynamo_counts(), len(handler.messages)
            start = time.perf_counter()
            fn()
            sync(device)
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
