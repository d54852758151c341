"""The interface of a module whose training state is more than its ``state_dict``."""
from typing import Tuple

__all__ = ["HasTrainingState"]


class HasTrainingState:
    """A module with plain (non-tensor) attributes that change during training and are not in
    its ``state_dict``, such as an EMA loss normaliser. Training checkpoints save and restore
    the attributes named in ``training_state_attributes`` of every submodule of the model that
    is one (``retina_focal.engine.checkpoint.ModelAttributeState``), so that ``--resume``
    continues them instead of restarting them. A RetinaFocal's are saved under their own
    names, a submodule's under ``<submodule path>.<name>`` (a Faster R-CNN's FocalRPN:
    ``proposal_generator.loss_normalizer``)."""

    training_state_attributes: Tuple[str, ...] = ()
