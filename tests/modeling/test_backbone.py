"""The width-configurable BasicBlock ResNet-FPN backbone."""
import pytest
import torch
from detectron2.modeling import build_backbone


def test_widths_levels_and_strides(tiny_cfg):
    tiny_cfg.merge_from_list(["MODEL.BACKBONE.NAME", "build_retina_focal_basic_resnet_fpn_backbone",
                              "MODEL.RESNETS.STEM_OUT_CHANNELS", "16",
                              "MODEL.RESNETS.RES2_OUT_CHANNELS", "16"])
    backbone = build_backbone(tiny_cfg)
    shapes = backbone.output_shape()
    assert sorted(shapes) == ["p3", "p4", "p5", "p6", "p7"]
    assert [shapes[f"p{i}"].stride for i in range(3, 8)] == [8, 16, 32, 64, 128]
    bottom_up = backbone.bottom_up.output_shape()
    assert [bottom_up[f"res{i}"].channels for i in (3, 4, 5)] == [32, 64, 128]
    assert len(backbone.bottom_up.res2) == 2 and len(backbone.bottom_up.res5) == 2  # R18 layout
    out = backbone(torch.zeros(1, 3, 128, 128))
    assert out["p3"].shape == (1, 64, 16, 16) and out["p7"].shape == (1, 64, 1, 1)


def test_bad_depth_names_the_key(tiny_cfg):
    tiny_cfg.merge_from_list(["MODEL.BACKBONE.NAME", "build_retina_focal_basic_resnet_fpn_backbone",
                              "MODEL.RESNETS.DEPTH", "50"])
    with pytest.raises(ValueError, match="MODEL.RESNETS.DEPTH=50"):
        build_backbone(tiny_cfg)
