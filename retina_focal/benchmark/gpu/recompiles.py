"""The GPU checks' ``recompiles`` section: how often torch.compile compiles the closed-form loss
over batches of other anchor counts, alone and in RetinaFocal's training step."""
from typing import Dict

import torch

from retina_focal.analysis.assignment import anchor_count
from retina_focal.analysis.compute import count_compiles
from retina_focal.benchmark.gpu.sizes import image_sizes
from retina_focal.benchmark.settings import BenchSettings


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
