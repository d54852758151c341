# LazyConfig twin of retina_focal_R_18_FPN_tiny.yaml: a seconds-long smoke run on the 16-image
# tiny synthetic dataset (128x128, some images without objects), a 2-layer GroupNorm head,
# 2 iterations.
from ..common.data.synthetic import synthetic_dataloader
from ..common.schedule import warmup_multi_step
from .retina_focal_R_18_FPN_synthetic import model, optimizer, train

model.head.conv_dims = [64] * 2
# GroupNorm works with one image per batch, where BN cannot normalise P7's 1x1 map
model.head.norm = "GN"

# filter_empty=False: images without objects must train too; decoded images kept in memory
# as in the synthetic config
dataloader = synthetic_dataloader("synthetic_shapes_tiny", 128, total_batch_size=4,
                                  num_workers=0, filter_empty=False, decoded_image_cache_mb=512)

optimizer.lr = 0.01

train.output_dir = "./output/tiny_lazy"
train.amp.enabled = False  # float32: the same numbers on every CPU
train.max_iter = 2
train.checkpointer.period = 100000

lr_multiplier = warmup_multi_step(train.max_iter, steps=[], warmup_iters=1)

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
