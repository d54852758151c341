"""Export of trained models."""
from retina_focal.export.torchscript import (
    export_torchscript,
    run_traced,
    sample_image,
    trace_model,
)

__all__ = ["export_torchscript", "run_traced", "sample_image", "trace_model"]
