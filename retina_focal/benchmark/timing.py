"""Timing the two sides of a comparison alike: alternating rounds after warm-up, medians of
wall and CPU time, and progress lines with an ETA (what the computation costs besides time:
:mod:`retina_focal.analysis.compute`)."""
import statistics
import time
from typing import Any, Callable, Dict, List

from retina_focal.analysis.compute import sync

__all__ = ["Progress", "alternate", "log", "ratios", "summarize", "timed"]


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
