"""What every anchor assigner in ``ASSIGNER_REGISTRY`` computes, and how it is called."""
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Dict, List, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.structures import Boxes, Instances
from torch import Tensor

from retina_focal.config.validation import ConfigKeys, config_values

__all__ = ["AnchorAssigner"]


class AnchorAssigner(ABC):
    """Decides, for one image, which anchors are positive, negative or ignored, and which
    ground truth each anchor is matched to.

    Called as ``assigner(anchors, gt)``:

    Args:
        anchors: one :class:`Boxes` per feature level, together R anchors.
        gt: the image's ground truth, M boxes in ``gt.gt_boxes`` (nothing else is read).

    Returns:
        matched_idxs: (R,) int64 index into ``gt`` of the ground truth each anchor is matched
            to (meaningful where ``match_labels`` is 1; 0 when M is 0).
        match_labels: (R,) int8 in {-1 ignored, 0 negative, 1 positive}.

    This is what Detectron2's ``Matcher`` returns for an IoU matrix (and mmdetection's
    ``AssignResult.gt_inds`` in another encoding): an assigner knows ground truths, not
    classes. The model turns it into class labels and matched boxes
    (``RetinaFocal.label_anchors``); the analysis tools count positives per ground truth.

    Subclasses implement :meth:`assign` for images with at least one ground truth and one
    anchor; an image without either has every anchor negative.
    """

    # {constructor argument: cfg key}: what from_config reads, and the keys errors name
    config_keys: ClassVar[ConfigKeys] = {}

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, Any]:
        """The constructor's arguments, read from ``cfg`` at the keys of ``config_keys``."""
        return config_values(cfg, cls.config_keys)

    def __call__(self, anchors: List[Boxes], gt: Instances) -> Tuple[Tensor, Tensor]:
        all_anchors = Boxes.cat(anchors)
        if len(gt) == 0 or len(all_anchors) == 0:
            n, device = len(all_anchors), all_anchors.device
            return (torch.zeros(n, dtype=torch.int64, device=device),
                    torch.zeros(n, dtype=torch.int8, device=device))
        return self.assign(anchors, all_anchors, gt)

    @abstractmethod
    def assign(
        self, anchors: List[Boxes], all_anchors: Boxes, gt: Instances
    ) -> Tuple[Tensor, Tensor]:
        """``(matched_idxs (R,), match_labels (R,))`` as in the class docstring, for M >= 1
        ground truths and R >= 1 anchors; ``all_anchors`` is ``Boxes.cat(anchors)``."""
