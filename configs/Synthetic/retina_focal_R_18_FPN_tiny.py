# LazyConfig twin of retina_focal_R_18_FPN_tiny.yaml: a seconds-long smoke run on the 16-image
# tiny synthetic dataset (128x128, some images without objects), a 2-layer GroupNorm head,
# 2 iterations.
from .retina_focal_R_18_FPN_synthetic import dataloader, lr_multiplier, model, optimizer, train

model.head.conv_dims = [64] * 2
# GroupNorm works with one image per batch, where BN cannot normalise P7's 1x1 map
model.head.norm = "GN"

dataloader.train.dataset.names = "synthetic_shapes_tiny_train"
dataloader.train.dataset.filter_empty = False  # images without objects must train too
dataloader.train.mapper.augmentations[0].short_edge_length = (128,)
dataloader.train.mapper.augmentations[0].max_size = 128
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 0
dataloader.test.dataset.names = "synthetic_shapes_tiny_val"
dataloader.test.mapper.augmentations[0].short_edge_length = 128
dataloader.test.mapper.augmentations[0].max_size = 128
dataloader.test.num_workers = 0

optimizer.lr = 0.01

train.output_dir = "./output/tiny_lazy"
train.max_iter = 2
train.checkpointer.period = 100000

lr_multiplier.scheduler.milestones = []
lr_multiplier.scheduler.values = [1.0]
lr_multiplier.warmup_length = 1 / train.max_iter

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
