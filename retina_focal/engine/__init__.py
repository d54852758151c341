"""Training, evaluation and the shared command-line plumbing: one path builds every config,
model and weights (:mod:`.defaults` for YAML, :mod:`.lazy` for LazyConfig), one reliable trainer
core for both (:mod:`.trainer`), one launcher (:mod:`.launch`), one checkpointer
(:mod:`.checkpoint`) and the device speed-ups applied where models are built (:mod:`.device`).
"""
from retina_focal.engine.checkpoint import RetinaFocalCheckpointer
from retina_focal.engine.defaults import (
    Trainer,
    build_cfg,
    build_model,
    build_model_and_load,
    default_argument_parser,
    setup_cfg,
)
from retina_focal.engine.device import apply_device_speedups
from retina_focal.engine.launch import launch
from retina_focal.engine.lazy import LazyReliableTrainer, build_lazy_model, train_lazy
from retina_focal.engine.trainer import ReliableTrainer, ReliableTrainerBase

__all__ = [
    "LazyReliableTrainer",
    "ReliableTrainer",
    "ReliableTrainerBase",
    "RetinaFocalCheckpointer",
    "Trainer",
    "apply_device_speedups",
    "build_cfg",
    "build_lazy_model",
    "build_model",
    "build_model_and_load",
    "default_argument_parser",
    "launch",
    "setup_cfg",
    "train_lazy",
]
