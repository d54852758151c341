"""Frozen BatchNorm folded into the convolution before it.

A Detectron2 ``Conv2d`` with a ``FrozenBatchNorm2d`` computes ``(W * x) * s + t`` with the
frozen per-channel ``s = gamma / sqrt(var + eps)`` and ``t = beta - mean * s``. The same
value is ``(W s) * x + t``: one convolution with a scaled weight and a bias, instead of a
convolution followed by two elementwise passes over its output in the forward pass and one
more in the backward pass. On ImageNet-style backbones the activations are far larger than
the weights, so scaling the weight each step is cheap and the saved passes are not.

Folding swaps the module's class only: parameters, buffers and their names stay where they
were, so checkpoints, the optimizer and ``DetectionCheckpointer`` see no change.
"""
import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from torch import nn

__all__ = ["FrozenBNConv2d", "fold_frozen_batchnorm"]


# detectron2 ships no type information (no py.typed), so mypy sees its Conv2d as Any
class FrozenBNConv2d(Conv2d):  # type: ignore[misc]
    """A Detectron2 ``Conv2d`` whose ``norm`` is a ``FrozenBatchNorm2d``, computed as one
    convolution with the folded weight ``W * s`` (C_out, C_in, kh, kw) and bias ``t`` (C_out,).
    Gradients reach ``W`` (and the conv's own bias, if any) exactly as without folding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.norm
        scale = norm.weight * (norm.running_var + norm.eps).rsqrt()  # (C_out,)
        shift = norm.bias - norm.running_mean * scale
        conv_bias = self.bias
        if conv_bias is not None:
            shift = shift + conv_bias * scale
        weight = self.weight * scale.reshape(-1, 1, 1, 1)
        x = self._conv_forward(x, weight, shift)
        if self.activation is not None:
            x = self.activation(x)
        return x


def fold_frozen_batchnorm(module: nn.Module) -> int:
    """Make every Detectron2 ``Conv2d`` of ``module`` whose ``norm`` is a ``FrozenBatchNorm2d``
    a :class:`FrozenBNConv2d`, in place. Returns how many were folded."""
    folded = 0
    for m in module.modules():
        if type(m) is Conv2d and isinstance(getattr(m, "norm", None), FrozenBatchNorm2d):
            m.__class__ = FrozenBNConv2d
            folded += 1
    return folded
