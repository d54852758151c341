"""The GPU checks' ``recompiles`` section: how often torch.compile compiles the closed-form loss
over batches of other anchor counts, alone and in RetinaFocal's training step."""
import logging
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from retina_focal.benchmark.gpu.sizes import anchor_count, image_sizes
from retina_focal.benchmark.settings import BenchSettings


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


def loss_recompiles(settings: BenchSettings, device: str, batches: int) -> Dict:
    """The fused loss (forward + backward, "sum") over ``batches`` batches of other image sizes
    (up to ``settings.image_size``), then the same sizes again in bfloat16 and with per-anchor
    weights."""
    from retina_focal.benchmark.focal_loss import focal_problem
    from retina_focal.ops import sigmoid_focal_loss_labels

    alpha, gamma = settings.alpha, settings.gamma  # as the focal-loss section's
    sizes = image_sizes(batches, settings.image_size)
    calls = []
    for variant in ("float32", "bfloat16", "float32 + weights"):
        for i, (h, w) in enumerate(sizes):
            R = anchor_count(h, w, images=settings.images)
            logits, labels = focal_problem(settings.images, R, settings.classes, device, seed=i)
            logits = logits.flatten(0, 1)
            if variant == "bfloat16":
                logits = logits.to(torch.bfloat16)
            weights = (torch.rand(R, device=device) if variant.endswith("weights") else None)

            def run(x=logits.requires_grad_(), y=labels.flatten(), weights=weights):
                sigmoid_focal_loss_labels(x, y, alpha, gamma, "sum", weights=weights).backward()
            calls.append((f"{variant} {settings.images}x{h}x{w} ({R} anchors)", run))
    return count_compiles(calls, device)


def model_recompiles(settings: BenchSettings, device: str, batches: int) -> Dict:
    """RetinaFocal's training steps (``settings.config_file``) on ``batches`` batches of other
    image sizes: what the loss compiles inside a real step."""
    from detectron2.utils.events import EventStorage

    from retina_focal.benchmark.models import build_models, make_batch, sgd_step

    _, model, theirs = build_models(settings, device)
    del theirs  # (built alongside; only RetinaFocal is stepped here)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    calls = []
    for i, (h, w) in enumerate(image_sizes(batches, settings.image_size, seed=1)):
        batch = make_batch(settings.images, h, w, settings.classes, device, seed=i)
        calls.append((f"training step {settings.images}x{h}x{w}", sgd_step(model, batch, opt)))
    with EventStorage(0):
        return count_compiles(calls, device)
