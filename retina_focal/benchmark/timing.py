"""Timing the two sides of a comparison alike: alternating rounds after warm-up, medians of
wall and CPU time, peak extra memory from the profiler's allocation events, and progress
lines with an ETA."""
import statistics
import time
from typing import Any, Callable, Dict, List

import torch

__all__ = ["Progress", "alternate", "conv_flops", "log", "matmul_gflops", "peak_extra_bytes",
           "ratios", "summarize", "timed"]


def log(msg: str) -> None:
    print(msg, flush=True)


class Progress:
    """Prints ``[section] step i/n, elapsed, ETA`` lines."""

    def __init__(self, section: str, total: int):
        self.section, self.total, self.done, self.start = section, total, 0, time.perf_counter()

    def step(self, what: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        log(f"  [{self.section}] {self.done}/{self.total} {what}  "
            f"(elapsed {elapsed:.0f} s, ETA {eta:.0f} s)")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], None], device: str):
    """(wall seconds, CPU seconds of this process) of one call."""
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - start, time.process_time() - cpu


def alternate(fns: Dict[str, Callable[[], None]], repeats: int, warmup: int, device: str,
              progress: Progress) -> Dict[str, List[tuple]]:
    """Run each function ``warmup`` times, then ``repeats`` rounds of all of them in turn
    (the order rotates each round); return every (wall, CPU) timing per name."""
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        progress.step(f"warm-up {name}")
    times: Dict[str, List[tuple]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            times[name].append(timed(fns[name], device))
        progress.step(f"round {r + 1}: " + ", ".join(
            f"{n} {times[n][-1][0] * 1e3:.0f} ms" for n in names))
    return times


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
    best = min(timed(product, "cpu")[0] for _ in range(repeats))
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


def summarize(times: List[tuple]) -> Dict[str, Any]:
    """Wall-clock median/min/all, and the median CPU time of the process (all its threads):
    on a machine shared with other jobs, CPU time tracks the work done far more steadily
    than wall time, which also counts the time other processes held the cores."""
    wall = [t[0] for t in times]
    cpu = [t[1] for t in times]
    return {"median_s": statistics.median(wall), "min_s": min(wall), "all_s": wall,
            "median_cpu_s": statistics.median(cpu), "all_cpu_s": cpu}


def ratios(results, ours: str, theirs: str) -> Dict[str, float]:
    """Medians over medians; and, as the conservative figure, our median over their fastest
    round (the other side's best case, for a comparison whose runs vary a lot)."""
    return {"ratio_ours_over_d2": results[ours]["median_s"] / results[theirs]["median_s"],
            "cpu_ratio_ours_over_d2": results[ours]["median_cpu_s"]
            / results[theirs]["median_cpu_s"],
            "ratio_ours_median_over_d2_min": results[ours]["median_s"]
            / results[theirs]["min_s"]}
