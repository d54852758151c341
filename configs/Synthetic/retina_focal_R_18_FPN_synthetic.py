# LazyConfig twin of retina_focal_R_18_FPN_synthetic.yaml: RetinaFocal trained from scratch on
# CPU on the embedded synthetic shapes dataset (6 classes, 256x256 images), with a half-width
# BasicBlock ResNet-18 (res2..res5: 32, 64, 128, 256 channels), BatchNorm everywhere, and a
# 64-channel FPN / head. Everything else is the COCO config's.
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import ResNet
from detectron2.modeling.backbone.resnet import BasicStem

from retina_focal.modeling.backbone import make_basic_resnet_stages

from ..common.data.synthetic import synthetic_dataloader
from ..common.models.retina_focal import STRIDES, model
from ..common.optim import SGD as optimizer
from ..common.schedule import warmup_multi_step
from ..common.train import train

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
model.pixel_std = [57.375, 57.120, 58.395]

# the decoded training split (225 MiB) stays in memory: no loader processes needed
dataloader = synthetic_dataloader("synthetic_shapes", 256, total_batch_size=8, num_workers=0,
                                  decoded_image_cache_mb=512)

# bfloat16 autocast where the CPU has bfloat16 instructions, float32 elsewhere
# (train.amp.enabled = False: the exact float32 path); a 3x higher LR and 1400 iterations
# reach the AP of the float32 schedule (LR 0.02, 1700 iterations): 56.1 AP in 0.46-0.47x the
# time of the config before bfloat16 (Intel Xeon with AMX).
# In float32 (a CPU without bfloat16 instructions) this LR reached 47.3 AP (1250 iterations),
# not ~55: there, set train.amp.enabled = False, optimizer.lr = 0.02 and the 1700-iteration
# schedule (docs/performance.md#on-a-cpu-without-bfloat16-instructions)
optimizer.lr = 0.06

train.output_dir = "./output/synthetic_R18_lazy"
train.amp.enabled = True
train.max_iter = 1400
train.checkpointer.period = 1000
train.device = "cpu"
train.memory_format = "channels_last"
train.seed = 0

lr_multiplier = warmup_multi_step(train.max_iter, steps=[1100, 1300], warmup_iters=200)

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
