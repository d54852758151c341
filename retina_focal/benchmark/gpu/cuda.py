"""The GPU checks' sizes (RetinaNet's anchor count of an image size, batches of other sizes)
and the training step with its peak CUDA memory."""
from typing import Dict, List, Tuple

import torch

from retina_focal.benchmark.settings import BenchSettings
from retina_focal.benchmark.timing import peak_extra_bytes

# RetinaNet's anchors: FPN levels P3-P7 (strides 8..128), 3 scales x 3 aspect ratios.
ANCHOR_STRIDES = (8, 16, 32, 64, 128)


ANCHORS_PER_LOCATION = 9


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


def bench_train_cuda(settings: BenchSettings, device: str) -> Dict:
    """:func:`retina_focal.benchmark.models.bench_train` (which checks the two models' first
    losses agree), plus the peak CUDA memory of one training step of each model."""
    from detectron2.utils.events import EventStorage

    from retina_focal.benchmark.models import bench_train, build_models, make_batch, sgd_step

    report = bench_train(settings, device)
    if device.startswith("cuda"):
        _, ours, theirs = build_models(settings, device)
        batch = make_batch(settings.images, *settings.image_size, settings.classes, device)
        for name, model in (("RetinaFocal", ours), ("Detectron2 RetinaNet", theirs)):
            model.train()
            step = sgd_step(model, batch, torch.optim.SGD(model.parameters(), lr=1e-3,
                                                          momentum=0.9))
            with EventStorage(0):
                step()  # momentum buffers and cuDNN workspaces exist after one step
                report["results"][name]["peak_extra_mb"] = peak_extra_bytes(step, device) / 2**20
        del ours, theirs
        torch.cuda.empty_cache()
        r = report["results"]
        report["memory_ratio_ours_over_d2"] = (r["RetinaFocal"]["peak_extra_mb"]
                                               / r["Detectron2 RetinaNet"]["peak_extra_mb"])
    return {"status": "measured", **report}
