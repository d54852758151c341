# LazyConfig twin of retina_focal_R_50_FPN_3x.yaml: the 1x config with the 3x schedule
# (270k iterations, x0.1 at 210k and 250k).
from ..common.schedule import warmup_multi_step
from .retina_focal_R_50_FPN_1x import dataloader, model, optimizer, train

train.max_iter = 270000
train.output_dir = "./output/retina_focal_R_50_FPN_3x"
lr_multiplier = warmup_multi_step(train.max_iter, steps=[210000, 250000])

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
