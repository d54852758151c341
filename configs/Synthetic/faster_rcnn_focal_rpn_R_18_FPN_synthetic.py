# LazyConfig twin of faster_rcnn_focal_rpn_R_18_FPN_synthetic.yaml: Faster R-CNN with the focal
# RPN trained from scratch on CPU on the embedded synthetic shapes dataset (6 classes, 256x256
# images): a half-width BasicBlock ResNet-18 (res2..res5: 32, 64, 128, 256 channels) with BN,
# a 64-channel FPN P2-P6, one anchor size per level from 16 px, a 256-wide box head on 128 RoIs
# per image. Everything else is the COCO config's.
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import ResNet
from detectron2.modeling.backbone.resnet import BasicStem

from retina_focal.modeling.backbone import make_basic_resnet_stages

from ..common.data.synthetic import synthetic_dataloader
from ..common.models.faster_rcnn_focal_rpn import STRIDES, model
from ..common.optim import SGD as optimizer
from ..common.schedule import warmup_multi_step
from ..common.train import train

WIDTH = 64  # FPN, RPN head and RoI feature channels
RES2 = 32  # ResNet width: res2..res5 have 32, 64, 128, 256 channels
BOX_HEAD_DIM = 256

model.backbone.bottom_up = L(ResNet)(
    stem=L(BasicStem)(in_channels=3, out_channels=RES2, norm="BN"),
    stages=L(make_basic_resnet_stages)(
        depth=18, stem_out_channels=RES2, res2_out_channels=RES2, norm="BN"
    ),
    out_features=["res2", "res3", "res4", "res5"],
    freeze_at=0,  # no pretrained weights: every layer trains
)
model.backbone.out_channels = WIDTH
model.backbone.norm = "BN"
rpn = model.proposal_generator
rpn.head.in_channels = WIDTH
rpn.anchor_generator.sizes = [[4 * s] for s in STRIDES]  # 16..256: objects are 12-128 px
rpn.post_nms_topk = (1000, 300)  # a few objects per image: a short CPU evaluation
roi_heads = model.roi_heads
roi_heads.num_classes = 6
roi_heads.batch_size_per_image = 128
roi_heads.box_head.input_shape = L(ShapeSpec)(channels=WIDTH, height=7, width=7)
roi_heads.box_head.fc_dims = [BOX_HEAD_DIM, BOX_HEAD_DIM]
roi_heads.box_predictor.input_shape = L(ShapeSpec)(channels=BOX_HEAD_DIM)
model.pixel_std = [57.375, 57.120, 58.395]

dataloader = synthetic_dataloader("synthetic_shapes", 256, total_batch_size=8, num_workers=2)
dataloader.train.dataset.num_classes = "${model.roi_heads.num_classes}"

optimizer.lr = 0.02

train.output_dir = "./output/synthetic_faster_rcnn_focal_rpn_R18_lazy"
train.max_iter = 600
train.checkpointer.period = 1000
train.device = "cpu"
train.memory_format = "channels_last"
train.seed = 0

lr_multiplier = warmup_multi_step(train.max_iter, steps=[480, 560], warmup_iters=100)

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
