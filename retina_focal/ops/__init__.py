"""Tensor-level kernels. No config, no Detectron2 types: plain tensors in, tensors out."""
from retina_focal.ops.focal_loss import sigmoid_focal_loss, sigmoid_focal_loss_labels

__all__ = ["sigmoid_focal_loss", "sigmoid_focal_loss_labels"]
