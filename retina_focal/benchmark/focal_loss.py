"""Section 1: the focal loss forward + backward on one COCO-scale batch, ours (fused and
portable) against fvcore (eager and TorchScript), torchvision and Detectron2's whole loss path.
"""
from typing import Any, Callable, Dict, Tuple

import torch
import torch.nn.functional as F

from retina_focal.analysis.compute import peak_extra_bytes
from retina_focal.benchmark.settings import BenchSettings
from retina_focal.benchmark.timing import Progress, alternate, summarize, timed

__all__ = ["bench_focal", "compiled_closed_form", "describe_problem", "focal_methods",
           "focal_params", "focal_problem"]


def focal_params(cfg: Any) -> Tuple[float, float]:
    """The focal loss's ``(alpha, gamma)`` of the YAML config ``cfg``
    (``MODEL.RETINANET.FOCAL_LOSS_ALPHA`` / ``_GAMMA``; Detectron2's defaults, the paper's
    0.25 and 2.0, unless the config or its overrides change them), read by the loss the model
    builds from it: a bad value, or a bad ``MODEL.RETINA_FOCAL.FOCAL_LOSS_IMPL`` (the section
    times both implementations, whatever it says), is the model's error naming its key. A
    per-class alpha is refused before (``check_detectron2_comparable``)."""
    from retina_focal.modeling.losses.focal import SigmoidFocalLoss

    loss = SigmoidFocalLoss(cfg)
    assert loss.alpha is not None  # a scalar: ALPHA_PER_CLASS is refused before
    return float(loss.alpha), loss.gamma


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


def focal_methods(logits: torch.Tensor, labels: torch.Tensor, num_classes: int, alpha: float,
                  gamma: float, bfloat16_logits: bool = False
                  ) -> Tuple[Dict[str, Callable[[], None]], Dict[str, torch.Tensor]]:
    """The methods both focal-loss benchmarks time (this one and the GPU checks'), each a
    forward + backward (reduction "sum") of ``logits`` (N, R/N, K) against ``labels``: ours
    (fused and portable; with ``bfloat16_logits`` also fused on bfloat16 logits), fvcore eager
    and TorchScript and torchvision (given the valid rows and their one-hot targets, prepared
    here, outside the timed region) and Detectron2's whole loss path. Returns the functions by
    name, in the report's order, and the leaf tensors they differentiate (by name: a caller may
    clear their gradients)."""
    from fvcore.nn import sigmoid_focal_loss as fvcore_eager
    from fvcore.nn import sigmoid_focal_loss_jit as fvcore_jit
    from torchvision.ops import sigmoid_focal_loss as tv_loss

    from retina_focal.ops import sigmoid_focal_loss_labels
    from retina_focal.ops.focal_loss import resolve_impl

    K = num_classes
    flat_labels = labels.flatten()
    valid = flat_labels >= 0
    valid_logits = logits.flatten(0, 1)[valid].contiguous()
    valid_targets = F.one_hot(flat_labels[valid], K + 1)[:, :K].to(logits.dtype)
    leaves: Dict[str, torch.Tensor] = {}

    def leaf(name, t):
        x = leaves.get(name)
        if x is None:
            x = leaves[name] = t.detach().clone().requires_grad_()
        x.grad = None
        return x

    inputs = {torch.float32: logits}
    if bfloat16_logits:
        inputs[torch.bfloat16] = logits.to(torch.bfloat16)

    def ours(impl, dtype=torch.float32):
        def run():
            x = leaf(f"ours {impl} {dtype}", inputs[dtype])
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

    fused = resolve_impl(None, logits)
    fns = {"ours (fused)": ours(fused)}
    if bfloat16_logits:
        fns["ours (fused), bfloat16 logits"] = ours(fused, torch.bfloat16)
    fns.update({
        "ours (portable)": ours("portable"),
        "fvcore eager": dense(fvcore_eager, "fve"),
        "fvcore TorchScript": dense(fvcore_jit, "fvj"),
        "torchvision": dense(tv_loss, "tv"),
        "Detectron2 loss path": detectron2_path,
    })
    return fns, leaves


def describe_problem(logits: torch.Tensor, labels: torch.Tensor, images: int, anchors: int,
                     alpha: float, gamma: float, device: str) -> Dict[str, Any]:
    """The report's ``problem``: the batch's sizes and label counts, the loss's parameters and
    the fused implementation these logits get."""
    from retina_focal.ops.focal_loss import resolve_impl

    K = logits.shape[-1]
    flat_labels = labels.flatten()
    return {
        "images": images, "anchors": anchors, "classes": K,
        "positive": int(((flat_labels >= 0) & (flat_labels < K)).sum()),
        "ignored": int((flat_labels < 0).sum()), "alpha": alpha, "gamma": gamma,
        "dtype": str(logits.dtype).replace("torch.", ""), "device": device,
        "fused_impl": resolve_impl(None, logits),
    }


def bench_focal(settings: BenchSettings, device: str) -> Dict[str, Any]:
    """Every method of :func:`focal_methods` (on CUDA also ours on bfloat16 logits; with
    ``settings.with_compile`` the compiled closed form) on one batch of ``settings.images``
    images, ``settings.anchors`` anchors and ``settings.classes`` classes, with
    ``settings.alpha`` and ``settings.gamma`` (the command's: :func:`focal_params` of the config
    and its overrides): the medians of
    alternating rounds and the peak extra memory of one forward + backward
    (:func:`~retina_focal.analysis.compute.peak_extra_bytes`), each also against ours (fused).
    The fused path's first call (on CUDA, its compilation) is timed apart, before the
    warm-up."""
    N, R, K = settings.images, settings.anchors, settings.classes
    alpha, gamma = settings.alpha, settings.gamma
    logits, labels = focal_problem(N, R, K, device)
    fns, leaves = focal_methods(logits, labels, K, alpha, gamma,
                                bfloat16_logits=device.startswith("cuda"))
    if settings.with_compile:
        fns["closed form, torch.compile"] = compiled_closed_form(logits, labels.flatten(), alpha,
                                                                 gamma)
    first_call_s = timed(fns["ours (fused)"], device)[0]
    progress = Progress("focal loss", len(fns) * 2 + settings.repeats)  # warm-up, rounds, memory
    times = alternate(fns, settings.repeats, warmup=settings.warmup, device=device,
                      progress=progress)
    results = {}
    for name, fn in fns.items():
        results[name] = summarize(times[name])
        for x in leaves.values():  # the inputs exist; the gradient is allocated in fn
            x.grad = None
        results[name]["peak_extra_mb"] = peak_extra_bytes(fn, device) / 2**20
        progress.step(f"memory {name}")
    base = results["ours (fused)"]
    for r in results.values():
        r["time_vs_ours"] = r["median_s"] / base["median_s"]
        r["cpu_time_vs_ours"] = r["median_cpu_s"] / base["median_cpu_s"]
        r["memory_vs_ours"] = r["peak_extra_mb"] / base["peak_extra_mb"]
    problem = {**describe_problem(logits, labels, N, R, alpha, gamma, device),
               "fused_first_call_s": first_call_s}
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
