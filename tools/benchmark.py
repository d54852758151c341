#!/usr/bin/env python
"""Measure RetinaFocal against Detectron2: focal loss, a training iteration, inference.

    python tools/benchmark.py --output benchmark.json            # full run, ~10-20 min, 2 cores
    python tools/benchmark.py --repeats 3 --image-size 384 480   # a few minutes
    python tools/benchmark.py --quick --output /tmp/b.json       # seconds: a smoke test

Every figure is measured for both sides in the same process, alternating A/B (A B A B ...)
after warm-up runs, and reported as the median of the repeats with the ratio ours/theirs,
so a shared or noisy machine moves both sides alike. Nothing here is a pass/fail check.

1. Focal loss forward + backward on one COCO-scale batch (2 images, 240k anchors, 80
   classes, 1% positive, 5% ignored anchors): ours (``sigmoid_focal_loss_labels``, fused
   and portable) against fvcore eager, fvcore TorchScript, torchvision, and Detectron2's
   whole path (one-hot of the valid anchors' labels, copy of the valid rows, fvcore's
   TorchScript loss). fvcore and torchvision get the valid rows and their one-hot float
   targets prepared outside the timed region. Peak extra memory: the largest amount of
   CPU tensor memory live at any moment of one forward + backward beyond what existed
   before it (the gradient included), from the allocation and free events the PyTorch
   profiler records (``profile_memory=True``); the fused kernel allocates nothing outside
   PyTorch's allocator beyond a few bytes per thread.
2. One training iteration (forward, backward, SGD step) of RetinaFocal and of Detectron2's
   RetinaNet built from the same config (R50-FPN, GroupNorm head, 80 classes, 2 images of
   512x640 with 7 boxes each) and the same initial weights. Detectron2 0.6's RetinaNetHead
   cannot build a GroupNorm head (it probes the norm with one channel), so Detectron2's
   RetinaNet is given RetinaFocal's head module (same parameters and state-dict keys):
   backbone, head, anchors and box loss are the same modules, and the two sides differ in
   anchor labelling and the classification-loss path only.
3. Inference latency on one 512x640 image, both models with the same weights, with the
   classification bias and weights set so that scores look like a trained model's (most
   anchors low, many above the 0.05 test threshold, every level filling its top-1000
   candidates). Both run Detectron2's post-processing (RetinaFocal inherits it).

Results are printed as a table and written as JSON with ``--output``.
"""
import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "COCO-Detection", "retina_focal_R_50_FPN_1x.yaml")
QUICK_CONFIG = os.path.join(REPO, "configs", "Synthetic", "retina_focal_R_18_FPN_tiny.yaml")


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
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            times[name].append(timed(fns[name], device))
        progress.step(f"round {r + 1}: " + ", ".join(
            f"{n} {times[n][-1][0] * 1e3:.0f} ms" for n in names))
    return times


def peak_extra_bytes(fn: Callable[[], None]) -> int:
    """Largest CPU tensor memory live during ``fn()`` beyond what was live before it."""
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


def summarize(times: List[tuple]) -> Dict[str, object]:
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


# ----------------------------------------------------------------------------------------
# 1. focal loss
# ----------------------------------------------------------------------------------------
def focal_problem(num_images, anchors, num_classes, device, seed=0):
    """Logits like a detector's early in training (mostly confident negatives) and labels with
    1% positive and 5% ignored anchors."""
    g = torch.Generator().manual_seed(seed)
    per_image = anchors // num_images
    logits = torch.randn(num_images, per_image, num_classes, generator=g) * 1.5 - 4.0
    u = torch.rand(num_images, per_image, generator=g)
    labels = torch.full((num_images, per_image), num_classes, dtype=torch.long)
    pos = u < 0.01
    labels[pos] = torch.randint(0, num_classes, (int(pos.sum()),), generator=g)
    labels[(u >= 0.01) & (u < 0.06)] = -1
    return logits.to(device), labels.to(device)


def bench_focal(args, device):
    from fvcore.nn import sigmoid_focal_loss as fvcore_eager
    from fvcore.nn import sigmoid_focal_loss_jit as fvcore_jit
    from torchvision.ops import sigmoid_focal_loss as tv_loss

    from retina_focal.ops import sigmoid_focal_loss_labels
    from retina_focal.ops.focal_loss import resolve_impl

    N, R, K = args.images, args.anchors, args.classes
    alpha, gamma = 0.25, 2.0
    logits, labels = focal_problem(N, R, K, device)
    flat_labels = labels.flatten()
    valid = flat_labels >= 0
    valid_logits = logits.flatten(0, 1)[valid].contiguous()
    valid_targets = F.one_hot(flat_labels[valid], K + 1)[:, :K].to(logits.dtype)
    leaves = {}

    def leaf(name, t):
        x = leaves.get(name)
        if x is None:
            x = leaves[name] = t.detach().clone().requires_grad_()
        x.grad = None
        return x

    def ours(impl):
        def run():
            x = leaf("ours", logits)
            sigmoid_focal_loss_labels(x.flatten(0, 1), flat_labels, alpha, gamma, "sum",
                                      impl=impl).backward()
        return run

    def dense(fn, name):
        def run():
            x = leaf(name, valid_logits)
            fn(x, valid_targets, alpha, gamma, "sum").backward()
        return run

    def detectron2_path():
        # what Detectron2's RetinaNet.losses does for the classification term
        x = leaf("d2", logits)
        valid_mask = labels >= 0
        target = F.one_hot(labels[valid_mask], num_classes=K + 1)[:, :-1]
        fvcore_jit(x[valid_mask], target.to(x.dtype), alpha=alpha, gamma=gamma,
                   reduction="sum").backward()

    fns = {
        "ours (fused)": ours("fused" if resolve_impl(None, logits) == "fused" else "portable"),
        "ours (portable)": ours("portable"),
        "fvcore eager": dense(fvcore_eager, "fve"),
        "fvcore TorchScript": dense(fvcore_jit, "fvj"),
        "torchvision": dense(tv_loss, "tv"),
        "Detectron2 loss path": detectron2_path,
    }
    if args.with_compile:
        fns["closed form, torch.compile"] = compiled_closed_form(logits, flat_labels, alpha, gamma)
    progress = Progress("focal loss", len(fns) * 2 + args.repeats)  # warm-up, rounds, memory
    times = alternate(fns, args.repeats, warmup=args.warmup, device=device, progress=progress)
    results = {}
    for name, fn in fns.items():
        results[name] = summarize(times[name])
        if device == "cpu":
            results[name]["peak_extra_mb"] = peak_extra_bytes(fn) / 2**20
        progress.step(f"memory {name}")
    ours_s = results["ours (fused)"]["median_s"]
    for name, r in results.items():
        r["time_vs_ours"] = r["median_s"] / ours_s
        r["cpu_time_vs_ours"] = r["median_cpu_s"] / results["ours (fused)"]["median_cpu_s"]
        if "peak_extra_mb" in r:
            r["memory_vs_ours"] = r["peak_extra_mb"] / results["ours (fused)"]["peak_extra_mb"]
    problem = {
        "images": N, "anchors": R, "classes": K,
        "positive": int(((flat_labels >= 0) & (flat_labels < K)).sum()),
        "ignored": int((~valid).sum()), "alpha": alpha, "gamma": gamma,
        "dtype": str(logits.dtype).replace("torch.", ""), "device": device,
        "fused_impl": resolve_impl(None, logits),
    }
    return {"problem": problem, "results": results}


def compiled_closed_form(logits, flat_labels, alpha, gamma):
    """The alternative to the C++ kernel that was measured against it: the same closed form
    (loss pass, gradient pass) compiled by torch.compile/inductor into C++/OpenMP loops."""
    from retina_focal.ops._fused import _closed_form_terms, alpha_vectors

    terms = torch.compile(_closed_form_terms, dynamic=False)
    x = logits.flatten(0, 1).contiguous()
    ap, an = alpha_vectors(alpha, x.shape[1], x.dtype, x.device)

    def run():
        terms(x, flat_labels, ap, an, None, gamma, False).sum()
        terms(x, flat_labels, ap, an, None, gamma, True)
    return run


# ----------------------------------------------------------------------------------------
# 2./3. models
# ----------------------------------------------------------------------------------------
def build_models(args, device):
    """RetinaFocal from the config and Detectron2's RetinaNet with the same modules/weights."""
    from detectron2.config import get_cfg
    from detectron2.modeling import RetinaNet, build_backbone
    from detectron2.modeling.matcher import Matcher

    from retina_focal import add_retina_focal_config
    from retina_focal.modeling.meta_arch import RetinaFocal

    cfg = get_cfg()
    add_retina_focal_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = device
    cfg.MODEL.RETINANET.NUM_CLASSES = args.classes
    if args.gn_head:
        cfg.MODEL.RETINANET.NORM = "GN"
    cfg.merge_from_list(args.opts)
    torch.manual_seed(0)
    ours = RetinaFocal(cfg).to(device)
    # Detectron2's RetinaNet as Detectron2 builds it from the same config (its own backbone
    # builder, RetinaNetHead and Matcher, NCHW), with our weights: the same parameters.
    kwargs = RetinaFocal.from_config(cfg)
    for key in ("cls_loss", "assigner", "sampler", "normalizer", "memory_format",
                "fold_frozen_bn", "head", "backbone"):  # RetinaFocal-only or rebuilt below
        kwargs.pop(key, None)
    rcfg = cfg.MODEL.RETINANET
    backbone = build_backbone(cfg)
    shapes = [backbone.output_shape()[f] for f in rcfg.IN_FEATURES]
    kwargs.update(
        backbone=backbone, head=detectron2_head(cfg, shapes, ours.head),
        anchor_matcher=Matcher(rcfg.IOU_THRESHOLDS, rcfg.IOU_LABELS,
                               allow_low_quality_matches=True),
    )
    theirs = RetinaNet(**kwargs).to(device)
    theirs.load_state_dict(ours.state_dict())
    return cfg, ours, theirs


def detectron2_head(cfg, shapes, our_head):
    """Detectron2's RetinaNetHead for ``cfg``. Detectron2 0.6 cannot build it with a norm
    whose 1-channel instance is invalid (its ``get_norm(norm, 1)`` type check fails for "GN"),
    so there it is the same layers in the same order (conv, norm, ReLU(inplace=False)), NCHW,
    which is what RetinaNetHead builds in later Detectron2 versions."""
    from detectron2.modeling.meta_arch.retinanet import RetinaNetHead

    try:
        return RetinaNetHead(cfg, shapes)
    except ValueError:
        head = copy.deepcopy(our_head).to(memory_format=torch.contiguous_format)
        for module in head.modules():
            if isinstance(module, torch.nn.ReLU):
                module.inplace = False
        return head


def make_batch(num_images, height, width, num_classes, device, boxes_per_image=7, seed=0):
    from detectron2.structures import Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(num_images):
        xy = torch.rand(boxes_per_image, 2, generator=g) * torch.tensor([width * 0.7, height * 0.7])
        wh = (torch.rand(boxes_per_image, 2, generator=g) * 0.3 + 0.05) * torch.tensor(
            [width, height])
        inst = Instances((height, width))
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], 1))
        inst.gt_classes = torch.randint(0, num_classes, (boxes_per_image,), generator=g)
        image = torch.randint(0, 256, (3, height, width), generator=g, dtype=torch.uint8)
        batch.append({"image": image.to(device), "instances": inst.to(device),
                      "height": height, "width": width})
    return batch


def bench_train(args, device):
    from detectron2.utils.events import EventStorage

    cfg, ours, theirs = build_models(args, device)
    batch = make_batch(args.images, args.image_size[0], args.image_size[1], args.classes, device)
    steps = {}
    for name, model in (("RetinaFocal", ours), ("Detectron2 RetinaNet", theirs)):
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)

        def step(model=model, opt=opt):
            losses = model(batch)
            total = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
        steps[name] = step
    # same weights and batch: the first losses must agree (Detectron2 parity)
    with EventStorage(0), torch.no_grad():
        first = {n: {k: float(v) for k, v in m(batch).items()}
                 for n, m in (("RetinaFocal", ours), ("Detectron2 RetinaNet", theirs))}
    diff = max(abs(first["RetinaFocal"][k] - first["Detectron2 RetinaNet"][k])
               / max(abs(first["Detectron2 RetinaNet"][k]), 1e-12)
               for k in first["RetinaFocal"])
    if diff > 1e-4:
        raise RuntimeError(f"The two models' first losses differ (max relative {diff:.2e}): "
                           f"{first}; the comparison would not be of the same computation")
    progress = Progress("train iteration", len(steps) + args.repeats)
    with EventStorage(0):
        # three warm-up steps each: Detectron2's TorchScript focal loss is re-optimised by
        # the profiling executor over its first calls, and we time it at its best
        times = alternate(steps, args.repeats, warmup=max(3, args.warmup), device=device,
                          progress=progress)
    results = {name: summarize(t) for name, t in times.items()}
    return {
        **ratios(results, "RetinaFocal", "Detectron2 RetinaNet"),
        "setup": {"config": os.path.relpath(args.config_file, REPO), "images": args.images,
                  "image_size": list(args.image_size), "classes": args.classes,
                  "head_norm": cfg.MODEL.RETINANET.NORM, "device": device,
                  "memory_format": ours.memory_format, "first_losses": first,
                  "first_losses_max_relative_difference": diff},
        "results": results,
    }


def trained_like_scores(model, prior_bias=-4.0, spread=1.0, seed=0):
    """Set the class-score layer so that logits spread around ``prior_bias`` (std ~``spread``):
    most anchors score low, a good share score above the test threshold."""
    g = torch.Generator().manual_seed(seed)
    conv = model.head.cls_score
    with torch.no_grad():
        w = torch.randn(conv.weight.shape, generator=g)
        conv.weight.copy_(w / (w[0].numel() ** 0.5) * spread * 4)
        conv.bias.copy_(torch.full(conv.bias.shape, prior_bias)
                        + torch.randn(conv.bias.shape, generator=g) * 0.5)


def bench_inference(args, device):
    cfg, ours, theirs = build_models(args, device)
    trained_like_scores(ours)
    theirs.load_state_dict(ours.state_dict())
    image = make_batch(1, args.image_size[0], args.image_size[1], args.classes, device, seed=1)
    image = [{k: v for k, v in image[0].items() if k != "instances"}]
    ours.eval()
    theirs.eval()
    outs = {}

    def infer(model, name):
        def run():
            with torch.no_grad():
                outs[name] = model(image)[0]["instances"]
        return run

    fns = {"RetinaFocal": infer(ours, "RetinaFocal"),
           "Detectron2 RetinaNet": infer(theirs, "Detectron2 RetinaNet")}
    progress = Progress("inference", len(fns) + args.repeats)
    times = alternate(fns, args.repeats, warmup=1, device=device, progress=progress)
    # candidates above the score threshold, as the post-processing sees them
    with torch.no_grad():
        images = ours.preprocess_image(image)
        features = [ours.backbone(images.tensor)[f] for f in ours.head_in_features]
        logits, _ = ours.head(features)
        scores = torch.cat([x.sigmoid().flatten() for x in logits])
    results = {name: summarize(t) for name, t in times.items()}
    results["RetinaFocal"]["detections"] = len(outs["RetinaFocal"])
    results["Detectron2 RetinaNet"]["detections"] = len(outs["Detectron2 RetinaNet"])
    return {
        **ratios(results, "RetinaFocal", "Detectron2 RetinaNet"),
        "setup": {"image_size": list(args.image_size), "classes": args.classes,
                  "score_thresh": cfg.MODEL.RETINANET.SCORE_THRESH_TEST,
                  "fraction_above_thresh": float((scores > cfg.MODEL.RETINANET.SCORE_THRESH_TEST)
                                                 .float().mean()),
                  "same_detections": bool(torch.equal(outs["RetinaFocal"].pred_classes,
                                                      outs["Detectron2 RetinaNet"].pred_classes)),
                  "device": device},
        "results": results,
    }


# ----------------------------------------------------------------------------------------
def print_report(report) -> None:
    log("")
    if "focal_loss" in report:
        fl = report["focal_loss"]
        p = fl["problem"]
        log(f"Focal loss forward+backward: {p['images']} images, {p['anchors']} anchors, "
            f"{p['classes']} classes ({p['positive']} positive, {p['ignored']} ignored), "
            f"{p['dtype']} on {p['device']}")
        log(f"  {'method':<26} {'median ms':>10} {'x ours':>7} {'CPU ms':>9} {'x ours':>7} "
            f"{'peak extra MB':>14} {'x ours':>7}")
        for name, r in fl["results"].items():
            mem = r.get("peak_extra_mb")
            mem_s = f"{mem:14.1f} {r['memory_vs_ours']:7.2f}" if mem is not None else ""
            log(f"  {name:<26} {r['median_s'] * 1e3:10.1f} {r['time_vs_ours']:7.2f} "
                f"{r['median_cpu_s'] * 1e3:9.1f} {r['cpu_time_vs_ours']:7.2f} {mem_s}")
    for key, title in (("train_iteration", "Training iteration (fwd+bwd+SGD)"),
                       ("inference", "Inference, one image")):
        if key not in report:
            continue
        sec = report[key]
        s = sec["setup"]
        log(f"{title}: {s.get('config', '')} {s['image_size']} on {s['device']}")
        for name, r in sec["results"].items():
            log(f"  {name:<22} {r['median_s'] * 1e3:10.1f} ms (min {r['min_s'] * 1e3:.1f}), "
                f"CPU {r['median_cpu_s'] * 1e3:.1f} ms")
        log(f"  ratio RetinaFocal / Detectron2: {sec['ratio_ours_over_d2']:.3f} wall, "
            f"{sec['cpu_ratio_ours_over_d2']:.3f} CPU time; our median over their fastest "
            f"round {sec['ratio_ours_median_over_d2_min']:.3f}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", help="write the results as JSON to this file")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes and one repeat (a smoke test of the tool, not a measurement)")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds per figure (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs of each loss first")
    p.add_argument("--anchors", type=int, default=240000, help="anchors in the loss batch")
    p.add_argument("--classes", type=int, default=80)
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--image-size", type=int, nargs=2, default=(512, 640), metavar=("H", "W"))
    p.add_argument("--config-file", default=CONFIG, help="model config (default R50-FPN)")
    p.add_argument("--no-gn-head", dest="gn_head", action="store_false",
                   help="keep the config's head norm instead of GroupNorm")
    p.add_argument("--only", choices=("loss", "train", "inference"), action="append",
                   help="run only these sections (repeatable)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (default: torch's choice); 1 is steadier on a "
                        "machine shared with other jobs, where OpenMP barriers stall")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--with-compile", action="store_true",
                   help="also time the closed form compiled by torch.compile (compiles ~15 s)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.anchors, args.image_size = 1, 1, 4000, (128, 160)
        args.config_file = QUICK_CONFIG
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    import retina_focal  # noqa: F401  (registers RetinaFocal and its components)

    if args.threads:
        torch.set_num_threads(args.threads)
    sections = args.only or ["loss", "train", "inference"]
    report = {"environment": {
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
        "command": " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
        "repeats": args.repeats, "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }}
    log(f"benchmark: {', '.join(sections)}; {args.repeats} repeats; torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads")
    if "loss" in sections:
        report["focal_loss"] = bench_focal(args, args.device)
    if "train" in sections:
        report["train_iteration"] = bench_train(args, args.device)
    if "inference" in sections:
        report["inference"] = bench_inference(args, args.device)
    print_report(report)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)
        log(f"wrote {args.output}")
    return report


if __name__ == "__main__":
    main()
