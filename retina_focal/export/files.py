"""Writing an exported model file: the format table and :func:`export_file`, which the export
command and the export benchmark call, and the sample image read from a file."""
import os

import torch

from retina_focal.data.mapper import read_image_any
from retina_focal.export.exported_program import CLASS_MAP_FILE, export_program
from retina_focal.export.onnx import export_onnx
from retina_focal.export.runtime import export_config

__all__ = ["CLASS_MAP_FILE", "FORMATS", "export_file", "read_sample_image"]

# --format -> file name in --output
FORMATS = {"torchscript": "model.ts", "onnx": "model.onnx", "exported-program": "model.pt2"}


def export_file(cfg, model, image: torch.Tensor, fmt: str, output: str, class_map,
                graph: str = "detector", input_dtype: str = "float32") -> str:
    """Export ``model`` (eval mode) in format ``fmt`` (``"onnx"`` or ``"exported-program"``)
    into the folder ``output``, traced on ``image`` (a ``(3, H, W)`` float tensor in the
    config's channel order), with ``class_map`` and the config's inference settings in the
    file; return the file's path.

    ``graph`` and ``input_dtype``: what the ONNX file holds (:func:`~retina_focal.export.onnx.
    export_onnx`); the exported program is always cut at the head."""
    path = os.path.join(output, FORMATS[fmt])
    graph = graph if fmt == "onnx" else "head"
    info = {"format": fmt, "torch": torch.__version__, "input_format": cfg.INPUT.FORMAT,
            # the caller's resize (Detectron2's ResizeShortestEdge), for clients to check
            "test_size": {"min_size": int(cfg.INPUT.MIN_SIZE_TEST),
                          "max_size": int(cfg.INPUT.MAX_SIZE_TEST)},
            "config": export_config(cfg, graph)}
    if fmt == "onnx":
        return export_onnx(model, image, path, info, class_map, graph, input_dtype)
    return export_program(model, image, path, info, class_map)


def read_sample_image(path: str, image_format: str) -> torch.Tensor:
    """The image file ``path`` as the model's ``(3, H, W)`` float input in ``image_format``
    (``"BGR"`` / ``"RGB"``), read as the data loader reads images
    (:func:`~retina_focal.data.mapper.read_image_any`: 16-bit scaled to 8 bits)."""
    return torch.as_tensor(read_image_any(path, format=image_format)
                           .transpose(2, 0, 1).copy()).float()
