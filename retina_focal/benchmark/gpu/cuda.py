"""The GPU checks' CUDA benchmarks: the focal loss on a COCO-scale batch, one training step and
one inference of RetinaFocal against Detectron2's RetinaNet, with peak CUDA memory."""
import time
from typing import Callable, Dict, List, Tuple

import torch

from retina_focal.benchmark.timing import Progress, alternate, summarize

# RetinaNet's anchors: FPN levels P3-P7 (strides 8..128), 3 scales x 3 aspect ratios.
ANCHOR_STRIDES = (8, 16, 32, 64, 128)


ANCHORS_PER_LOCATION = 9


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
    from retina_focal.benchmark.focal_loss import describe_problem, focal_methods, focal_problem

    N, K, alpha, gamma = args.images, args.classes, 0.25, 2.0
    R = args.anchors or anchor_count(args.image_size[0], args.image_size[1], images=N)
    logits, labels = focal_problem(N, R, K, device)
    fns, leaves = focal_methods(logits, labels, K, alpha, gamma, bfloat16_logits=True)
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
    problem = {**describe_problem(logits, labels, N, R, alpha, gamma, device, args.image_size),
               "fused_first_call_s": first_call_s}
    return {"status": "measured", "problem": problem, "results": results}


def bench_train_cuda(args, device: str) -> Dict:
    """:func:`retina_focal.benchmark.models.bench_train` (which checks the two models' first
    losses agree), plus the peak CUDA memory of one training step of each model."""
    from detectron2.utils.events import EventStorage

    from retina_focal.benchmark.models import bench_train, build_models, make_batch, sgd_step

    report = bench_train(args, device)
    if device.startswith("cuda"):
        _, ours, theirs = build_models(args, device)
        batch = make_batch(args.images, args.image_size[0], args.image_size[1], args.classes,
                           device)
        for name, model in (("RetinaFocal", ours), ("Detectron2 RetinaNet", theirs)):
            model.train()
            step = sgd_step(model, batch, torch.optim.SGD(model.parameters(), lr=1e-3,
                                                          momentum=0.9))
            with EventStorage(0):
                step()  # momentum buffers and cuDNN workspaces exist after one step
                report["results"][name]["peak_mb"] = peak_cuda_bytes(step, device) / 2**20
        del ours, theirs
        torch.cuda.empty_cache()
        r = report["results"]
        report["memory_ratio_ours_over_d2"] = (r["RetinaFocal"]["peak_mb"]
                                               / r["Detectron2 RetinaNet"]["peak_mb"])
    return {"status": "measured", **report}


def bench_inference_cuda(args, device):
    from retina_focal.benchmark.models import bench_inference

    return {"status": "measured", **bench_inference(args, device)}
