"""TorchScript export through Detectron2's own deployment path (``TracingAdapter``).

The traced module takes one (C, H, W) image tensor (the model's ``INPUT.FORMAT``, 0-255) and
returns flat tensors; ``TracingAdapter.outputs_schema`` rebuilds Detectron2's
``[{"instances": Instances}]`` from them.
"""
from typing import Dict, List, Optional

import torch
from torch import nn

__all__ = ["export_torchscript", "run_traced", "sample_image", "trace_model"]


def trace_model(model: nn.Module, image: torch.Tensor):
    """Trace ``model`` (in eval mode) on one sample image.

    Args:
        model: a Detectron2 meta-architecture such as RetinaFocal.
        image: (C, H, W) sample input. The trace runs on other sizes, but each FPN level's
            cap of ``TOPK_CANDIDATES_TEST`` candidates is fixed at tracing: trace with an image
            at least as large as those it will see to get eager's detections exactly.

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


def sample_image(cfg) -> torch.Tensor:
    """A deterministic (3, S, S) float image of the config's test size S
    (``INPUT.MIN_SIZE_TEST``), values 0-255, to trace with (see :func:`trace_model` on other
    sizes)."""
    size = cfg.INPUT.MIN_SIZE_TEST
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (3, size, size), generator=g).float()


def export_torchscript(model: nn.Module, image: torch.Tensor, path: str,
                       atol: float = 1e-4, extra_files: Optional[Dict[str, str]] = None) -> Dict:
    """Trace ``model`` (eval mode) on ``image`` (C, H, W), save it to ``path``, load the saved
    file back and compare its detections on ``image`` with the eager model's.

    ``extra_files`` ({name: text}) are stored inside the TorchScript file (``torch.jit.load(path,
    _extra_files={name: ""})`` reads them back), e.g. the class map ``class_map.json``.

    Returns:
        ``{"path", "num_detections", "same", "max_box_difference", "max_score_difference"}``:
        ``same`` is whether the saved model gives the same detections as the eager one
        (:func:`~retina_focal.export.parity.compare_instances`: as many, the same classes,
        scores within ``atol``, boxes within ``atol`` plus a relative 1e-5; detections whose
        scores tie within ``atol`` may come out in either order).
    """
    from retina_focal.export.parity import BOX_RTOL, compare_instances

    traced, adapter = trace_model(model, image)
    traced.save(path, _extra_files=dict(extra_files or {}))
    with torch.no_grad():
        eager = model([{"image": image}])[0]["instances"]
    exported = run_traced(torch.jit.load(path), adapter, image)[0]["instances"]
    diff = compare_instances(eager, exported, atol=atol, box_rtol=BOX_RTOL, box_atol=atol)
    return {"path": path, "num_detections": len(exported), "same": diff["same"],
            "max_box_difference": diff["max_box_difference"],
            "max_score_difference": diff["max_score_difference"]}
