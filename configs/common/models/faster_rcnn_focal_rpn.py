# Faster R-CNN ResNet-50-FPN (P2-P6, FrozenBN, res2 and the stem frozen, a 2-FC box head) whose
# RPN is FocalRPN with the focal settings: the focal loss (alpha .25, gamma 2) on every
# non-ignored anchor, losses divided by an EMA of the positive anchors, prior 0.01; IoU bands
# [0.3, 0.7] as Detectron2's RPN. Base-FocalRPN-RCNN-FPN.yaml + the 1x YAML's RETINA_FOCAL.RPN keys.
# Detectron2's RPN exactly: objectness_loss alpha=-1, gamma=0, sampling="detectron2",
# normalizer="detectron2", prior_prob=0.5. Importing retina_focal registers what it needs.
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.backbone import FPN, ResNet
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.resnet import BasicStem
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.meta_arch import GeneralizedRCNN
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.proposal_generator import StandardRPNHead
from detectron2.modeling.roi_heads import FastRCNNConvFCHead, FastRCNNOutputLayers, StandardROIHeads

from retina_focal.modeling import FocalRPN, IoUThresholdMatcher, SigmoidFocalLoss

# The strides of P2..P6 and the FPN width.
STRIDES = [4, 8, 16, 32, 64]
WIDTH = 256
BOX_HEAD_DIM = 1024

model = L(GeneralizedRCNN)(
    backbone=L(FPN)(
        bottom_up=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
            stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=True, norm="FrozenBN"),
            out_features=["res2", "res3", "res4", "res5"],
            freeze_at=2,
        ),
        in_features=["res2", "res3", "res4", "res5"],
        out_channels=WIDTH,
        norm="",
        top_block=L(LastLevelMaxPool)(),
        fuse_type="sum",
    ),
    proposal_generator=L(FocalRPN)(
        in_features=["p2", "p3", "p4", "p5", "p6"],
        head=L(StandardRPNHead)(in_channels=WIDTH, num_anchors=3),
        anchor_generator=L(DefaultAnchorGenerator)(
            sizes=[[8 * s] for s in STRIDES],  # 32..512
            aspect_ratios=[0.5, 1.0, 2.0],
            strides=STRIDES,
            offset=0.0,
        ),
        assigner=L(IoUThresholdMatcher)(
            thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True
        ),
        objectness_loss=L(SigmoidFocalLoss)(alpha=0.25, gamma=2.0),
        sampling="all",
        normalizer="ema",
        prior_prob=0.01,
        box2box_transform=L(Box2BoxTransform)(weights=[1.0, 1.0, 1.0, 1.0]),
        batch_size_per_image=256,  # used by sampling="detectron2" / normalizer="detectron2"
        positive_fraction=0.5,
        pre_nms_topk=(2000, 1000),
        post_nms_topk=(1000, 1000),
        nms_thresh=0.7,
    ),
    roi_heads=L(StandardROIHeads)(
        num_classes=80,
        batch_size_per_image=512,
        positive_fraction=0.25,
        proposal_matcher=L(Matcher)(
            thresholds=[0.5], labels=[0, 1], allow_low_quality_matches=False
        ),
        box_in_features=["p2", "p3", "p4", "p5"],
        box_pooler=L(ROIPooler)(
            output_size=7,
            scales=[1.0 / s for s in STRIDES[:4]],
            sampling_ratio=0,
            pooler_type="ROIAlignV2",
        ),
        box_head=L(FastRCNNConvFCHead)(
            input_shape=L(ShapeSpec)(channels=WIDTH, height=7, width=7),
            conv_dims=[],
            fc_dims=[BOX_HEAD_DIM, BOX_HEAD_DIM],
        ),
        box_predictor=L(FastRCNNOutputLayers)(
            input_shape=L(ShapeSpec)(channels=BOX_HEAD_DIM),
            test_score_thresh=0.05,
            box2box_transform=L(Box2BoxTransform)(weights=(10, 10, 5, 5)),
            num_classes="${..num_classes}",
        ),
    ),
    pixel_mean=[103.53, 116.28, 123.675],
    pixel_std=[1.0, 1.0, 1.0],
    input_format="BGR",
)
