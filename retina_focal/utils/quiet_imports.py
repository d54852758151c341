"""Detectron2 and fvcore imported without the FutureWarning they raise when imported.

Both script functions with ``torch.jit.script`` at import time (``fvcore.nn.focal_loss``,
``detectron2.modeling.box_regression``), which PyTorch now deprecates with a ``FutureWarning``:
every command, even ``retina-focal COMMAND --help``, printed it twice before anything else, and
nobody running retina_focal can act on it. Importing this module imports those modules with
exactly that warning ignored, and only while they are imported (``warnings.catch_warnings``):
a later ``torch.jit.script`` call (e.g. a TorchScript export) and every other warning, ours
included, still show. ``retina_focal/__init__.py`` imports it before anything else.
"""
import warnings

__all__ = ["JIT_SCRIPT_DEPRECATION"]

# the message of torch.jit.script's FutureWarning (torch >= 2.9; "not supported" on 3.14+)
JIT_SCRIPT_DEPRECATION = r"`torch\.jit\.script` is (deprecated|not supported)"

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=JIT_SCRIPT_DEPRECATION, category=FutureWarning)
    import detectron2.modeling  # noqa: F401
    import fvcore.nn  # noqa: F401
