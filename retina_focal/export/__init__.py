"""Export of trained models."""
from retina_focal.export.torchscript import run_traced, trace_model

__all__ = ["run_traced", "trace_model"]
