"""Training, evaluation and the shared command-line plumbing: one path builds every config,
model and trainer (:mod:`.defaults`), one trainer (:mod:`.trainer`), one launcher
(:mod:`.launch`) and one checkpointer (:mod:`.checkpoint`)."""
from retina_focal.engine.checkpoint import RetinaFocalCheckpointer
from retina_focal.engine.defaults import Trainer, setup_cfg
from retina_focal.engine.launch import launch
from retina_focal.engine.trainer import ReliableTrainer

__all__ = ["ReliableTrainer", "RetinaFocalCheckpointer", "Trainer", "launch", "setup_cfg"]
