"""Training that can be killed and resumed, runs on several CPU processes, and stops clearly
on a non-finite loss, for YAML and LazyConfig runs alike.

:class:`ReliableTrainerBase` is the loop both share, assembled from built parts (model,
optimizer, data loader); :class:`ReliableTrainer` builds them from a YAML config and takes
hooks and evaluation from Detectron2's ``DefaultTrainer``, and
``retina_focal.engine.lazy.LazyReliableTrainer`` builds them from a LazyConfig.

What differs from Detectron2's trainers (hooks, evaluation, logging are theirs):

* the training data stream is :class:`~retina_focal.data.samplers.ResumableTrainingSampler`:
  ``--resume`` continues it at the resumed iteration, with the same augmentation;
* the checkpoint holds the model, iteration, LR scheduler, the optimizer (Detectron2 0.6 drops
  it, so momentum and the next iteration's LR were lost on resume), the model's EMA
  ``loss_normalizer`` and the data-stream seed, and is written atomically
  (:class:`~retina_focal.engine.checkpoint.RetinaFocalCheckpointer`);
* several processes on CPU: the model is wrapped in ``DistributedDataParallel`` without
  ``device_ids`` when it lives on the CPU (Detectron2 always passes a GPU index);
* ``SOLVER.AMP.ENABLED`` (``train.amp.enabled``) on CPU trains under
  ``torch.autocast("cpu", dtype=torch.bfloat16)`` (Detectron2's ``AMPTrainer`` requires
  CUDA); bfloat16 has float32's exponent range, so no gradient scaling is needed. With
  ``MODEL.RETINA_FOCAL.CPU_BFLOAT16`` "native" (the default) only on a CPU with bfloat16
  instructions; elsewhere, where emulated bfloat16 is slower, it trains in float32 and says so;
* a non-finite loss stops every process with a ``FloatingPointError`` that names the
  iteration and the loss terms (Detectron2's own check raises on the main process only);
* the batch size, iteration count, learning rate and worker count are checked once, before
  anything is built (:func:`check_training_values`), the error naming the config key
  (Detectron2 would stop later, or not at all, with a message that names none).
"""
import logging
import math
import time
import weakref
from typing import Any, Dict, Iterable, List, Optional, Union

import torch
from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader
from detectron2.engine import (
    AMPTrainer,
    DefaultTrainer,
    HookBase,
    SimpleTrainer,
    TrainerBase,
    hooks,
)
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from retina_focal.config import InvalidArgument, check, check_integer
from retina_focal.data.build import ResumableLoader, build_resumable_train_loader
from retina_focal.data.class_map import class_map_of_datasets
from retina_focal.data.mapper import RobustDatasetMapper
from retina_focal.engine.checkpoint import (
    AllRanksPeriodicCheckpointer,
    ModelAttributeState,
    ProcessRngState,
    RetinaFocalCheckpointer,
)
from retina_focal.engine.device import check_cpu_bfloat16, use_cpu_bfloat16

__all__ = [
    "ReliableTrainer",
    "ReliableTrainerBase",
    "TRAINING_KEYS",
    "build_step_trainer",
    "check_training_values",
    "sync_buffers_from_main",
    "wrap_distributed",
]

logger = logging.getLogger(__name__)

# A training data loader: an endless iterable of batches, each a list of the model's input dicts
# (a ResumableLoader, or any loader Detectron2's trainers take)
TrainingLoader = Iterable[List[Dict[str, Any]]]

# The YAML config's keys for the arguments of check_training_values.
TRAINING_KEYS = {
    "batch_size": "SOLVER.IMS_PER_BATCH",
    "max_iter": "SOLVER.MAX_ITER",
    "base_lr": "SOLVER.BASE_LR",
    "num_workers": "DATALOADER.NUM_WORKERS",
    "cpu_bfloat16": "MODEL.RETINA_FOCAL.CPU_BFLOAT16",
}


def check_training_values(*, batch_size: object, max_iter: object, base_lr: object,
                          num_workers: object, num_processes: int,
                          cpu_bfloat16: object = None) -> None:
    """Raise :class:`~retina_focal.config.InvalidArgument` (naming the argument, which the
    callers rename to their config key) unless the values a training run uses make sense:

    * ``batch_size`` (images per iteration, all processes together) an integer > 0 divisible
      by ``num_processes``: each process loads ``batch_size / num_processes`` images;
    * ``max_iter`` an integer >= 0;
    * ``base_lr`` a finite number >= 0;
    * ``num_workers`` (data-loading processes) an integer >= 0;
    * ``cpu_bfloat16`` one of :data:`~retina_focal.engine.device.CPU_BFLOAT16_MODES`.

    ``None`` (a key the config does not have) is not checked.
    """
    if batch_size is not None:
        check(isinstance(batch_size, int) and not isinstance(batch_size, bool)
              and batch_size > 0 and batch_size % num_processes == 0, batch_size,
              key="batch_size",
              requirement=f"use an integer > 0 divisible by the number of processes "
                          f"({num_processes}): each process loads an equal share of the "
                          "images of an iteration")
    if max_iter is not None:
        check_integer(max_iter, key="max_iter", low=0)
    if base_lr is not None:
        check(isinstance(base_lr, (int, float)) and not isinstance(base_lr, bool)
              and math.isfinite(base_lr) and base_lr >= 0, base_lr, key="base_lr",
              requirement="use a finite value >= 0")
    if num_workers is not None:
        check_integer(num_workers, key="num_workers", low=0)
    if cpu_bfloat16 is not None:
        check_cpu_bfloat16(cpu_bfloat16)


def wrap_distributed(model: nn.Module, *, broadcast_buffers: bool = False,
                     fp16_compression: bool = False, **kwargs: Any) -> nn.Module:
    """``DistributedDataParallel`` when there are several processes, else ``model``.

    A GPU model goes through Detectron2's ``create_ddp_model`` (its local GPU, optional fp16
    gradient compression); a CPU model (GLOO) gets no ``device_ids``, which Detectron2 always
    passes. ``broadcast_buffers`` is off, as in Detectron2's trainers: every process computes
    the same buffers. ``kwargs`` go to ``DistributedDataParallel`` (e.g.
    ``find_unused_parameters``: a LazyConfig's ``train.ddp``).
    """
    if comm.get_world_size() == 1:
        return model
    if next(model.parameters()).device.type == "cuda":
        ddp_model: nn.Module = create_ddp_model(model, broadcast_buffers=broadcast_buffers,
                                                fp16_compression=fp16_compression, **kwargs)
        return ddp_model
    if fp16_compression:
        logger.warning("fp16 gradient compression is for GPUs: CPU processes exchange float32")
    return DistributedDataParallel(model, broadcast_buffers=broadcast_buffers, **kwargs)


class _FiniteLossCheck:
    """Mixin for Detectron2's step trainers: a non-finite loss term on any process stops all
    processes with a ``FloatingPointError`` naming the iteration, the terms and the ranks.
    Detectron2's own check (in ``write_metrics``, main process) still runs first."""

    iter: int  # the step trainer's

    def _write_metrics(self, loss_dict: Dict[str, torch.Tensor], data_time: float, *args: Any,
                       **kwargs: Any) -> None:
        bad = sorted(k for k, v in loss_dict.items() if not torch.isfinite(v.detach()).all())
        all_bad: List[List[str]] = comm.all_gather(bad) if comm.get_world_size() > 1 else [bad]
        where = "; ".join(f"{', '.join(b)} on process {r}" for r, b in enumerate(all_bad) if b)
        detail = (f"Non-finite loss at iteration {self.iter}: {where}. Lower SOLVER.BASE_LR, "
                  "check the data (boxes, images) or enable gradient clipping.")
        try:
            super()._write_metrics(  # type: ignore[misc]  # the step trainer's, after this mixin
                loss_dict, data_time, *args, **kwargs)
        except FloatingPointError as e:
            raise FloatingPointError(f"{e}\n{detail}") from e
        if where:  # processes other than the main one, which Detectron2 does not check
            raise FloatingPointError(detail)


# Detectron2 has no type information: its classes are Any to mypy (here and below)
class CheckedSimpleTrainer(_FiniteLossCheck, SimpleTrainer):  # type: ignore[misc]
    """Detectron2's ``SimpleTrainer`` with the all-process non-finite loss check."""


class CheckedAMPTrainer(_FiniteLossCheck, AMPTrainer):  # type: ignore[misc]
    """Detectron2's ``AMPTrainer`` (CUDA) with the all-process non-finite loss check."""


class CPUAutocastTrainer(CheckedSimpleTrainer):
    """Mixed precision on CPU: the forward pass under ``torch.autocast("cpu", bfloat16)``.

    bfloat16 keeps float32's exponent range, so unlike float16 it needs no loss scaling;
    losses that must be exact (the focal loss casts its logits) compute in float32.
    """

    def run_step(self) -> None:
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


def build_step_trainer(model: nn.Module, data_loader: TrainingLoader,
                       optimizer: torch.optim.Optimizer, *, amp: bool,
                       cpu_bfloat16: str = "native") -> SimpleTrainer:
    """The per-iteration trainer: plain, CUDA AMP, or CPU bfloat16 autocast (``amp`` on a CPU
    model, where :func:`~retina_focal.engine.device.use_cpu_bfloat16` of ``cpu_bfloat16``
    says so), each with the all-process non-finite loss check."""
    if not amp:
        return CheckedSimpleTrainer(model, data_loader, optimizer)
    if next(model.parameters()).device.type == "cuda":
        return CheckedAMPTrainer(model, data_loader, optimizer)
    if not use_cpu_bfloat16(cpu_bfloat16):
        logger.warning("Mixed precision is enabled, but this CPU has no bfloat16 instructions: "
                       "training in float32 (cpu_bfloat16='always' trains in emulated "
                       "bfloat16, which is slower here). A learning rate and schedule chosen "
                       "for bfloat16 may reach a lower AP in float32: the synthetic config's "
                       "float32 schedule is in docs/performance.md (time to accuracy)")
        return CheckedSimpleTrainer(model, data_loader, optimizer)
    logger.info("Mixed precision on CPU: training under torch.autocast('cpu', bfloat16)")
    return CPUAutocastTrainer(model, data_loader, optimizer)


def setup_logging() -> None:
    """Detectron2's logger, when nothing has set it up (a trainer built outside the tools):
    what ``DefaultTrainer`` does before it builds anything."""
    if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
        setup_logger()


def sync_buffers_from_main(model: nn.Module) -> None:
    """In a run of several processes, give every process the main process's buffers
    (BatchNorm's running statistics): each process updates its own while training (DDP with
    ``broadcast_buffers=False``, as Detectron2 wraps models) and only the main process's are
    saved, so an evaluation on several processes must use those to score the checkpoint that
    is written. Nothing to do in a run of one process. Call it on every process at once."""
    if comm.get_world_size() == 1:
        return
    module = model.module if isinstance(model, DistributedDataParallel) else model
    for buf in module.buffers():
        torch.distributed.broadcast(buf.data, src=0)


class ReliableTrainerBase(TrainerBase):  # type: ignore[misc]  # Detectron2's: Any to mypy
    """The training loop both config systems share, assembled from built parts: a model, its
    optimizer and the training data loader. It wraps the model for several processes
    (:func:`wrap_distributed`), picks the step trainer (:func:`build_step_trainer`) and
    checkpoints the model, iteration, hooks, optimizer, the model's EMA ``loss_normalizer``,
    the data-stream seed and the process's random generators (:class:`ProcessRngState`)
    atomically (:class:`RetinaFocalCheckpointer`); :meth:`resume_or_load`
    continues the data stream at the resumed iteration.

    Subclasses build the parts from their config, call ``__init__`` and register hooks:
    :class:`ReliableTrainer` (YAML) and ``retina_focal.engine.lazy.LazyReliableTrainer``.
    """

    def __init__(self, model: nn.Module, data_loader: TrainingLoader,
                 optimizer: torch.optim.Optimizer, *, amp: bool, output_dir: str,
                 init_checkpoint: str, max_iter: int, ddp: Optional[Dict[str, Any]] = None,
                 cpu_bfloat16: str = "native") -> None:
        """
        Args:
            model: the built model, on its device (not yet wrapped for several processes).
            data_loader: the training loader; a :class:`ResumableLoader` resumes its stream.
            optimizer: over ``model``'s parameters.
            amp: mixed precision (CUDA AMP, or bfloat16 autocast on CPU).
            output_dir: where checkpoints go.
            init_checkpoint: weights loaded when not resuming ("" for none).
            max_iter: iterations to train.
            ddp: keyword arguments of :func:`wrap_distributed`.
            cpu_bfloat16: with ``amp`` on a CPU, "native" (bfloat16 only where the CPU has
                bfloat16 instructions, float32 elsewhere) or "always".
        """
        TrainerBase.__init__(self)  # not super(): DefaultTrainer.__init__ builds from a cfg
        if not isinstance(data_loader, ResumableLoader):
            logger.warning(f"The training loader is a {type(data_loader).__name__}, not a "
                           "ResumableLoader: its data order restarts when training is resumed")
        self._train_loader = data_loader
        ddp_model = wrap_distributed(model, **(ddp or {}))
        self._trainer = build_step_trainer(ddp_model, data_loader, optimizer, amp=amp,
                                           cpu_bfloat16=cpu_bfloat16)
        checkpointables: Dict[str, Any] = {
            "trainer": weakref.proxy(self),
            "model_training_state": ModelAttributeState(model),
            "rng": ProcessRngState(),
        }
        if isinstance(data_loader, ResumableLoader):
            checkpointables["train_data_stream"] = data_loader.sampler
        self.checkpointer = RetinaFocalCheckpointer(ddp_model, output_dir, **checkpointables)
        self.init_checkpoint = init_checkpoint
        self.start_iter = 0
        self.max_iter = max_iter

    # the step trainer's objects, as Detectron2's DefaultTrainer exposes them
    @property
    def model(self) -> nn.Module:
        model: nn.Module = self._trainer.model
        return model

    @model.setter
    def model(self, value: nn.Module) -> None:
        self._trainer.model = value

    @property
    def data_loader(self) -> TrainingLoader:
        data_loader: TrainingLoader = self._trainer.data_loader
        return data_loader

    @data_loader.setter
    def data_loader(self, value: TrainingLoader) -> None:
        self._trainer.data_loader = value

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        optimizer: torch.optim.Optimizer = self._trainer.optimizer
        return optimizer

    @optimizer.setter
    def optimizer(self, value: torch.optim.Optimizer) -> None:
        self._trainer.optimizer = value

    def run_step(self) -> None:
        self._trainer.iter = self.iter
        try:
            self._trainer.run_step()
        except BaseException:
            self._step_failed = True  # see after_train
            raise

    _step_failed = False

    def after_train(self) -> None:
        """Detectron2's ``after_train`` of every hook, except that a run whose step failed is
        not evaluated: Detectron2's ``EvalHook`` skips a failed run only when it stopped
        before its last iteration, so a failure there printed a final evaluation (and its
        ``copypaste:`` lines) of a broken model before the error."""
        if not self._step_failed:
            super().after_train()
            return
        self.storage.iter = self.iter
        for h in self._hooks:
            if isinstance(h, hooks.EvalHook):
                logger.warning(f"Training failed at iteration {self.iter}: the final "
                               "evaluation is skipped")
                continue
            h.after_train()

    # Detectron2 0.6's DefaultTrainer checkpoints only the iteration and the hooks: the
    # optimizer (momentum, and the LR it runs the next iteration with) is lost on resume.
    # Official detectron2 saves it under the same "_trainer" key.
    def state_dict(self) -> Dict[str, Any]:
        ret: Dict[str, Any] = TrainerBase.state_dict(self)
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        TrainerBase.load_state_dict(self, state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        else:
            logger.warning("The checkpoint has no optimizer state: momentum restarts from zero")

    def resume_or_load(self, resume: bool = True) -> None:
        """With ``resume`` and a ``last_checkpoint`` in the output directory, load everything
        from it and continue after its iteration (the data stream too); otherwise load the
        model weights of ``init_checkpoint`` (if any) and start at iteration 0."""
        if resume and not self.checkpointer.has_checkpoint():
            logger.warning(f"--resume: {self.checkpointer.save_dir or 'the output directory'} "
                           "holds no checkpoint (last_checkpoint): training starts from "
                           "iteration 0 (a mistyped output directory?)")
        self.checkpointer.resume_or_load(self.init_checkpoint, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            self.start_iter = self.iter + 1  # a checkpoint stores the last finished iteration
        if isinstance(self._train_loader, ResumableLoader):
            self._train_loader.set_start_iter(self.start_iter)
            if self.start_iter > 0:
                logger.info(f"Training data stream resumes at iteration {self.start_iter}")


class ReliableTrainer(ReliableTrainerBase, DefaultTrainer):  # type: ignore[misc]  # (Any base)
    """``DefaultTrainer`` (hooks, evaluation, ``build_*`` methods) on
    :class:`ReliableTrainerBase`: resumable data, complete and atomic checkpoints, CPU
    multi-process and CPU mixed precision (see the module docstring)."""

    def __init__(self, cfg: CfgNode) -> None:
        setup_logging()
        world_size = comm.get_world_size()
        # divisibility is checked on the scaled batch when REFERENCE_WORLD_SIZE rescales it
        scaled = cfg.SOLVER.REFERENCE_WORLD_SIZE not in (0, world_size)
        self.check_training_config(cfg, 1 if scaled else world_size)
        cfg = DefaultTrainer.auto_scale_workers(cfg, world_size)
        if scaled:
            self.check_training_config(cfg, world_size)
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        super().__init__(model, data_loader, optimizer, amp=cfg.SOLVER.AMP.ENABLED,
                         output_dir=cfg.OUTPUT_DIR, init_checkpoint=cfg.MODEL.WEIGHTS,
                         max_iter=cfg.SOLVER.MAX_ITER,
                         cpu_bfloat16=cfg.MODEL.RETINA_FOCAL.CPU_BFLOAT16)
        # the training set's class map goes into every checkpoint (retina_focal.data.class_map)
        self.checkpointer.class_map = class_map_of_datasets(cfg.DATASETS.TRAIN)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def test(cls, cfg: CfgNode, model: nn.Module,
             evaluators: Union[DatasetEvaluator, List[DatasetEvaluator], None] = None
             ) -> Dict[str, Any]:
        """``DefaultTrainer.test`` on the main process's buffers (:func:`sync_buffers_from_main`),
        so that a multi-process evaluation scores the model the checkpoint holds."""
        sync_buffers_from_main(model)
        results: Dict[str, Any] = super().test(cfg, model, evaluators)
        return results

    def build_hooks(self) -> List[Optional[HookBase]]:
        """``DefaultTrainer``'s hooks, with :class:`AllRanksPeriodicCheckpointer` on every
        process in place of its main-process ``PeriodicCheckpointer`` (at the same place:
        before evaluation), so checkpoints hold every process's random generators."""
        ret: List[Optional[HookBase]] = [
            h for h in super().build_hooks() if not isinstance(h, hooks.PeriodicCheckpointer)]
        at = next((i for i, h in enumerate(ret) if isinstance(h, hooks.EvalHook)), len(ret))
        ret.insert(at, AllRanksPeriodicCheckpointer(self.checkpointer,
                                                    self.cfg.SOLVER.CHECKPOINT_PERIOD))
        return ret

    @staticmethod
    def check_training_config(cfg: CfgNode, num_processes: int) -> None:
        """:func:`check_training_values` on ``SOLVER.IMS_PER_BATCH``, ``SOLVER.MAX_ITER``,
        ``SOLVER.BASE_LR``, ``DATALOADER.NUM_WORKERS`` and
        ``MODEL.RETINA_FOCAL.CPU_BFLOAT16``, the error naming the key."""
        try:
            check_training_values(
                batch_size=cfg.SOLVER.IMS_PER_BATCH, max_iter=cfg.SOLVER.MAX_ITER,
                base_lr=cfg.SOLVER.BASE_LR, num_workers=cfg.DATALOADER.NUM_WORKERS,
                num_processes=num_processes, cpu_bfloat16=cfg.MODEL.RETINA_FOCAL.CPU_BFLOAT16)
        except InvalidArgument as e:
            raise e.naming(TRAINING_KEYS) from e

    @classmethod
    def build_train_loader(cls, cfg: CfgNode) -> TrainingLoader:
        return build_resumable_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg: CfgNode,
                          dataset_name: str) -> "DataLoader[Dict[str, Any]]":
        """Detectron2's test loader with :class:`RobustDatasetMapper` (any image mode; an
        unreadable file is an error naming it)."""
        loader: "DataLoader[Dict[str, Any]]" = build_detection_test_loader(
            cfg, dataset_name, mapper=RobustDatasetMapper(cfg, False))
        return loader
