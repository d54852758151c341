"""Training and evaluation from a LazyConfig (Python) config, with the guarantees of the YAML
path: the same loop (:class:`~retina_focal.engine.trainer.ReliableTrainerBase`: atomic and
complete checkpoints, resumable data stream, all-process non-finite loss check, CPU bfloat16
autocast, CPU multi-process DDP) and the same weight loading
(:class:`~retina_focal.engine.checkpoint.RetinaFocalCheckpointer`).

A config has Detectron2's LazyConfig layout, so Detectron2's own
``tools/lazyconfig_train_net.py`` runs it too (without these guarantees):

* ``model``: instantiates to the model;
* ``dataloader.train`` / ``dataloader.test``: instantiate to data loaders (for ``--resume`` to
  continue the data stream, ``dataloader.train`` builds a
  :class:`~retina_focal.data.build.ResumableLoader`, see ``configs/common/data/``);
* ``dataloader.evaluator``: instantiates to the evaluator of the test loader (absent or
  ``None``: no evaluation);
* ``optimizer``: instantiates to an optimizer (its ``params.model`` is set here);
* ``lr_multiplier``: instantiates to an fvcore ``ParamScheduler`` over training progress;
* ``train``: ``output_dir``, ``init_checkpoint``, ``max_iter``, ``amp.enabled``, ``ddp``
  (:func:`~retina_focal.engine.trainer.wrap_distributed` options), ``checkpointer``
  (``period``, ``max_to_keep``), ``eval_period``, ``log_period``, ``device``, ``seed``, and
  the device speed-ups ``memory_format`` and ``fold_frozen_bn``
  (:func:`~retina_focal.engine.device.apply_device_speedups`).

Use it from Python as the tool does::

    cfg = setup_lazy_cfg(config_file, opts)  # load, overrides, class-count check, default_setup
    model = train_lazy(cfg, resume=False)  # or: run_evaluation(cfg, build_lazy_model_and_load(cfg))
"""
import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence

from detectron2.config import LazyConfig, instantiate
from detectron2.engine import HookBase, default_writers, hooks
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from omegaconf import DictConfig, OmegaConf
from torch import nn

from retina_focal.config import InvalidArgument
from retina_focal.config.lazy_keys import (
    argument_keys,
    check_lazy_call_arguments,
    check_lazy_overrides,
    lazy_call_nodes,
)
from retina_focal.config.loading import ConfigError, check_config_kind, load_lazy_config
from retina_focal.data.checks import check_lazy_num_classes, lazy_dataset_names
from retina_focal.data.class_map import class_map_of_datasets
from retina_focal.data.datasets.coco import register_dataset_specs
from retina_focal.engine.checkpoint import (
    CLASS_MAP_KEY,
    AllRanksPeriodicCheckpointer,
    RetinaFocalCheckpointer,
)
from retina_focal.engine.defaults import RunSettings, start_run
from retina_focal.engine.device import apply_device_speedups, check_device_available
from retina_focal.engine.launch import LaunchSettings
from retina_focal.engine.trainer import (
    ReliableTrainerBase,
    check_training_values,
    setup_logging,
    sync_buffers_from_main,
    wrap_distributed,
)
from retina_focal.evaluation.coco_report import set_lazy_evaluator_class_map

__all__ = [
    "DEVICE_SPEEDUP_KEYS",
    "LAZY_TRAINING_KEYS",
    "LazyReliableTrainer",
    "check_lazy_layout",
    "check_lazy_schedule",
    "check_lazy_training_config",
    "build_lazy_model",
    "build_lazy_model_and_load",
    "run_evaluation",
    "setup_lazy_cfg",
    "train_lazy",
]

logger = logging.getLogger(__name__)

# The LazyConfig's keys of what starting a run reads (engine.defaults.RunSettings)
LAZY_RUN_KEYS = dict(output="train.output_dir", train="dataloader.train.dataset.names",
                     test="dataloader.test.dataset.names", weights="train.init_checkpoint",
                     max_iter="train.max_iter")

# The LazyConfig's keys for the arguments of apply_device_speedups (memory_format and
# fold_frozen_bn are ours, not in Detectron2's configs/common/train.py).
DEVICE_SPEEDUP_KEYS = {
    "memory_format": "train.memory_format",
    "fold_frozen_bn": "train.fold_frozen_bn",
    "device": "train.device",
}

# The LazyConfig's keys for the arguments of check_training_values.
LAZY_TRAINING_KEYS = {
    "batch_size": "dataloader.train.total_batch_size",
    "max_iter": "train.max_iter",
    "base_lr": "optimizer.lr",
    "num_workers": "dataloader.train.num_workers",
    "cpu_bfloat16": "train.amp.cpu_bfloat16",
}


def check_lazy_training_config(cfg: DictConfig, num_processes: int) -> None:
    """:func:`~retina_focal.engine.trainer.check_training_values` on the LazyConfig's
    ``dataloader.train.total_batch_size``, ``train.max_iter``, ``optimizer.lr`` and
    ``dataloader.train.num_workers``, the error naming the key; a key the config does not have
    (e.g. a data loader built otherwise) is not checked."""
    values = {arg: OmegaConf.select(cfg, key, default=None)
              for arg, key in LAZY_TRAINING_KEYS.items()}
    try:
        check_training_values(**values, num_processes=num_processes)
    except InvalidArgument as e:
        raise e.naming(LAZY_TRAINING_KEYS) from e


# The top-level keys a run reads (module docstring), and the data loader of each kind of run
LAZY_TOP_KEYS = ("model", "dataloader", "optimizer", "lr_multiplier", "train")
LAZY_EVAL_TOP_KEYS = ("model", "dataloader", "train")


def check_lazy_layout(cfg: DictConfig, config_file: str, eval_only: bool = False) -> None:
    """Refuse, naming ``config_file``, a LazyConfig without the top-level keys a training run
    (``eval_only``: an evaluation) reads, or without its ``dataloader.train`` (``.test``),
    before anything runs: an empty file or one of plain values (``x = 1``, which
    ``LazyConfig.load`` leaves out) otherwise fails deep inside the trainer with omegaconf's
    ``Missing key train``."""
    needed = LAZY_EVAL_TOP_KEYS if eval_only else LAZY_TOP_KEYS
    missing = [key for key in needed if key not in cfg]
    loader = "dataloader.test" if eval_only else "dataloader.train"
    if "dataloader" not in missing and OmegaConf.select(cfg, loader, default=None) is None:
        missing.append(loader)
    if not missing:
        return
    has = ", ".join(str(k) for k in cfg.keys()) or "no config object at all"
    raise ConfigError(
        f"{config_file} is not a LazyConfig {'for evaluation' if eval_only else 'for training'}: "
        f"it defines no {', '.join(missing)} (it has {has}). A LazyConfig defines "
        f"{', '.join(needed)} at its top level, as config objects (LazyCall nodes or dicts; "
        "plain values are not read); start from a shipped one, e.g. "
        "configs/Synthetic/retina_focal_R_18_FPN_tiny.py")


def _interpolated_key(node: DictConfig, key: str) -> Optional[str]:
    """The key that ``node.key`` is a plain ``${other.key}`` interpolation of, if it is one."""
    raw = node._get_node(key)
    if raw is None or not raw._is_interpolation():
        return None
    text = str(raw._value())
    inner = text[2:-1]
    simple = text.startswith("${") and text.endswith("}") and "${" not in inner and ":" not in inner
    return inner if simple else None


def check_lazy_schedule(cfg: DictConfig) -> None:
    """Refuse, before a training run writes anything, an ``lr_multiplier`` that its scheduler
    classes would refuse only when the trainer builds it (fvcore's bare ``ValueError``, naming
    no key, after ``config.yaml`` and ``log.txt`` are written).

    A step schedule (a ``LazyCall`` with ``milestones`` and ``num_updates``, e.g. fvcore's
    ``MultiStepParamScheduler`` of ``configs/common/schedule.py``) must have every milestone
    below its ``num_updates``, which the shipped configs set to ``${train.max_iter}``: a
    smaller ``train.max_iter=30`` meets the file's milestones [1100, 1300]. The message names
    both keys. (Detectron2's YAML path drops ``SOLVER.STEPS`` beyond ``SOLVER.MAX_ITER`` with
    a warning instead; a LazyConfig's scheduler is the file's own object and is not edited
    here.) Then the schedule is built once, so that any other error of it names
    ``lr_multiplier``."""
    schedule = cfg.get("lr_multiplier")
    if schedule is None:
        return
    for path, node in lazy_call_nodes(schedule, "lr_multiplier"):
        if "milestones" not in node or "num_updates" not in node:
            continue
        milestones, num_updates = node.get("milestones"), node.get("num_updates")
        if not isinstance(num_updates, int) or milestones is None:
            continue  # nothing to compare: the scheduler reports it when built below
        values = list(milestones)
        late = [m for m in values if isinstance(m, (int, float)) and m >= num_updates]
        if not late:
            continue
        source = _interpolated_key(node, "num_updates")
        length = f"{source}={num_updates}" if source else f"{path}.num_updates={num_updates}"
        raise ConfigError(
            f"{path}.milestones={values} has {'milestones' if len(late) > 1 else 'a milestone'} "
            f"{', '.join(map(str, late))} at or beyond {length}, the number of iterations the "
            f"schedule spans (fvcore refuses it): give {path}.milestones increasing values "
            f"below {num_updates}, or a {source or path + '.num_updates'} above {max(late)}")
    try:
        instantiate(schedule)
    except Exception as e:  # the scheduler's own check, e.g. fvcore's ValueError
        raise ConfigError(f"lr_multiplier cannot be built: {type(e).__name__}: {e}") from e


def build_lazy_model(cfg: DictConfig) -> nn.Module:
    """``cfg.model`` instantiated, moved to ``train.device`` and given the device speed-ups
    ``train.memory_format`` / ``train.fold_frozen_bn``, before any optimizer or
    ``DistributedDataParallel`` sees its parameters."""
    missing = [v for v in DEVICE_SPEEDUP_KEYS.values() if v.split(".")[1] not in cfg.train]
    if missing:
        raise ValueError(
            f"The LazyConfig has no {', '.join(missing)}: set train.memory_format ('auto', "
            "'channels_last' or 'contiguous'), train.fold_frozen_bn (True or False) and "
            "train.device, e.g. by starting from configs/common/train.py"
        )
    check_device_available(cfg.train.device, "train.device")
    try:
        model: nn.Module = instantiate(cfg.model)
    except InvalidArgument as e:  # named by its full key, e.g. model.head.prior_prob
        raise e.naming(argument_keys(cfg.model, "model", e)) from e
    model.to(cfg.train.device)
    try:
        return apply_device_speedups(model, memory_format=cfg.train.memory_format,
                                     fold_frozen_bn=cfg.train.fold_frozen_bn,
                                     device=cfg.train.device)
    except InvalidArgument as e:
        raise e.naming(DEVICE_SPEEDUP_KEYS) from e


def build_lazy_model_and_load(cfg: DictConfig) -> nn.Module:
    """:func:`build_lazy_model` wrapped for several processes, with the weights of
    ``train.init_checkpoint`` read by :class:`RetinaFocalCheckpointer` (a missing, truncated or
    mismatched file is an error naming it): what ``--eval-only`` evaluates."""
    model = wrap_distributed(build_lazy_model(cfg), **cfg.train.ddp)
    extra = RetinaFocalCheckpointer(model, for_inference=True,  # every tensor must fit
                                    num_classes_key="model.num_classes",
                                    ).load(cfg.train.init_checkpoint)
    # the evaluator matches the checkpoint's classes with the test set's by name
    set_lazy_evaluator_class_map(cfg, extra.get(CLASS_MAP_KEY), "train.init_checkpoint")
    return model


def run_evaluation(cfg: DictConfig, model: nn.Module) -> Dict[str, Any]:
    """Evaluate ``model`` on ``dataloader.test`` with ``dataloader.evaluator``; return the
    results (empty on processes other than the main one, and without an evaluator)."""
    if cfg.dataloader.get("evaluator") is None:
        logger.warning("The config has no dataloader.evaluator: nothing to evaluate")
        return {}
    loader = instantiate(cfg.dataloader.test)
    evaluator = instantiate(cfg.dataloader.evaluator)
    sync_buffers_from_main(model)  # the checkpoint's buffers on every process
    results: Dict[str, Any] = inference_on_dataset(model, loader, evaluator)
    if comm.is_main_process():
        print_csv_format(results)
    return results


class LazyReliableTrainer(ReliableTrainerBase):
    """:class:`ReliableTrainerBase` built from a LazyConfig, with the hooks of Detectron2's
    ``tools/lazyconfig_train_net.py``: iteration timer, ``lr_multiplier``, periodic
    checkpoints (``train.checkpointer``), evaluation every ``train.eval_period`` iterations
    and at the end, metrics (printer with ETA, ``metrics.json``, TensorBoard) every
    ``train.log_period``.

    ::

        trainer = LazyReliableTrainer(cfg)
        trainer.resume_or_load(resume=False)   # train.init_checkpoint, or the last checkpoint
        trainer.train()
    """

    def __init__(self, cfg: DictConfig) -> None:
        setup_logging()
        check_lazy_training_config(cfg, comm.get_world_size())
        model = build_lazy_model(cfg)
        logger.info(f"Model:\n{model}")
        cfg.optimizer.params.model = model
        optimizer = instantiate(cfg.optimizer)
        data_loader = instantiate(cfg.dataloader.train)
        super().__init__(model, data_loader, optimizer, amp=cfg.train.amp.enabled,
                         output_dir=cfg.train.output_dir,
                         init_checkpoint=cfg.train.init_checkpoint,
                         max_iter=cfg.train.max_iter, ddp=cfg.train.ddp,
                         # "native" where a LazyConfig predates the key, as in YAML configs
                         cpu_bfloat16=OmegaConf.select(cfg, "train.amp.cpu_bfloat16",
                                                       default="native"))
        # the training set's class map: into every checkpoint, and to the evaluator
        self.checkpointer.class_map = class_map_of_datasets(lazy_dataset_names(cfg, "train"))
        set_lazy_evaluator_class_map(cfg, self.checkpointer.class_map, "dataloader.train")
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self) -> List[Optional[HookBase]]:
        cfg = self.cfg
        main_process = comm.is_main_process()
        return [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            AllRanksPeriodicCheckpointer(self.checkpointer, **cfg.train.checkpointer),
            hooks.EvalHook(cfg.train.eval_period, lambda: run_evaluation(cfg, self.model)),
            hooks.PeriodicWriter(default_writers(cfg.train.output_dir, self.max_iter),
                                 period=cfg.train.log_period)
            if main_process else None,
        ]

    def train(self) -> None:
        """Train from ``start_iter`` (see :meth:`resume_or_load`) to ``train.max_iter``."""
        super().train(self.start_iter, self.max_iter)


def train_lazy(cfg: DictConfig, resume: bool = False) -> nn.Module:
    """Train with :class:`LazyReliableTrainer` (``resume``: continue from the last checkpoint
    of ``train.output_dir``, if any); return the trained model (wrapped for several processes
    when there are several)."""
    trainer = LazyReliableTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer.model


def setup_lazy_cfg(config_file: str, opts: Sequence[str] = (), *, eval_only: bool = False,
                   resume: bool = False, datasets: Sequence[str] = (),
                   allow_unsafe: bool = False, launch: Optional[LaunchSettings] = None,
                   extra_options: Optional[Mapping[str, Any]] = None) -> DictConfig:
    """The LazyConfig of ``config_file`` with the ``key=value`` overrides ``opts``,
    after registering the ``datasets`` (``--dataset``); the model's class count checked against
    the datasets it names; the run takes ``train.output_dir``
    (:func:`~retina_focal.engine.output_dir.claim_output_dir`: a second run there stops before
    writing anything, and a training run that would replace a run's checkpoints or resume
    one trained on other class names is refused, see
    :func:`~retina_focal.engine.output_dir.check_training_start`); Detectron2's
    ``default_setup`` run (output dir, logging, seed, config dump; ``launch`` and
    ``extra_options``: the rest of the command line it logs, see
    :func:`~retina_focal.engine.defaults.start_run`)."""
    # a missing file or a Detectron2 YAML config: ConfigError naming the fix
    # a path, or a shipped config's name: Detectron2's default_setup reads the file too
    config_file = check_config_kind(config_file, "lazy")
    register_dataset_specs(datasets)
    # a .yaml LazyConfig is read safely (LazyConfig.load would use yaml.unsafe_load); a .py
    # file that cannot run (syntax, a failed import, ...) is an error naming the file and line
    cfg: DictConfig = load_lazy_config(config_file, allow_unsafe=allow_unsafe)
    check_lazy_layout(cfg, config_file, eval_only=eval_only)
    # a misspelt key (override or LazyCall argument): ConfigError naming it, not ignored
    opts = list(opts)
    check_lazy_overrides(cfg, opts)
    cfg = LazyConfig.apply_overrides(cfg, opts)
    check_lazy_call_arguments(cfg)
    if not eval_only:  # milestones beyond train.max_iter: refused before anything is written
        check_lazy_schedule(cfg)
    start_run(cfg, RunSettings(
        output_dir=lazy_output_dir(cfg), train_datasets=lazy_dataset_names(cfg, "train"),
        test_datasets=lazy_dataset_names(cfg, "test"),
        weights=OmegaConf.select(cfg, "train.init_checkpoint", default=""),
        max_iter=OmegaConf.select(cfg, "train.max_iter"), keys=LAZY_RUN_KEYS),
        lambda: check_lazy_num_classes(cfg, evaluation_only=eval_only),
        config_file=config_file, opts=opts, eval_only=eval_only, resume=resume,
        datasets=datasets, allow_unsafe=allow_unsafe, launch=launch,
        extra_options=extra_options)
    return cfg


def lazy_output_dir(cfg: DictConfig) -> str:
    """The LazyConfig's ``train.output_dir`` ("" when it has none)."""
    output_dir: str = OmegaConf.select(cfg, "train.output_dir", default="")
    return output_dir
