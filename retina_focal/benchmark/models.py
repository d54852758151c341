"""Sections 2 and 3: one training iteration and one image's inference of RetinaFocal against
Detectron2's RetinaNet built from the same config with the same weights."""
import os
from contextlib import nullcontext
from typing import Callable, Dict

import torch

from retina_focal.analysis.compute import peak_extra_bytes, profile_step
from retina_focal.benchmark.settings import BenchSettings
from retina_focal.benchmark.timing import Progress, alternate, ratios, summarize
from retina_focal.config.zoo import config_name
from retina_focal.engine.device import resolve_memory_format
from retina_focal.modeling.detectron2_reference import detectron2_head_kind

__all__ = ["DEFAULT_CONFIG", "EAGER_TOLERANCES", "QUICK_CONFIG", "bench_inference", "bench_train",
           "build_models", "inference_models", "inference_run", "make_batch", "sgd_step"]

# the source checkout (the report names the config relative to it)
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# shipped configs, by name (retina_focal.config.get_config_file finds them in a wheel too)
DEFAULT_CONFIG = "COCO-Detection/retina_focal_R_50_FPN_1x.yaml"
QUICK_CONFIG = "Synthetic/retina_focal_R_18_FPN_tiny.yaml"
# two eager models in other memory layouts: scores within 1e-4 (float32 rounding), boxes within
# 1e-3 px (export.parity.compare_instances's tolerances)
EAGER_TOLERANCES = dict(atol=1e-4, box_rtol=0.0, box_atol=1e-3)


def build_models(settings: BenchSettings, device):
    """RetinaFocal from the config and Detectron2's RetinaNet with the same modules/weights."""
    from retina_focal.engine.defaults import build_cfg, build_model
    from retina_focal.modeling.detectron2_reference import detectron2_retinanet

    cfg = build_cfg(settings.config_file, freeze=False)
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = device
    cfg.MODEL.RETINANET.NUM_CLASSES = settings.classes
    if settings.gn_head:
        cfg.MODEL.RETINANET.NORM = "GN"
    cfg.merge_from_list(list(settings.opts))
    cfg.freeze()
    torch.manual_seed(0)
    ours = build_model(cfg)  # as every command builds it: with the device speed-ups
    theirs = detectron2_retinanet(cfg, ours)
    return cfg, ours, theirs


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


def sgd_step(model: torch.nn.Module, batch, optimizer: torch.optim.Optimizer,
             bfloat16: bool = False) -> Callable[[], None]:
    """One training step of ``model`` on ``batch`` (forward, the sum of its losses backward,
    ``optimizer`` step), as a function of no arguments; ``bfloat16``: the forward under CPU
    bfloat16 autocast (the losses summed in float32). Every step the benchmarks time or
    count is this one (the caller provides the EventStorage Detectron2's models log to)."""
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16) if bfloat16 else nullcontext():
            losses = model(batch)
        total = sum(v.float() for v in losses.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
    return step


def bench_train(settings: BenchSettings, device):
    """One SGD iteration (forward, backward, step) of RetinaFocal and of Detectron2's
    RetinaNet, same weights and batch, in float32; with ``settings.train_bfloat16`` also both under
    CPU bfloat16 autocast (what ``SOLVER.AMP.ENABLED`` trains in on a CPU with bfloat16
    instructions); with ``settings.profile`` the convolutions' share of each float32 step; on
    CUDA also the peak extra memory of one float32 step of each model (after the warm-up: the
    momentum buffers and cuDNN workspaces exist)."""
    from detectron2.utils.events import EventStorage

    cfg, ours, theirs = build_models(settings, device)
    batch = make_batch(settings.images, *settings.image_size, settings.classes, device)
    models = {"RetinaFocal": ours, "Detectron2 RetinaNet": theirs}
    precisions = ["float32"] + (["bfloat16"] if settings.train_bfloat16 else [])
    if "bfloat16" in precisions and device != "cpu":
        raise ValueError("--train-bfloat16 measures CPU bfloat16 autocast: use --device cpu")
    steps: Dict[str, Callable[[], None]] = {}
    for precision in precisions:
        for name, model in models.items():
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
            steps[name if precision == "float32" else f"{name} bf16"] = sgd_step(
                model, batch, opt, bfloat16=precision == "bfloat16")
    # same weights and batch: the first losses must agree (Detectron2 parity)
    with EventStorage(0), torch.no_grad():
        first = {n: {k: float(v) for k, v in m(batch).items()} for n, m in models.items()}
    diff = max(abs(first["RetinaFocal"][k] - first["Detectron2 RetinaNet"][k])
               / max(abs(first["Detectron2 RetinaNet"][k]), 1e-12)
               for k in first["RetinaFocal"])
    if diff > 1e-4:
        raise RuntimeError(f"The two models' first losses differ (max relative {diff:.2e}): "
                           f"{first}; the comparison would not be of the same computation")
    progress = Progress("train iteration", len(steps) + settings.repeats)
    with EventStorage(0):
        # three warm-up steps each: Detectron2's TorchScript focal loss is re-optimised by
        # the profiling executor over its first calls, and we time it at its best
        times = alternate(steps, settings.repeats, warmup=max(3, settings.warmup), device=device,
                          progress=progress)
        profiles = ({name: profile_step(steps[name], device) for name in models}
                    if settings.profile else None)
        memory = ({name: peak_extra_bytes(steps[name], device) / 2**20 for name in models}
                  if device.startswith("cuda") else {})
    results = {name: summarize(t) for name, t in times.items()}
    for name, mb in memory.items():
        results[name]["peak_extra_mb"] = mb
    out = {
        **ratios(results, "RetinaFocal", "Detectron2 RetinaNet"),
        "setup": {"config": config_name(settings.config_file),
                  "overrides": list(settings.opts),
                  "images": settings.images,
                  "image_size": list(settings.image_size), "classes": settings.classes,
                  "head_norm": cfg.MODEL.RETINANET.NORM, "device": device,
                  "detectron2_head": detectron2_head_kind(cfg, theirs),
                  "backbone": cfg.MODEL.BACKBONE.NAME,
                  "memory_format": resolve_memory_format(
                      cfg.MODEL.RETINA_FOCAL.MEMORY_FORMAT, cfg.MODEL.DEVICE),
                  "precisions": precisions,
                  "first_losses": first,
                  "first_losses_max_relative_difference": diff},
        "results": results,
    }
    if "bfloat16" in precisions:
        out["bfloat16"] = {
            # both under the same autocast: what the rest of RetinaFocal saves in bfloat16
            "both_bf16": ratios(results, "RetinaFocal bf16", "Detectron2 RetinaNet bf16"),
            # what a user gets: SOLVER.AMP.ENABLED with RetinaFocal on a bfloat16 CPU against
            # Detectron2's RetinaNet in float32 (its AMPTrainer needs CUDA)
            "ours_bf16_vs_d2_float32": ratios(results, "RetinaFocal bf16",
                                              "Detectron2 RetinaNet"),
        }
    if memory:
        out["memory_ratio_ours_over_d2"] = memory["RetinaFocal"] / memory["Detectron2 RetinaNet"]
    if profiles is not None:
        out["profile"] = {
            **profiles,
            # the ratio RetinaFocal would reach if everything but its convolutions took no
            # time: the floor of the float32 step ratio without faster convolutions (both
            # figures from the profiled steps, so measured under the same profiler)
            "conv_floor_ratio": profiles["RetinaFocal"]["conv_s"]
            / profiles["Detectron2 RetinaNet"]["self_time_s"],
        }
    return out


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


def inference_models(settings: BenchSettings, device):
    """The inference sections' setup (this one and the export's): both models in eval mode
    with the same trained-like weights, and one image (without its annotations) as a batch.
    Returns ``(cfg, ours, theirs, batch)``."""
    cfg, ours, theirs = build_models(settings, device)
    trained_like_scores(ours)
    theirs.load_state_dict(ours.state_dict())
    image = make_batch(1, *settings.image_size, settings.classes, device, seed=1)
    image = [{k: v for k, v in image[0].items() if k != "instances"}]
    ours.eval()
    theirs.eval()
    return cfg, ours, theirs, image


def inference_run(model, image, outs: Dict, name: str) -> Callable[[], None]:
    """A function of no arguments that runs ``model`` on ``image`` without gradients and keeps
    the detections in ``outs[name]``."""
    def run():
        with torch.no_grad():
            outs[name] = model(image)[0]["instances"]
    return run


def bench_inference(settings: BenchSettings, device):
    from retina_focal.export.parity import compare_instances

    cfg, ours, theirs, image = inference_models(settings, device)
    outs: Dict = {}
    fns = {"RetinaFocal": inference_run(ours, image, outs, "RetinaFocal"),
           "Detectron2 RetinaNet": inference_run(theirs, image, outs, "Detectron2 RetinaNet")}
    progress = Progress("inference", len(fns) + settings.repeats)
    times = alternate(fns, settings.repeats, warmup=1, device=device, progress=progress)
    # candidates above the score threshold, as the post-processing sees them
    with torch.no_grad():
        images = ours.preprocess_image(image)
        features = [ours.backbone(images.tensor)[f] for f in ours.head_in_features]
        logits, _ = ours.head(features)
        scores = torch.cat([x.sigmoid().flatten() for x in logits])
    differences = compare_instances(outs["RetinaFocal"], outs["Detectron2 RetinaNet"],
                                    **EAGER_TOLERANCES)
    results = {name: summarize(t) for name, t in times.items()}
    results["RetinaFocal"]["detections"] = len(outs["RetinaFocal"])
    results["Detectron2 RetinaNet"]["detections"] = len(outs["Detectron2 RetinaNet"])
    return {
        **ratios(results, "RetinaFocal", "Detectron2 RetinaNet"),
        "setup": {"config": config_name(settings.config_file),
                  "overrides": list(settings.opts),
                  "image_size": list(settings.image_size), "classes": settings.classes,
                  "score_thresh": cfg.MODEL.RETINANET.SCORE_THRESH_TEST,
                  "fraction_above_thresh": float((scores > cfg.MODEL.RETINANET.SCORE_THRESH_TEST)
                                                 .float().mean()),
                  "same_detections": differences["same"],
                  "detection_differences": differences,
                  "detectron2_head": detectron2_head_kind(cfg, theirs),
                  "backbone": cfg.MODEL.BACKBONE.NAME,
                  "device": device},
        "results": results,
    }
