"""Export of trained models: ONNX (:mod:`.onnx`) and torch.export (:mod:`.exported_program`),
both cut at the head and run by :mod:`.runtime` with the eager post-processing, and
TorchScript (:mod:`.torchscript`). ``docs/export.md`` has the commands and measured figures."""
from retina_focal.export.runtime import (
    ExportedModel,
    ExportedModelError,
    evaluate_exported,
    is_exported_model,
    load_exported,
)
from retina_focal.export.torchscript import (
    export_torchscript,
    run_traced,
    sample_image,
    trace_model,
)

__all__ = ["ExportedModel", "ExportedModelError", "evaluate_exported", "export_torchscript",
           "is_exported_model", "load_exported", "run_traced", "sample_image", "trace_model"]
