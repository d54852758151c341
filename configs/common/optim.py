# Detectron2's SGD (SOLVER.MOMENTUM 0.9, WEIGHT_DECAY 1e-4, no decay on norm layers) at
# RetinaNet's base learning rate.
import torch
from detectron2.config import LazyCall as L
from detectron2.solver import get_default_optimizer_params

SGD = L(torch.optim.SGD)(
    params=L(get_default_optimizer_params)(weight_decay_norm=0.0),  # .model is set by the tool
    lr=0.01,
    momentum=0.9,
    weight_decay=1e-4,
)
