"""A Detectron2 ``DefaultTrainer`` that can be killed and resumed, runs on several CPU
processes, and stops clearly on a non-finite loss.

What differs from ``DefaultTrainer`` (everything else, hooks, evaluation, logging, is its own):

* the training data stream is :class:`~retina_focal.data.samplers.ResumableTrainingSampler`:
  ``--resume`` continues it at the resumed iteration, with the same augmentation;
* the checkpoint holds the model, iteration, LR scheduler, the optimizer (Detectron2 0.6 drops
  it, so momentum and the next iteration's LR were lost on resume), the model's EMA
  ``loss_normalizer`` and the data-stream seed, and is written atomically
  (:class:`~retina_focal.engine.checkpoint.RetinaFocalCheckpointer`);
* several processes on CPU: the model is wrapped in ``DistributedDataParallel`` without
  ``device_ids`` when it lives on the CPU (Detectron2 always passes a GPU index);
* ``SOLVER.AMP.ENABLED`` on CPU trains under ``torch.autocast("cpu", dtype=torch.bfloat16)``
  (Detectron2's ``AMPTrainer`` requires CUDA); bfloat16 has float32's exponent range, so no
  gradient scaling is needed;
* a non-finite loss stops every process with a ``FloatingPointError`` that names the
  iteration and the loss terms (Detectron2's own check raises on the main process only).
"""
import logging
import time
import weakref
from typing import Dict, List

import torch
from detectron2.data import build_detection_test_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from retina_focal.data.build import ResumableLoader, build_resumable_train_loader
from retina_focal.data.mapper import RobustDatasetMapper
from retina_focal.engine.checkpoint import ModelAttributeState, RetinaFocalCheckpointer

__all__ = ["ReliableTrainer", "build_step_trainer", "wrap_distributed"]

logger = logging.getLogger(__name__)

# Plain attributes of a model that change during training and are not in its state_dict.
_MODEL_TRAINING_STATE = ("loss_normalizer",)


def wrap_distributed(model: torch.nn.Module) -> torch.nn.Module:
    """``DistributedDataParallel`` when there are several processes; a CPU model gets no
    ``device_ids`` (GLOO), a GPU model its local GPU."""
    if comm.get_world_size() == 1:
        return model
    kwargs = {"broadcast_buffers": False}
    if next(model.parameters()).device.type == "cuda":
        kwargs["device_ids"] = [comm.get_local_rank()]
    return DistributedDataParallel(model, **kwargs)


class _FiniteLossCheck:
    """Mixin for Detectron2's step trainers: a non-finite loss term on any process stops all
    processes with a ``FloatingPointError`` naming the iteration, the terms and the ranks.
    Detectron2's own check (in ``write_metrics``, main process) still runs first."""

    def _write_metrics(self, loss_dict: Dict[str, torch.Tensor], data_time: float, *args,
                       **kwargs):
        bad = sorted(k for k, v in loss_dict.items() if not torch.isfinite(v.detach()).all())
        all_bad: List[List[str]] = comm.all_gather(bad) if comm.get_world_size() > 1 else [bad]
        where = "; ".join(f"{', '.join(b)} on process {r}" for r, b in enumerate(all_bad) if b)
        detail = (f"Non-finite loss at iteration {self.iter}: {where}. Lower SOLVER.BASE_LR, "
                  "check the data (boxes, images) or enable gradient clipping.")
        try:
            super()._write_metrics(loss_dict, data_time, *args, **kwargs)
        except FloatingPointError as e:
            raise FloatingPointError(f"{e}\n{detail}") from e
        if where:  # processes other than the main one, which Detectron2 does not check
            raise FloatingPointError(detail)


class CheckedSimpleTrainer(_FiniteLossCheck, SimpleTrainer):
    """Detectron2's ``SimpleTrainer`` with the all-process non-finite loss check."""


class CheckedAMPTrainer(_FiniteLossCheck, AMPTrainer):
    """Detectron2's ``AMPTrainer`` (CUDA) with the all-process non-finite loss check."""


class CPUAutocastTrainer(CheckedSimpleTrainer):
    """Mixed precision on CPU: the forward pass under ``torch.autocast("cpu", bfloat16)``.

    bfloat16 keeps float32's exponent range, so unlike float16 it needs no loss scaling;
    losses that must be exact (the focal loss casts its logits) compute in float32.
    """

    def run_step(self):
        assert self.model.training, "[CPUAutocastTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss_dict = self.model(data)
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        losses = sum(v.float() for v in loss_dict.values())
        self.optimizer.zero_grad()
        losses.backward()
        self._write_metrics(loss_dict, data_time)
        self.optimizer.step()


def build_step_trainer(cfg, model, data_loader, optimizer) -> SimpleTrainer:
    """The per-iteration trainer: plain, CUDA AMP, or CPU bfloat16 autocast."""
    if not cfg.SOLVER.AMP.ENABLED:
        return CheckedSimpleTrainer(model, data_loader, optimizer)
    if next(model.parameters()).device.type == "cuda":
        return CheckedAMPTrainer(model, data_loader, optimizer)
    logger.info("SOLVER.AMP.ENABLED on CPU: training under torch.autocast('cpu', bfloat16)")
    return CPUAutocastTrainer(model, data_loader, optimizer)


class ReliableTrainer(DefaultTrainer):
    """``DefaultTrainer`` with resumable data, complete and atomic checkpoints, CPU
    multi-process and CPU mixed precision (see the module docstring)."""

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        self._train_loader = data_loader
        ddp_model = wrap_distributed(model)
        self._trainer = build_step_trainer(cfg, ddp_model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)

        checkpointables = {
            "trainer": weakref.proxy(self),
            "model_training_state": ModelAttributeState(model, _MODEL_TRAINING_STATE),
        }
        if isinstance(data_loader, ResumableLoader):
            checkpointables["train_data_stream"] = data_loader.sampler
        self.checkpointer = RetinaFocalCheckpointer(ddp_model, cfg.OUTPUT_DIR, **checkpointables)
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_train_loader(cls, cfg):
        return build_resumable_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """Detectron2's test loader with :class:`RobustDatasetMapper` (any image mode; an
        unreadable file is an error naming it)."""
        return build_detection_test_loader(cfg, dataset_name,
                                           mapper=RobustDatasetMapper(cfg, False))

    # Detectron2 0.6's DefaultTrainer checkpoints only the iteration and the hooks: the
    # optimizer (momentum, and the LR it runs the next iteration with) is lost on resume.
    # Official detectron2 saves it under the same "_trainer" key.
    def state_dict(self):
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        else:
            logger.warning("The checkpoint has no optimizer state: momentum restarts from zero")

    def resume_or_load(self, resume: bool = True):
        super().resume_or_load(resume=resume)
        if isinstance(self._train_loader, ResumableLoader):
            self._train_loader.set_start_iter(self.start_iter)
            if self.start_iter > 0:
                logger.info(f"Training data stream resumes at iteration {self.start_iter}")
