# LazyConfig twin of retina_focal_R_101_FPN_3x.yaml: ResNet-101 backbone, 3x schedule.
from .retina_focal_R_50_FPN_3x import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
train.output_dir = "./output/retina_focal_R_101_FPN_3x"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
