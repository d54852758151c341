"""ONNX export of a RetinaNet-style model: the whole detector
(:mod:`retina_focal.export.detector_graph`, ``graph="detector"``, the default) or the network
cut at its head (:mod:`retina_focal.export.graph`, ``graph="head"``).

Exporter: ``torch.onnx.export(..., dynamo=False)``, the TorchScript-based exporter, at opset
:data:`OPSET`. Why not the dynamo exporter (``dynamo=True``, torch.onnx's default from torch
2.9)? Measured with torch 2.9 and onnxscript 0.7 on RetinaFocal R18-FPN: it fails in its first
step (``torch.export``) with H and W dynamic. The padding to the size divisibility
(``(H + 31) // 32 * 32``) makes torch.export ask for inputs that are multiples of 32, and the
FPN's P7 convolution on a 1-pixel-wide map adds a guard that W > 128 ("Constraints violated
(height, width)"). The TorchScript-based exporter records the padding as ONNX shape arithmetic:
the graph takes any H and W (checked at three sizes in ``tests/export/test_export_onnx.py``).

Both graphs take ``image``, one (3, H, W) image in ``INPUT.FORMAT``, 0-255, any H, W (resized
to the test size beforehand, as eager's data loader / predictor does; float32, or uint8 for a
detector graph exported with ``input_dtype="uint8"``); normalisation and padding are inside.

* ``detector``: outputs ``boxes`` (N, 4) float32 XYXY in the input's pixels, ``scores`` (N,),
  ``classes`` (N,) int64: the final detections, with the test-time keys frozen in the graph.
* ``head``: outputs ``logits_<level>`` (1, A*C, Hi, Wi) and ``deltas_<level>`` (1, A*4, Hi,
  Wi), the head's raw outputs; post-processing runs outside
  (:mod:`retina_focal.export.runtime`), so the test-time keys stay config keys.

Metadata (``metadata_props``): ``class_map`` (JSON: the checkpoint's class map, or null) and
``retina_focal`` (JSON: the export info: ``graph``, ``input_format``, ``input_dtype``, and the
config keys the graph and the post-processing depend on, checked when the file is loaded).
"""
import json
import warnings
from typing import Dict, Optional

import torch
from torch import nn

from retina_focal.export.detector_graph import DETECTOR_OUTPUTS, INPUT_DTYPES, DetectorGraph
from retina_focal.export.graph import DenseHeadGraph

__all__ = ["CLASS_MAP_PROP", "EXPORTER", "GRAPHS", "INFO_PROP", "OPSET", "export_onnx",
           "read_metadata"]

OPSET = 17
EXPORTER = "torch.onnx.export(dynamo=False) (TorchScript-based)"
CLASS_MAP_PROP = "class_map"
INFO_PROP = "retina_focal"
GRAPHS = ("detector", "head")  # what an ONNX file holds (the first is the default)


def export_onnx(model: nn.Module, image: torch.Tensor, path: str, info: Dict,
                class_map: Optional[list], graph: str = "detector",
                input_dtype: str = "float32") -> str:
    """Export ``model`` (eval mode) to ``path``, with H and W dynamic: the whole detector
    (``graph="detector"``) or the network up to its head (``graph="head"``).

    Args:
        image: a (3, H, W) sample image (``INPUT.FORMAT``, 0-255) to trace with; the graph
            runs on every size.
        info: the export info stored as the ``retina_focal`` metadata (JSON-serialisable);
            ``graph`` and ``input_dtype`` are added to it.
        class_map: stored as the ``class_map`` metadata (JSON).
        input_dtype: the input's dtype, ``"float32"`` or ``"uint8"`` (detector graph only).
    """
    import onnx

    if graph not in GRAPHS:
        raise ValueError(f"graph={graph!r} is invalid: use one of {GRAPHS}")
    if input_dtype not in INPUT_DTYPES:
        raise ValueError(f"input_dtype={input_dtype!r} is invalid: use one of "
                         f"{sorted(INPUT_DTYPES)}")
    if graph == "head" and input_dtype != "float32":
        raise ValueError("the head graph takes float32 images: input_dtype='uint8' needs "
                         "graph='detector'")
    dynamic_axes = {"image": {1: "height", 2: "width"}}
    if graph == "detector":
        module: nn.Module = DetectorGraph(model).eval()
        names = list(DETECTOR_OUTPUTS)
        dynamic_axes.update({name: {0: "detections"} for name in names})
        image = image.to(INPUT_DTYPES[input_dtype])
    else:
        head_graph = DenseHeadGraph(model, preprocess=True).eval()
        module = head_graph
        in_features = head_graph.model.head_in_features  # model's, checked by DenseHeadGraph
        num_levels = len(in_features)
        names = ([f"logits_{f}" for f in in_features]
                 + [f"deltas_{f}" for f in in_features])
        for i, name in enumerate(names):
            level = i % num_levels
            dynamic_axes[name] = {2: f"height_{level}", 3: f"width_{level}"}
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript-based exporter is chosen on purpose (module docstring)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(module, (image,), path, dynamo=False, opset_version=OPSET,
                          input_names=["image"], output_names=names,
                          dynamic_axes=dynamic_axes)
    info = dict(info, graph=graph, input_dtype=input_dtype, opset=OPSET, exporter=EXPORTER)
    proto = onnx.load(path)
    for key, value in ((CLASS_MAP_PROP, class_map),
                       (INFO_PROP, info)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(proto, path)
    return path


def read_metadata(proto_or_meta) -> Dict[str, str]:
    """``{key: value}`` of an ONNX model's ``metadata_props`` (an ``onnx.ModelProto``)."""
    return {p.key: p.value for p in proto_or_meta.metadata_props}
