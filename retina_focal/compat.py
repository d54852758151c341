"""The only module that knows Detectron2 variants differ.

retina_focal runs on the official detectron2 (any recent main) and on PyPI's pb1-detectron2
0.6 as installed by ``scripts/setup.sh`` (Python sources only, ``detectron2._C`` a stand-in).
"""
import functools
import inspect
from typing import Dict

__all__ = ["has_compiled_ops", "coco_evaluator_kwargs"]


@functools.lru_cache(maxsize=None)
def has_compiled_ops() -> bool:
    """True when detectron2's compiled extension ``detectron2._C`` is really there."""
    try:
        from detectron2 import _C
    except ImportError:
        return False
    return not getattr(_C, "RETINA_FOCAL_STUB", False)


def coco_evaluator_kwargs() -> Dict:
    """Keyword arguments for :class:`COCOEvaluator` that work on this detectron2: the fast
    (compiled) COCO evaluation only where the compiled extension exists."""
    from detectron2.evaluation import COCOEvaluator

    kwargs = {}
    if "use_fast_impl" in inspect.signature(COCOEvaluator.__init__).parameters:
        kwargs["use_fast_impl"] = has_compiled_ops()
    return kwargs
