"""The interface of a module whose training state is more than its ``state_dict``, and the one
such state both dense losses keep: the positive-anchor loss normaliser."""
from typing import Optional, Tuple

import torch

from retina_focal.utils.comm import sum_over_processes

__all__ = ["HasTrainingState", "positive_anchor_normalizer"]


class HasTrainingState:
    """A module with plain (non-tensor) attributes that change during training and are not in
    its ``state_dict``, such as an EMA loss normaliser. Training checkpoints save and restore
    the attributes named in ``training_state_attributes`` of every submodule of the model that
    is one (``retina_focal.engine.checkpoint.ModelAttributeState``), so that ``--resume``
    continues them instead of restarting them. A RetinaFocal's are saved under their own
    names, a submodule's under ``<submodule path>.<name>`` (a Faster R-CNN's FocalRPN:
    ``proposal_generator.loss_normalizer``)."""

    training_state_attributes: Tuple[str, ...] = ()
    # the "ema" normaliser's state (see positive_anchor_normalizer); unset until first used
    loss_normalizer: Optional[float]


def positive_anchor_normalizer(owner: HasTrainingState, mode: str, num_pos: int,
                               device: torch.device, *, momentum: float = 0.9,
                               initial: float = 100.0) -> float:
    """What a dense detector's losses are divided by: the positive anchors of the batch
    (``mode`` "batch", at least 1), or their exponential moving average ("ema", Detectron2's
    RetinaNet's: kept on ``owner.loss_normalizer``, starting from ``initial`` when the owner
    has none yet, updated as ``old * momentum + positives * (1 - momentum)``).

    With several processes the positives are counted over the whole batch (a collective:
    every process calls it) and the result is divided by the process count that
    DistributedDataParallel's gradient averaging divides by, so that training equals one
    process with the same total batch. RetinaFocal and FocalRPN both normalise with it."""
    total, num_procs = sum_over_processes(num_pos, device)
    total = max(total, 1)
    if mode == "ema":
        old = getattr(owner, "loss_normalizer", None)
        old = initial if old is None else old
        owner.loss_normalizer = old * momentum + total * (1 - momentum)
        total = owner.loss_normalizer
    elif mode != "batch":
        raise ValueError(f"normalizer mode {mode!r}: use 'batch' or 'ema'")
    return total / num_procs
