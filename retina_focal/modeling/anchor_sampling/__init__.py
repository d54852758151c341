"""Which anchors the classification loss is computed on: all of them (what focal loss is
for), online hard example mining (OHEM, the paper's Sec. 5.1 baseline) or SSD's hard negative
mining. Every sampler derives from :class:`AnchorSampler`, whose docstring is the contract;
registered in ``SAMPLER_REGISTRY``, chosen by ``MODEL.RETINA_FOCAL.SAMPLER_NAME``.

A sampler only selects anchors for the classification loss: the box-regression loss is
computed on every positive anchor whatever the sampler, and both losses are divided by the
normaliser (``MODEL.RETINA_FOCAL.NORMALIZER``), which counts every positive anchor of the batch,
sampled or not. For ``HardNegativeMiner`` this is SSD's normalisation (1 / #matched anchors).
"""
from detectron2.config import CfgNode

from retina_focal.modeling.anchor_sampling.all_anchors import AllAnchors
from retina_focal.modeling.anchor_sampling.base import NMS_BOXES, AnchorSampler
from retina_focal.modeling.anchor_sampling.hard_negative import HardNegativeMiner
from retina_focal.modeling.anchor_sampling.ohem import OHEMSampler
from retina_focal.modeling.registry import SAMPLER_REGISTRY, get_component

__all__ = [
    "AllAnchors",
    "AnchorSampler",
    "HardNegativeMiner",
    "NMS_BOXES",
    "OHEMSampler",
    "build_sampler",
]


def build_sampler(cfg: CfgNode) -> AnchorSampler:
    """Build the sampler named by ``MODEL.RETINA_FOCAL.SAMPLER_NAME``."""
    name = cfg.MODEL.RETINA_FOCAL.SAMPLER_NAME
    sampler: AnchorSampler = get_component(
        SAMPLER_REGISTRY, name, "MODEL.RETINA_FOCAL.SAMPLER_NAME"
    )(cfg)
    return sampler
