# Learning-rate multipliers over training progress, as Detectron2's WarmupMultiStepLR
# (SOLVER.STEPS, GAMMA, WARMUP_ITERS, WARMUP_FACTOR, linear warm-up).
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler


def warmup_multi_step(max_iter, steps, warmup_iters=1000, gamma=0.1, warmup_factor=0.001):
    """x ``gamma`` at each of ``steps``, after a linear warm-up from ``warmup_factor`` over
    ``warmup_iters`` iterations (a fraction of ``max_iter``: change both together)."""
    return L(WarmupParamScheduler)(
        scheduler=L(MultiStepParamScheduler)(
            values=[gamma**k for k in range(len(steps) + 1)],
            milestones=list(steps),
            num_updates="${train.max_iter}",
        ),
        warmup_length=warmup_iters / max_iter,
        warmup_method="linear",
        warmup_factor=warmup_factor,
    )
