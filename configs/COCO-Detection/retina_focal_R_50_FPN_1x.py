# LazyConfig twin of retina_focal_R_50_FPN_1x.yaml: the paper's RetinaNet (ResNet-50-FPN P3-P7,
# 9 anchors, focal loss) on COCO with Detectron2's 1x schedule (90k iterations of 16 images).
# Train with `tools/lazyconfig_train_net.py --config-file <this file>` (ours or Detectron2's:
# configs/common imports retina_focal, which registers everything the model needs).
from ..common.data.coco import dataloader
from ..common.models.retina_focal import model
from ..common.optim import SGD as optimizer
from ..common.schedule import warmup_multi_step
from ..common.train import train

train.output_dir = "./output/retina_focal_R_50_FPN_1x"
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.max_iter = 90000
train.memory_format = "contiguous"  # NCHW on GPUs ("channels_last" helps on a CPU)

lr_multiplier = warmup_multi_step(train.max_iter, steps=[60000, 80000])

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
