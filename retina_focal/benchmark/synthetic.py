"""The synthetic config's CPU time outside the convolutions, each speed-up against what it
replaces, alternating in one process (``tools/benchmark_synthetic.py``):

* ``mapper``: ms per training image for Detectron2's ``DatasetMapper``, ``RobustDatasetMapper``
  without a cache and with every image in its decoded-image cache;
* ``head_norm``: seconds per bfloat16 training step with the head's
  ``CycleBatchNormFusedList`` and with Detectron2's ``CycleBatchNormList`` forward.
"""
import statistics
import time
from typing import Dict, List

from retina_focal.benchmark.timing import log

__all__ = ["bench_head_norm", "bench_mapper"]


def bench_mapper(cfg, images: int, rounds: int) -> Dict:
    """Mean ms per image of each mapper over the same ``images`` training images, mapped in
    ``rounds`` slices with the mappers taking turns on each slice, so that drifts of the
    machine hit all three alike."""
    from detectron2.data import DatasetMapper

    from retina_focal.data.datasets.coco import load_registered
    from retina_focal.data.mapper import RobustDatasetMapper

    dicts = load_registered(cfg.DATASETS.TRAIN[0], "DATASETS.TRAIN")[:images]
    cached = RobustDatasetMapper(cfg, True, decoded_image_cache_mb=2**20)
    mappers = {"detectron2_DatasetMapper": DatasetMapper(cfg, True),
               "RobustDatasetMapper": RobustDatasetMapper(cfg, True, decoded_image_cache_mb=0),
               "RobustDatasetMapper_cached": cached}
    for d in dicts:
        cached(d)  # fills the cache
    total = {name: 0.0 for name in mappers}
    size = max(1, len(dicts) // rounds)
    for start in range(0, len(dicts), size):
        for name, mapper in mappers.items():
            t = time.perf_counter()
            for d in dicts[start:start + size]:
                mapper(d)
            total[name] += time.perf_counter() - t
    out = {name: 1e3 * t / len(dicts) for name, t in total.items()}
    log("  mapper, ms per image: " + ", ".join(f"{k} {v:.2f}" for k, v in out.items()))
    return {"ms_per_image": out, "images": len(dicts)}


def bench_head_norm(cfg, steps: int, rounds: int) -> Dict:
    """Median seconds per bfloat16 training step (``steps`` batches, ``rounds`` times each
    way, alternating) with the fused head BatchNorm and with Detectron2's forward."""
    from detectron2.layers import CycleBatchNormList
    from detectron2.solver import build_optimizer
    from detectron2.utils.events import EventStorage

    from retina_focal.benchmark.models import sgd_step
    from retina_focal.data.build import build_resumable_train_loader
    from retina_focal.engine.defaults import build_model
    from retina_focal.modeling.head import CycleBatchNormFusedList

    model = build_model(cfg)
    model.train()
    optimizer = build_optimizer(cfg, model)
    loader = iter(build_resumable_train_loader(cfg))
    batches = [next(loader) for _ in range(steps)]
    fused = CycleBatchNormFusedList.forward
    step_fns = [sgd_step(model, data, optimizer, bfloat16=True) for data in batches]

    def run_steps():
        start = time.perf_counter()
        for step in step_fns:
            step()
        return (time.perf_counter() - start) / len(step_fns)

    times: Dict[str, List[float]] = {"fused": [], "detectron2": []}
    try:
        with EventStorage(0):
            run_steps()  # warm-up
            for _ in range(rounds):
                for name in times:
                    # the class's forward is swapped on purpose (setattr: mypy refuses
                    # assigning to a method)
                    setattr(CycleBatchNormFusedList, "forward",
                            fused if name == "fused" else CycleBatchNormList.forward)
                    times[name].append(run_steps())
    finally:
        setattr(CycleBatchNormFusedList, "forward", fused)
    out = {name: statistics.median(t) for name, t in times.items()}
    log(f"  bfloat16 step, s: fused head BN {out['fused']:.4f}, Detectron2's "
        f"{out['detectron2']:.4f} (ratio {out['fused'] / out['detectron2']:.3f})")
    return {"s_per_step": out, "ratio": out["fused"] / out["detectron2"],
            "steps": steps, "rounds": rounds}
