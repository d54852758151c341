# The paper's RetinaNet as RetinaFocal: ResNet-50-FPN P3-P7 (FrozenBN, res2 and the stem
# frozen), 9 anchors per location, a 4-conv head, focal loss; Base-RetinaFocal.yaml's model.
# Importing retina_focal registers everything the model needs.
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.backbone import FPN, ResNet
from detectron2.modeling.backbone.fpn import LastLevelP6P7
from detectron2.modeling.backbone.resnet import BasicStem
from detectron2.modeling.box_regression import Box2BoxTransform

from retina_focal import IoUThresholdMatcher, RetinaFocal, RetinaFocalHead, SigmoidFocalLoss

# The strides of P3..P7 and the FPN / head width.
STRIDES = [8, 16, 32, 64, 128]
WIDTH = 256

model = L(RetinaFocal)(
    backbone=L(FPN)(
        bottom_up=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
            stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=True, norm="FrozenBN"),
            out_features=["res3", "res4", "res5"],
            freeze_at=2,
        ),
        in_features=["res3", "res4", "res5"],
        out_channels=WIDTH,
        norm="",
        # P6 is computed from res5 (2048 channels for ResNet-50/101), as in the paper.
        top_block=L(LastLevelP6P7)(in_channels=2048, out_channels=WIDTH),
        fuse_type="sum",
    ),
    head=L(RetinaFocalHead)(
        input_shape=[L(ShapeSpec)(channels=WIDTH, stride=s) for s in STRIDES],
        num_classes="${..num_classes}",
        num_anchors=9,
        conv_dims=[WIDTH] * 4,
        norm="",
        prior_prob=0.01,
    ),
    head_in_features=["p3", "p4", "p5", "p6", "p7"],
    anchor_generator=L(DefaultAnchorGenerator)(
        # 3 scales per octave (x, x * 2^(1/3), x * 2^(2/3)) for x = 4 * stride, 3 aspect ratios
        sizes=[[4 * s * 2 ** (k / 3) for k in range(3)] for s in STRIDES],
        aspect_ratios=[0.5, 1.0, 2.0],
        strides=STRIDES,
        offset=0.0,
    ),
    box2box_transform=L(Box2BoxTransform)(weights=[1.0, 1.0, 1.0, 1.0]),
    cls_loss=L(SigmoidFocalLoss)(alpha=0.25, gamma=2.0),
    assigner=L(IoUThresholdMatcher)(
        thresholds=[0.4, 0.5], labels=[0, -1, 1], allow_low_quality_matches=True
    ),
    num_classes=80,
    focal_loss_alpha="${.cls_loss.alpha}",
    focal_loss_gamma="${.cls_loss.gamma}",
    smooth_l1_beta=0.0,
    box_reg_loss_type="smooth_l1",
    test_score_thresh=0.05,
    test_topk_candidates=1000,
    test_nms_thresh=0.5,
    max_detections_per_image=100,
    pixel_mean=[103.53, 116.28, 123.675],
    pixel_std=[1.0, 1.0, 1.0],
    vis_period=0,
    input_format="BGR",
)
