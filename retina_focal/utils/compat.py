"""The only module that knows Detectron2 variants differ.

retina_focal runs on the official detectron2 (any recent main) and on PyPI's pb1-detectron2
0.6 as installed by ``scripts/setup.sh`` (Python sources only, ``detectron2._C`` a stand-in).
"""
import functools
import inspect
from typing import Dict

__all__ = ["has_compiled_ops", "coco_evaluator_kwargs", "release_local_process_group",
           "set_local_process_group"]


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


def set_local_process_group(num_per_machine: int, machine_rank: int, world_size: int) -> None:
    """Create Detectron2's per-machine process group (``comm.get_local_rank`` needs it) after
    ``init_process_group``: official detectron2 has ``comm.create_local_process_group``, 0.6
    reads the module attribute ``comm._LOCAL_PROCESS_GROUP``. Every process must call it."""
    import torch.distributed as dist
    from detectron2.utils import comm

    create = getattr(comm, "create_local_process_group", None)
    if create is not None:
        create(num_per_machine)
        return
    for machine in range(world_size // num_per_machine):
        ranks = list(range(machine * num_per_machine, (machine + 1) * num_per_machine))
        group = dist.new_group(ranks)  # collective: every process creates every group
        if machine == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group


def release_local_process_group() -> None:
    """Drop Detectron2's references to its process groups (the per-machine one, and the one
    ``comm.gather`` caches) after
    ``destroy_process_group``, so that its GLOO object is freed now, while the interpreter is
    alive. Left to interpreter shutdown, freeing a GLOO group can abort the process
    ("terminate called without an active exception")."""
    import gc

    from detectron2.utils import comm

    comm._LOCAL_PROCESS_GROUP = None
    # Detectron2's cached groups: the per-machine group (official main) and the group its
    # gather / all_gather use (both versions; with GLOO it is the WORLD group itself, which
    # the cache would keep alive past destroy_process_group)
    for name in ("create_local_process_group", "_get_global_gloo_group"):
        cached = getattr(comm, name, None)
        if cached is not None and hasattr(cached, "cache_clear"):
            cached.cache_clear()
    gc.collect()
