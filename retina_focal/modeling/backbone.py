"""A width-configurable ResNet-FPN backbone for CPU-sized experiments.

Detectron2's ``build_resnet_backbone`` fixes the width of ResNet-18/34 (64 channels in res2).
Trained from scratch on CPU, a narrower network reaches a given AP in a fraction of the time,
so these builders use ``MODEL.RESNETS.RES2_OUT_CHANNELS`` (res2; doubled at every later stage)
and ``MODEL.RESNETS.STEM_OUT_CHANNELS`` for BasicBlock ResNets of depth 18 or 34. Everything
else (blocks, stem, FPN, its top block) is Detectron2's. Two FPNs: RetinaNet's P3-P7 (P6/P7
from res5) and Faster R-CNN's P2-P6 (P6 by max-pooling P5), as Detectron2's
``build_retinanet_resnet_fpn_backbone`` and ``build_resnet_fpn_backbone``.
"""
from typing import List

from detectron2.config import CfgNode
from detectron2.layers import CNNBlockBase, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN, ResNet
from detectron2.modeling.backbone.fpn import LastLevelMaxPool, LastLevelP6P7
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem
from torch import nn

__all__ = [
    "build_retina_focal_basic_resnet_fpn_backbone",
    "build_retina_focal_basic_resnet_fpn_p2_backbone",
    "make_basic_resnet_stages",
]

_BLOCKS_PER_STAGE = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}


def make_basic_resnet_stages(depth: int, stem_out_channels: int, res2_out_channels: int,
                             norm: str = "BN") -> List[List[CNNBlockBase]]:
    """The 4 stages (res2..res5) of a BasicBlock ResNet of ``depth`` 18 or 34 whose widths are
    w, 2w, 4w, 8w with w = ``res2_out_channels``; a cfg-free builder (for LazyConfig:
    ``L(ResNet)(stem=..., stages=L(make_basic_resnet_stages)(...))``)."""
    if depth not in _BLOCKS_PER_STAGE:
        raise ValueError(
            f"depth={depth} is invalid for a BasicBlock ResNet: choices "
            f"{sorted(_BLOCKS_PER_STAGE)}"
        )
    stages: List[List[CNNBlockBase]] = []
    in_channels = stem_out_channels
    for i, num_blocks in enumerate(_BLOCKS_PER_STAGE[depth]):
        out_channels = res2_out_channels * 2**i
        first_stride = 1 if i == 0 else 2
        stages.append(ResNet.make_stage(
            BasicBlock, num_blocks, in_channels=in_channels, out_channels=out_channels,
            stride_per_block=[first_stride] + [1] * (num_blocks - 1), norm=norm,
        ))
        in_channels = out_channels
    return stages


def _basic_resnet(cfg: CfgNode, input_shape: ShapeSpec, builder: str) -> ResNet:
    """The cfg's BasicBlock ResNet (``MODEL.RESNETS.*``, ``MODEL.BACKBONE.FREEZE_AT``);
    ``builder`` names the backbone builder in the error of a bad depth."""
    r = cfg.MODEL.RESNETS
    if r.DEPTH not in _BLOCKS_PER_STAGE:
        raise ValueError(
            f"MODEL.RESNETS.DEPTH={r.DEPTH} is invalid for {builder}: choices "
            f"{sorted(_BLOCKS_PER_STAGE)}"
        )
    stem = BasicStem(in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS,
                     norm=r.NORM)
    stages = make_basic_resnet_stages(r.DEPTH, r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS, r.NORM)
    return ResNet(stem, stages, out_features=r.OUT_FEATURES,
                  freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


def _fpn(cfg: CfgNode, bottom_up: ResNet, top_block: nn.Module) -> FPN:
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


# fvcore's Registry (Detectron2's) has no annotations: its decorator is untyped
@BACKBONE_REGISTRY.register()  # type: ignore[untyped-decorator]
def build_retina_focal_basic_resnet_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> FPN:
    """BasicBlock ResNet (res2..res5 widths w, 2w, 4w, 8w with w = RES2_OUT_CHANNELS) + FPN
    with P6/P7 from res5, as in RetinaNet."""
    bottom_up = _basic_resnet(cfg, input_shape, "build_retina_focal_basic_resnet_fpn_backbone")
    return _fpn(cfg, bottom_up, LastLevelP6P7(bottom_up.output_shape()["res5"].channels,
                                              cfg.MODEL.FPN.OUT_CHANNELS))


@BACKBONE_REGISTRY.register()  # type: ignore[untyped-decorator]  # untyped, as above
def build_retina_focal_basic_resnet_fpn_p2_backbone(cfg: CfgNode, input_shape: ShapeSpec
                                                    ) -> FPN:
    """The same BasicBlock ResNet + FPN with P6 max-pooled from P5, as Faster R-CNN's
    (P2-P6 with ``MODEL.FPN.IN_FEATURES: [res2, res3, res4, res5]``)."""
    bottom_up = _basic_resnet(cfg, input_shape,
                              "build_retina_focal_basic_resnet_fpn_p2_backbone")
    return _fpn(cfg, bottom_up, LastLevelMaxPool())
