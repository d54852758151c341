"""The GPU checks' sizes: RetinaNet's anchor count of an image size, and batches of other
sizes for the recompilation counts."""
from typing import List, Tuple

import torch

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
