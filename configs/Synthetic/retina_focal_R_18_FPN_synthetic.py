# LazyConfig twin of retina_focal_R_18_FPN_synthetic.yaml: RetinaFocal trained from scratch on
# CPU on the embedded synthetic shapes dataset (6 classes, 256x256 images), with a half-width
# BasicBlock ResNet-18 (res2..res5: 32, 64, 128, 256 channels), BatchNorm everywhere, and a
# 64-channel FPN / head. Everything else is the COCO config's.
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import ResNet
from detectron2.modeling.backbone.resnet import BasicStem

from retina_focal.modeling.backbone import make_basic_resnet_stages  # also registers datasets

_coco = LazyConfig.load_rel("../COCO-Detection/retina_focal_R_50_FPN_1x.py")
model, dataloader, optimizer, lr_multiplier, train = (
    _coco.model, _coco.dataloader, _coco.optimizer, _coco.lr_multiplier, _coco.train
)

STRIDES = [8, 16, 32, 64, 128]
WIDTH = 64  # FPN and head channels
RES2 = 32  # ResNet width: res2..res5 have 32, 64, 128, 256 channels

model.backbone.bottom_up = L(ResNet)(
    stem=L(BasicStem)(in_channels=3, out_channels=RES2, norm="BN"),
    stages=L(make_basic_resnet_stages)(
        depth=18, stem_out_channels=RES2, res2_out_channels=RES2, norm="BN"
    ),
    out_features=["res3", "res4", "res5"],
    freeze_at=0,  # no pretrained weights: every layer trains
)
model.backbone.out_channels = WIDTH
model.backbone.norm = "BN"
model.backbone.top_block.in_channels = 8 * RES2
model.backbone.top_block.out_channels = WIDTH
model.head.input_shape = [L(ShapeSpec)(channels=WIDTH, stride=s) for s in STRIDES]
model.head.conv_dims = [WIDTH] * 4
model.head.norm = "BN"
# objects are 12-128 px: anchors start at 16 px on P3
model.anchor_generator.sizes = [[2 * s * 2 ** (k / 3) for k in range(3)] for s in STRIDES]
model.num_classes = 6
model.memory_format = "channels_last"  # this config trains on the CPU (train.device)
model.pixel_std = [57.375, 57.120, 58.395]

dataloader.train.dataset.names = "synthetic_shapes_train"
dataloader.train.mapper.augmentations[0].short_edge_length = (256,)
dataloader.train.mapper.augmentations[0].max_size = 256
dataloader.train.total_batch_size = 8
dataloader.train.num_workers = 2
dataloader.test.dataset.names = "synthetic_shapes_val"
dataloader.test.mapper.augmentations[0].short_edge_length = 256
dataloader.test.mapper.augmentations[0].max_size = 256
dataloader.test.num_workers = 2

optimizer.lr = 0.02

train.output_dir = "./output/synthetic_R18_lazy"
train.init_checkpoint = ""
train.max_iter = 1700
train.checkpointer.period = 1000
train.device = "cpu"
train.seed = 0

lr_multiplier.scheduler.milestones = [1300, 1550]
lr_multiplier.warmup_length = 200 / train.max_iter
