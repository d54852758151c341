"""TorchScript export through Detectron2's own deployment path (``TracingAdapter``).

The traced module takes one (C, H, W) image tensor (the model's ``INPUT.FORMAT``, 0-255) and
returns flat tensors; ``TracingAdapter.outputs_schema`` rebuilds Detectron2's
``[{"instances": Instances}]`` from them.
"""
from typing import Dict, List

import torch
from torch import nn

__all__ = ["trace_model", "run_traced"]


def trace_model(model: nn.Module, image: torch.Tensor):
    """Trace ``model`` (in eval mode) on one sample image.

    Args:
        model: a Detectron2 meta-architecture such as RetinaFocal.
        image: (C, H, W) sample input; the traced graph works for other sizes as well.

    Returns:
        (traced ScriptModule, TracingAdapter): the adapter's ``outputs_schema`` turns the
        traced outputs back into ``[{"instances": Instances}]``.
    """
    from detectron2.export import TracingAdapter

    if model.training:
        raise ValueError("trace_model needs a model in eval mode: call model.eval() first")
    adapter = TracingAdapter(model, [{"image": image}])
    with torch.no_grad():
        traced = torch.jit.trace(adapter, adapter.flattened_inputs)
    return traced, adapter


def run_traced(traced, adapter, image: torch.Tensor) -> List[Dict]:
    """Run a traced model on one (C, H, W) image; returns ``[{"instances": Instances}]``."""
    with torch.no_grad():
        return adapter.outputs_schema(traced(image))
