# LazyConfig twin of faster_rcnn_focal_rpn_R_50_FPN_1x.yaml: Detectron2's Faster R-CNN R50-FPN
# 1x (90k iterations of 16 images, LR 0.02) with the focal RPN (configs/common/models/
# faster_rcnn_focal_rpn.py). Train with `tools/lazyconfig_train_net.py --config-file <this file>`.
from ..common.data.coco import dataloader
from ..common.models.faster_rcnn_focal_rpn import model
from ..common.optim import SGD as optimizer
from ..common.schedule import warmup_multi_step
from ..common.train import train

# the training stream checks category ids against the R-CNN's class count
dataloader.train.dataset.num_classes = "${model.roi_heads.num_classes}"

optimizer.lr = 0.02

train.output_dir = "./output/faster_rcnn_focal_rpn_R_50_FPN_1x"
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.max_iter = 90000
train.memory_format = "contiguous"  # NCHW on GPUs ("channels_last" helps on a CPU)

lr_multiplier = warmup_multi_step(train.max_iter, steps=[60000, 80000])

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
