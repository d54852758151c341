"""The shared path of every command (``retina-focal`` and ``tools/*.py``) from a command line
to a model: one argument parser (:func:`default_argument_parser`: Detectron2's plus
``--dataset``), one way to build a YAML config (:func:`build_cfg`, and :func:`setup_cfg` for
training and evaluation runs), one way to build a model (:func:`build_model`) and one way to
load its weights (:func:`build_model_and_load`), and the trainer (:class:`Trainer`)."""
import argparse
import functools
import logging
import os
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Union

from detectron2.config import CfgNode, get_cfg
from detectron2.engine import default_argument_parser as d2_default_argument_parser
from detectron2.engine import default_setup
from detectron2.modeling import build_model as d2_build_model
from omegaconf import DictConfig
from torch import nn

from retina_focal.config import add_retina_focal_config
from retina_focal.config.loading import (
    add_allow_unsafe_config_argument,
    check_config_kind,
    merge_config_overrides,
    merge_yaml_config,
)
from retina_focal.data.checks import check_num_classes
from retina_focal.data.class_map import ClassMap, class_map_of_datasets, training_class_map
from retina_focal.data.datasets.coco import (
    add_dataset_argument,
    check_registered,
    register_dataset_specs,
)
from retina_focal.engine.checkpoint import CLASS_MAP_KEY, RetinaFocalCheckpointer
from retina_focal.engine.device import (
    apply_device_speedups_from_config,
    check_device_available,
)
from retina_focal.engine.launch import LaunchSettings
from retina_focal.engine.output_dir import (
    check_evaluation_start,
    check_training_start,
    claim_output_dir,
    keep_run_config,
    log_to_output_dir,
    release_output_dir,
    rollback_output_dir,
    snapshot_output_dir,
    start_output_dir,
)
from retina_focal.engine.trainer import ReliableTrainer
from retina_focal.evaluation.coco_report import COCOReportEvaluator
from retina_focal.utils.errors import UserError, reports_user_errors

__all__ = [
    "LoadedModel",
    "Trainer",
    "build_cfg",
    "build_model",
    "build_model_and_load",
    "default_argument_parser",
    "default_launch",
    "evaluate_checkpoint",
    "evaluate_loaded",
    "load_model_for_inference",
    "RunSettings",
    "setup_cfg",
    "start_run",
    "train_config",
    "train_or_evaluate",
]


def build_model(cfg: CfgNode) -> nn.Module:
    """The one way every tool and the trainer build a model from a YAML config: Detectron2's
    ``build_model`` (meta-architecture from the registry, moved to ``MODEL.DEVICE``), then,
    when the config has retina_focal's keys, the device speed-ups they ask for
    (``MODEL.RETINA_FOCAL.MEMORY_FORMAT`` / ``FOLD_FROZEN_BN``, see
    :mod:`retina_focal.engine.device`), before any optimizer or DistributedDataParallel sees
    the parameters."""
    check_device_available(cfg.MODEL.DEVICE, "MODEL.DEVICE")
    model: nn.Module = d2_build_model(cfg)
    if "RETINA_FOCAL" in cfg.MODEL:
        apply_device_speedups_from_config(model, cfg)
    return model


class Trainer(ReliableTrainer):
    """Detectron2's default trainer made resumable and multi-process on CPU
    (:class:`ReliableTrainer`), evaluating every test set with Detectron2's COCOEvaluator
    (:class:`COCOReportEvaluator`: it also writes per-category AP, PR curves and a JSON)."""

    @classmethod
    def build_model(cls, cfg: CfgNode) -> nn.Module:
        model = build_model(cfg)
        logging.getLogger(__name__).info(f"Model:\n{model}")
        return model

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str,
                        output_folder: Optional[str] = None) -> COCOReportEvaluator:
        """The evaluator of the model being trained: its classes are those of
        ``DATASETS.TRAIN``, matched by name with ``dataset_name``'s (another id order is
        renumbered; other names are an error). Evaluating a checkpoint:
        :func:`evaluate_checkpoint`."""
        names = ", ".join(cfg.DATASETS.TRAIN)
        return coco_report_evaluator(
            cfg, dataset_name, class_map_of_datasets(cfg.DATASETS.TRAIN),
            f"the model (trained on {names})", output_folder=output_folder,
        )


def coco_report_evaluator(cfg: CfgNode, dataset_name: str, class_map: Optional[ClassMap],
                          model_desc: str,
                          output_folder: Optional[str] = None) -> COCOReportEvaluator:
    """The :class:`COCOReportEvaluator` of ``dataset_name`` (box AP, report in
    ``OUTPUT_DIR/inference/<dataset>`` unless ``output_folder``), matching ``class_map`` (the
    model's classes, described in messages as ``model_desc``) with the dataset's by name."""
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    return COCOReportEvaluator(dataset_name, tasks=("bbox",), distributed=True,
                               output_dir=output_folder, class_map=class_map,
                               model_desc=model_desc)


def default_argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    """Detectron2's ``default_argument_parser`` (``--config-file``, ``--resume``,
    ``--eval-only``, ``--num-gpus``, ..., trailing ``KEY VALUE`` overrides) plus the repeatable
    ``--dataset NAME=JSON:IMAGE_DIR`` (:func:`register_dataset_specs` registers them) and
    ``--allow-unsafe-config`` (a YAML config with Python tags runs code: refused without it,
    see :mod:`retina_focal.config.loading`)."""
    parser = add_dataset_argument(d2_default_argument_parser(epilog))
    # an option is named in full: "--dataset" must not silently mean another "--dataset..."
    parser.allow_abbrev = False
    return add_allow_unsafe_config_argument(parser)


def build_cfg(config_file: Optional[str] = None, opts: Optional[Sequence[str]] = (), *,
              freeze: bool = True, allow_unsafe: bool = False) -> CfgNode:
    """The one way a YAML config is built: Detectron2's defaults, retina_focal's keys
    (:func:`add_retina_focal_config`), ``config_file`` (if given), then the ``KEY VALUE``
    overrides ``opts``.

    The file and its ``_BASE_`` files are read with a safe YAML loader
    (:func:`merge_yaml_config`): a Python tag (which would run code) is an
    ``UnsafeConfigError`` naming the file and line, unless ``allow_unsafe``
    (``--allow-unsafe-config``).

    A missing file is a ``ConfigFileNotFound`` (a ``FileNotFoundError``), a LazyConfig
    ``.py`` file a ``ConfigError`` naming the command that reads it; an unknown key (in the
    file or in ``opts``, with the closest existing keys), a value of the wrong type, an odd
    ``opts`` list and an option placed among ``opts`` are ``ConfigError`` too
    (:func:`merge_yaml_config`, :func:`merge_config_overrides`). Returned frozen unless
    ``freeze=False`` (for a caller that sets more keys, e.g. from its own options)."""
    if config_file:  # a missing file or a LazyConfig .py: ConfigError naming the fix
        config_file = check_config_kind(config_file, "yaml")  # a path, or a shipped name
    opts = list(opts or [])
    cfg = get_cfg()
    add_retina_focal_config(cfg)
    if config_file:
        merge_yaml_config(cfg, config_file, allow_unsafe=allow_unsafe)
    merge_config_overrides(cfg, opts)
    if freeze:
        cfg.freeze()
    return cfg


@dataclass(frozen=True)
class RunSettings:
    """What starting a run needs from its config, whichever the config system, and the keys
    that name each value in messages (the YAML config's by default)."""

    output_dir: str
    train_datasets: List[str]
    test_datasets: List[str]
    weights: str
    max_iter: Optional[int]
    keys: Dict[str, str] = field(default_factory=lambda: dict(
        output="OUTPUT_DIR", train="DATASETS.TRAIN", test="DATASETS.TEST",
        weights="MODEL.WEIGHTS", max_iter="SOLVER.MAX_ITER"))


def default_launch() -> LaunchSettings:
    """The processes a command asks for without ``--num-gpus`` and the like: the defaults of
    :func:`default_argument_parser`."""
    parser = default_argument_parser()
    # the settings' fields are named as the parser's options
    return LaunchSettings(**{f.name: parser.get_default(f.name) for f in fields(LaunchSettings)})


def start_run(cfg: Union[CfgNode, DictConfig], run: RunSettings, prepare: Callable[[], Any], *,
              config_file: str, opts: Sequence[str], eval_only: bool, resume: bool,
              datasets: Sequence[str], allow_unsafe: bool, launch: Optional[LaunchSettings],
              extra_options: Optional[Mapping[str, Any]] = None) -> None:
    """The start of a run, the same for both config systems (:func:`setup_cfg`,
    ``setup_lazy_cfg``): its datasets must be registered (training's only when it trains),
    then ``prepare()`` (the class-count check); then the run takes its output directory
    (:func:`~retina_focal.engine.output_dir.claim_output_dir`) after the checks that refuse
    a training run that would replace or mislabel a run's checkpoints
    (:func:`~retina_focal.engine.output_dir.check_training_start`) or an evaluation that would
    fail or overwrite another model's results (``check_evaluation_start``), remembers the
    directory to put it back if the run is refused before it starts, and runs Detectron2's
    ``default_setup`` (a run's own ``config.yaml`` stays when it is evaluated there).

    ``default_setup`` reads and logs a command line: it is given the one of a command of
    :func:`default_argument_parser` with these options (``launch`` None:
    :func:`default_launch`), then ``extra_options`` (a command's own options, logged too)."""
    keys = run.keys
    if not eval_only:
        check_registered(run.train_datasets, keys["train"])
    check_registered(run.test_datasets, keys["test"])
    prepare()
    if eval_only:  # an unreadable checkpoint, or another run's directory: refused here
        check = functools.partial(check_evaluation_start, run.output_dir, run.weights,
                                  resume=resume, weights_key=keys["weights"],
                                  output_key=keys["output"])
    else:
        check = functools.partial(
            check_training_start, run.output_dir, resume=resume,
            class_map=functools.partial(training_class_map, run.train_datasets),
            classes_desc=f"{keys['train']} ({', '.join(run.train_datasets)})",
            output_key=keys["output"], max_iter=run.max_iter, max_iter_key=keys["max_iter"],
            weights=run.weights, weights_key=keys["weights"])
    claim_output_dir(run.output_dir, check)
    snapshot_output_dir(run.output_dir)  # put back if the run is refused before it starts
    launch = launch or default_launch()
    # the fields, in their order, of the command line of default_argument_parser
    command_line = argparse.Namespace(
        config_file=config_file, resume=resume, eval_only=eval_only,
        num_gpus=launch.num_gpus, num_machines=launch.num_machines,
        machine_rank=launch.machine_rank, dist_url=launch.dist_url, opts=list(opts),
        dataset=list(datasets), allow_unsafe_config=allow_unsafe, **(extra_options or {}))
    with keep_run_config(run.output_dir, active=eval_only):  # a run's config.yaml stays
        default_setup(cfg, command_line)
    log_to_output_dir(run.output_dir)


def setup_cfg(config_file: str, opts: Sequence[str] = (), *, eval_only: bool = False,
              resume: bool = False, datasets: Sequence[str] = (), allow_unsafe: bool = False,
              launch: Optional[LaunchSettings] = None,
              extra_options: Optional[Mapping[str, Any]] = None) -> CfgNode:
    """Build a frozen config from ``config_file`` and the trailing ``KEY VALUE`` overrides
    ``opts`` (:func:`build_cfg`; ``allow_unsafe``: ``--allow-unsafe-config``), then run
    Detectron2's ``default_setup`` (output dir, logging, seed, config dump; ``launch`` and
    ``extra_options``: the rest of the command line it logs, see :func:`start_run`).

    ``datasets`` (``--dataset NAME=JSON:IMAGE_DIR``) are registered first, and the
    model's class count is checked against every dataset the config names (with
    ``eval_only``: ``DATASETS.TEST`` only, see :func:`check_num_classes`). Then the run
    takes ``OUTPUT_DIR`` (:func:`~retina_focal.engine.output_dir.claim_output_dir`: a second
    run there stops before writing anything; release it with ``release_output_dir``), and a
    training run is refused there if it would replace a run's checkpoints (no ``resume``) or
    resume one trained on other class names
    (:func:`~retina_focal.engine.output_dir.check_training_start`)."""
    register_dataset_specs(datasets)
    # a path, or a shipped config's name: Detectron2's default_setup reads the file too
    config_file = check_config_kind(config_file, "yaml")
    cfg = build_cfg(config_file, opts, freeze=False, allow_unsafe=allow_unsafe)

    def prepare() -> None:
        # the class count is checked, then the config frozen, after the datasets
        check_num_classes(cfg, evaluation_only=eval_only)
        cfg.freeze()

    start_run(cfg, RunSettings(
        output_dir=cfg.OUTPUT_DIR, train_datasets=list(cfg.DATASETS.TRAIN),
        test_datasets=list(cfg.DATASETS.TEST), weights=cfg.MODEL.WEIGHTS,
        max_iter=cfg.SOLVER.MAX_ITER), prepare, config_file=config_file, opts=opts,
        eval_only=eval_only, resume=resume, datasets=datasets, allow_unsafe=allow_unsafe,
        launch=launch, extra_options=extra_options)
    return cfg


class LoadedModel(NamedTuple):
    """A model loaded for inference (:func:`load_model_for_inference`)."""

    model: nn.Module  # in eval mode
    class_map: Optional[ClassMap]  # the checkpoint's classes; None: it records none
    weights: str  # the file read ("" when none)


def load_model_for_inference(cfg: CfgNode, weights: Optional[str] = None, *,
                             resume: bool = False) -> LoadedModel:
    """:func:`build_model` with every tensor loaded from its checkpoint, in eval mode, and the
    checkpoint's class map: what evaluation, the demo, export and the analysis tools run.

    Args:
        weights: the checkpoint; ``None`` means ``cfg.MODEL.WEIGHTS``; empty: none (the
            model keeps its initialisation; the caller says so).
        resume: load the last checkpoint of ``cfg.OUTPUT_DIR`` instead, if there is one
            (``--resume --eval-only``), as training resumes.

    Weights are read by :class:`RetinaFocalCheckpointer` with ``for_inference=True``: a
    missing, truncated or corrupt file, and a file that does not fit the model exactly (a
    tensor missing, left over or of another shape, e.g. another class count), are errors
    naming the file; nothing runs on weights that are partly random.
    """
    model = build_model(cfg)
    weights = cfg.MODEL.WEIGHTS if weights is None else weights
    checkpointer = RetinaFocalCheckpointer(model, save_dir=cfg.OUTPUT_DIR, for_inference=True)
    if resume and checkpointer.has_checkpoint():
        weights = checkpointer.get_checkpoint_file()
    extra = checkpointer.resume_or_load(weights, resume=resume)
    return LoadedModel(model.eval(), extra.get(CLASS_MAP_KEY), weights)


def build_model_and_load(cfg: CfgNode, weights: Optional[str] = None, *,
                         resume: bool = False) -> nn.Module:
    """The model of :func:`load_model_for_inference` (strict loading, eval mode)."""
    return load_model_for_inference(cfg, weights, resume=resume).model


def evaluate_checkpoint(cfg: CfgNode, weights: Optional[str] = None, *,
                        resume: bool = False) -> Dict[str, Any]:
    """Evaluate a checkpoint on every ``DATASETS.TEST`` (``retina-focal eval``,
    ``--eval-only``); return Detectron2's results.

    The model is loaded by :func:`load_model_for_inference` (it must fit exactly). The
    checkpoint's class map is matched by name with each test set's categories
    (:func:`~retina_focal.data.class_map.match_class_maps`): the same classes under other ids
    are renumbered, so results carry the test JSON's own ids; other names are a
    ``ValueError`` showing both lists. A checkpoint without a class map (Detectron2's, or an
    older one) is taken to have the test set's classes in its order (the class count was
    checked by :func:`setup_cfg`), and a warning says so. ``DATASETS.TRAIN`` is not read: the
    model's side is its checkpoint."""
    loaded = load_model_for_inference(cfg, weights, resume=resume)
    return evaluate_loaded(cfg, loaded, "checkpoint",
                           "(a Detectron2 or older checkpoint): only the class count was checked")


def evaluate_loaded(cfg: CfgNode, loaded: LoadedModel, kind: str,
                    why: str = "") -> Dict[str, Any]:
    """Evaluate ``loaded.model`` on every ``DATASETS.TEST`` with the COCO report evaluator,
    matching ``loaded.class_map`` with each test set's categories; return Detectron2's results.
    The one evaluation path of a checkpoint (:func:`evaluate_checkpoint`) and of an exported
    model (``retina_focal.export.runtime.evaluate_exported``): ``kind`` ("checkpoint",
    "exported model") names the file in the logs, and ``why`` says, in the warning about a
    missing class map, what such a file is."""
    if loaded.class_map is None and cfg.DATASETS.TEST:
        logging.getLogger(__name__).warning(
            f"The {kind} {loaded.weights!r} records no class map{' ' + why if why else ''}; "
            f"its {cfg.MODEL.RETINANET.NUM_CLASSES} outputs are taken to be the classes of "
            f"{', '.join(cfg.DATASETS.TEST)} in their order")
    desc = f"{kind} {os.path.basename(loaded.weights)!r}"
    evaluators = [coco_report_evaluator(cfg, name, loaded.class_map, desc)
                  for name in cfg.DATASETS.TEST]
    return Trainer.test(cfg, loaded.model, evaluators)


def train_or_evaluate(output_dir: str, *, eval_only: bool, resume: bool,
                      evaluate: Callable[[], Any], build_trainer: Callable[[], Any]) -> Any:
    """One process of a run set up (and its ``output_dir`` claimed) by :func:`setup_cfg` or
    ``setup_lazy_cfg``, for both config systems: ``evaluate()`` with ``eval_only``; else build
    the trainer, resume it (``resume``) or load its initial weights, and train. Returns what
    ``evaluate`` or the trainer's ``train`` returns.

    A :class:`~retina_focal.utils.errors.UserError` raised before training starts (a refused
    resume, a checkpoint that does not fit) puts ``output_dir`` back as it was; whatever
    happens, the directory is released at the end."""
    try:
        if eval_only:
            return evaluate()
        trainer = build_trainer()
        trainer.resume_or_load(resume=resume)
        start_output_dir(output_dir)  # built and loaded: from here its files are its output
        return trainer.train()
    except UserError:
        rollback_output_dir(output_dir)  # refused before it started: nothing changed there
        raise
    finally:
        start_output_dir(output_dir)
        release_output_dir(output_dir)


@reports_user_errors
def train_config(config_file: str, opts: Sequence[str] = (),
                 datasets: Sequence[str] = ()) -> Any:
    """Train the YAML config ``config_file`` with the ``KEY VALUE`` overrides ``opts`` in this
    process, from scratch (no resume), then evaluate as the config says: the run of
    ``retina-focal train --config-file CONFIG_FILE [--dataset SPEC ...] OPTS...`` on one
    process (``datasets``: the ``NAME=JSON:IMAGE_DIR`` specs it registers first), with the same
    setup, checks and output-directory guarantees (:func:`setup_cfg`,
    :func:`train_or_evaluate`). For code that trains a run of its own, e.g. the ablation runner
    (one process per setting). A :class:`~retina_focal.utils.errors.UserError` ends it with
    ``error: <message>`` and status 1. Returns the trainer's final evaluation."""
    cfg = setup_cfg(config_file, opts, datasets=datasets)
    return train_or_evaluate(cfg.OUTPUT_DIR, eval_only=False, resume=False,
                             evaluate=lambda: None, build_trainer=lambda: Trainer(cfg))
