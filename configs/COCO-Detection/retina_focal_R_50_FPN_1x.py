# LazyConfig twin of retina_focal_R_50_FPN_1x.yaml: the paper's RetinaNet (ResNet-50-FPN P3-P7,
# 9 anchors, focal loss) on COCO with Detectron2's 1x schedule (90k iterations of 16 images).
# Train with `tools/lazyconfig_train_net.py --config-file <this file>` (ours or Detectron2's:
# this file imports retina_focal, which registers everything the model needs).
import torch
from detectron2.config import LazyCall as L
from detectron2.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data import transforms as T
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.backbone import FPN, ResNet
from detectron2.modeling.backbone.fpn import LastLevelP6P7
from detectron2.modeling.backbone.resnet import BasicStem
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.solver import WarmupParamScheduler, get_default_optimizer_params
from fvcore.common.param_scheduler import MultiStepParamScheduler

from retina_focal import IoUThresholdMatcher, RetinaFocal, RetinaFocalHead, SigmoidFocalLoss
from retina_focal.evaluation.coco_report import COCOReportEvaluator

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
    # conv + FrozenBN as one conv (same parameters); NCHW on GPU ("channels_last" on a CPU)
    fold_frozen_bn=True,
    memory_format="contiguous",
)

dataloader = dict(
    train=L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names="coco_2017_train", filter_empty=True),
        mapper=L(DatasetMapper)(
            is_train=True,
            augmentations=[
                L(T.ResizeShortestEdge)(
                    short_edge_length=(640, 672, 704, 736, 768, 800),
                    max_size=1333,
                    sample_style="choice",
                ),
                L(T.RandomFlip)(horizontal=True),
            ],
            image_format="${model.input_format}",
            use_instance_mask=False,
        ),
        total_batch_size=16,
        num_workers=4,
    ),
    test=L(build_detection_test_loader)(
        dataset=L(get_detection_dataset_dicts)(names="coco_2017_val", filter_empty=False),
        mapper=L(DatasetMapper)(
            is_train=False,
            augmentations=[
                L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333, sample_style="choice")
            ],
            image_format="${model.input_format}",
        ),
        num_workers=4,
    ),
    # COCOEvaluator (+ per-category AP, PR curves, coco_report.json)
    evaluator=L(COCOReportEvaluator)(
        dataset_name="${..test.dataset.names}",
        output_dir="${train.output_dir}/inference/${..test.dataset.names}",
    ),
)

optimizer = L(torch.optim.SGD)(
    params=L(get_default_optimizer_params)(weight_decay_norm=0.0),  # .model is set by the tool
    lr=0.01,
    momentum=0.9,
    weight_decay=1e-4,
)

train = dict(
    output_dir="./output/retina_focal_R_50_FPN_1x",
    init_checkpoint="detectron2://ImageNetPretrained/MSRA/R-50.pkl",
    max_iter=90000,
    amp=dict(enabled=False),
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=5000, max_to_keep=100),
    eval_period=0,
    log_period=20,
    device="cuda",
    seed=-1,
)

# Learning-rate multiplier: linear warm-up over 1000 iterations from 0.001, then x0.1 at 60k and
# 80k (Detectron2's WarmupMultiStepLR).
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01], milestones=[60000, 80000], num_updates="${train.max_iter}"
    ),
    warmup_length=1000 / train["max_iter"],  # a fraction of max_iter
    warmup_method="linear",
    warmup_factor=0.001,
)
