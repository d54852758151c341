"""SSD's hard negative mining."""
import math
from typing import Optional

import torch
from torch import Tensor

from retina_focal.config import check_integer, check_positive, configurable
from retina_focal.modeling.anchor_sampling.base import AnchorSampler
from retina_focal.modeling.registry import SAMPLER_REGISTRY

__all__ = ["HardNegativeMiner"]


@SAMPLER_REGISTRY.register()
class HardNegativeMiner(AnchorSampler):
    """SSD's hard negative mining (Liu et al., ECCV 2016, Sec. 2.2).

    Per image: every positive anchor, plus the ``k`` negatives with the highest
    classification loss, ``k = max(floor(neg_pos_ratio * #positives), min_negatives)``
    (capped by the number of negatives). ``min_negatives`` > 0 lets images without any
    positive still contribute their hardest negatives (SSD: 0, such an image is skipped).

    Returns (N, R) weights: 1 for the selected anchors, 0 for the others (ignored stay 0).
    """

    needs_anchor_losses = True

    @configurable
    def __init__(self, *, neg_pos_ratio: float = 3.0, min_negatives: int = 0):
        check_positive(neg_pos_ratio, key="neg_pos_ratio", note="SSD: 3")
        check_integer(min_negatives, key="min_negatives", low=0)
        self.neg_pos_ratio = float(neg_pos_ratio)
        self.min_negatives = int(min_negatives)

    config_keys = {
        "neg_pos_ratio": "MODEL.RETINA_FOCAL.HNM_NEG_POS_RATIO",
        "min_negatives": "MODEL.RETINA_FOCAL.HNM_MIN_NEGATIVES",
    }

    def sample(
        self, labels: Tensor, num_classes: int, anchor_losses: Optional[Tensor],
        boxes: Optional[Tensor]
    ) -> Tensor:
        """(N, R) float weights in {0, 1}; ``boxes`` is not used."""
        assert anchor_losses is not None  # checked by AnchorSampler.__call__
        fg = (labels >= 0) & (labels < num_classes)
        bg = labels == num_classes
        weights = fg.to(torch.float32)
        for i in range(labels.shape[0]):
            num_pos = int(fg[i].sum())
            neg = torch.nonzero(bg[i]).squeeze(1)
            k = min(max(int(math.floor(self.neg_pos_ratio * num_pos)), self.min_negatives),
                    neg.numel())
            if k > 0:
                hardest = torch.topk(anchor_losses[i][neg], k).indices
                weights[i, neg[hardest]] = 1.0
        return weights

    def __repr__(self) -> str:
        return (
            f"HardNegativeMiner(neg_pos_ratio={self.neg_pos_ratio}, "
            f"min_negatives={self.min_negatives})"
        )
