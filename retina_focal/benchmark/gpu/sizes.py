"""The GPU checks' batches of other image sizes, for the recompilation counts (their anchor
counts: :func:`retina_focal.analysis.assignment.anchor_count`)."""
from typing import List, Tuple

import torch


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
