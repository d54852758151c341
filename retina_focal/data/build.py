"""Detectron2's training data loader with a resumable, seeded data stream.

Two entry points build the same loader:

* :func:`build_resumable_train_loader` from a YAML config (``cfg``), as Detectron2's
  ``build_detection_train_loader(cfg)``;
* :func:`build_resumable_loader` from explicit arguments, for LazyConfig files::

      L(build_resumable_loader)(
          dataset=L(get_training_dataset_dicts)(names="coco_2017_train", num_classes=80),
          mapper=L(RobustDatasetMapper)(is_train=True, augmentations=[...], image_format="BGR"),
          total_batch_size=16, seed="${train.seed}", num_workers=4,
      )
"""
import itertools
import logging
import operator
import sys
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

import torch
import torch.utils.data as torchdata
from detectron2.config import CfgNode
from detectron2.data import (
    DatasetFromList,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data.build import worker_init_reset_seed
from detectron2.data.common import AspectRatioGroupedDataset
from detectron2.utils import comm

from retina_focal.data.checks import model_num_classes, sanitize_dataset_dicts
from retina_focal.data.mapper import RobustDatasetMapper
from retina_focal.data.samplers import ResumableTrainingSampler, SeededMapDataset

__all__ = [
    "ResumableLoader",
    "build_resumable_loader",
    "build_resumable_train_loader",
    "get_training_dataset_dicts",
]

logger = logging.getLogger(__name__)


class ResumableLoader:
    """A training data loader whose stream starts where :meth:`set_start_iter` says.

    The underlying ``DataLoader`` is iterated only when the first batch is requested, after
    ``resume_or_load`` has set the start: its worker processes (if any) copy the sampler at
    that moment.
    """

    def __init__(self, loader, sampler: ResumableTrainingSampler):
        self.loader = loader
        self.sampler = sampler

    def set_start_iter(self, start_iter: int) -> None:
        self.sampler.set_start_iter(start_iter)

    def __iter__(self):
        yield from self.loader


class _InterleavedStream(torchdata.IterableDataset):
    """The mapped stream of ``sampler``, split between ``DataLoader`` workers one element at a
    time: worker ``k`` of ``n`` maps elements ``k, k + n, k + 2n, ...``.

    PyTorch's ``DataLoader`` (batch size 1, in order) takes one element from each worker in
    turn, so it yields the elements in stream order for any ``n``. Detectron2's
    ``build_batch_data_loader`` shards differently by version (0.6: one element at a time
    but batches formed inside the workers without aspect-ratio grouping; main: chunks of a
    batch per worker), which made the batches depend on ``DATALOADER.NUM_WORKERS``; here the
    order never does, and batches are formed after it, in the main process.
    """

    def __init__(self, dataset: SeededMapDataset, sampler: ResumableTrainingSampler):
        self.dataset = dataset
        self.sampler = sampler

    def __iter__(self):
        keys = iter(self.sampler)
        worker = torchdata.get_worker_info()
        if worker is not None and worker.num_workers > 1:
            keys = itertools.islice(keys, worker.id, None, worker.num_workers)
        for key in keys:
            yield self.dataset[key]


class _ConsecutiveBatches:
    """Lists of ``batch_size`` consecutive elements of ``stream`` (no aspect-ratio
    grouping)."""

    def __init__(self, stream, batch_size: int):
        self.stream = stream
        self.batch_size = batch_size

    def __iter__(self):
        it = iter(self.stream)
        while True:
            batch = list(itertools.islice(it, self.batch_size))
            if len(batch) < self.batch_size:  # the stream is infinite; only for safety
                return
            yield batch


def get_training_dataset_dicts(
    names: Union[str, Sequence[str]], *, num_classes: int, filter_empty: bool = True
) -> List[Dict]:
    """Detectron2's ``get_detection_dataset_dicts(names, filter_empty)`` with the boxes checked
    by :func:`sanitize_dataset_dicts` against ``num_classes`` (the model's class count)."""
    dicts = get_detection_dataset_dicts(names, filter_empty=filter_empty)
    label = names if isinstance(names, str) else ",".join(names)
    return sanitize_dataset_dicts(dicts, label, num_classes)


def build_resumable_loader(
    dataset: List[Dict],
    *,
    mapper,
    total_batch_size: int,
    seed: int = -1,
    aspect_ratio_grouping: bool = True,
    num_workers: int = 0,
) -> ResumableLoader:
    """Detectron2's batching (aspect-ratio grouping, workers) over the resumable, seeded stream
    of :mod:`retina_focal.data.samplers`. The batches do not depend on ``num_workers`` (see
    :class:`_InterleavedStream`): a run resumed with other workers continues the same stream.

    Args:
        dataset: dataset dicts (e.g. from :func:`get_training_dataset_dicts`).
        mapper: maps a dataset dict to the model's input; ``None`` rejects the element (another
            one is drawn deterministically), as :class:`RobustDatasetMapper` does with
            ``skip_unreadable``.
        total_batch_size: images per iteration over all processes.
        seed: ``>= 0`` fixes the stream; negative draws one shared random seed (saved in
            checkpoints, so ``--resume`` continues the same stream either way).
        aspect_ratio_grouping, num_workers: as in Detectron2's ``build_detection_train_loader``.
    """
    world_size = comm.get_world_size()
    if total_batch_size % world_size != 0:
        raise ValueError(f"The total batch size (SOLVER.IMS_PER_BATCH, or total_batch_size) "
                         f"{total_batch_size} must be divisible by the number of processes "
                         f"({world_size})")
    batch_size = total_batch_size // world_size
    sampler = ResumableTrainingSampler(
        len(dataset), total_batch_size=total_batch_size, seed=seed if seed >= 0 else None
    )
    data = SeededMapDataset(DatasetFromList(dataset, copy=False), mapper, sampler)
    logger.info(f"Making the resumable training loader with batch_size={batch_size}")
    elements = torchdata.DataLoader(
        _InterleavedStream(data, sampler),
        num_workers=num_workers,
        collate_fn=operator.itemgetter(0),  # batch size 1: yield the element itself
        worker_init_fn=worker_init_reset_seed,
        # the workers' base seed comes from a generator of its own, not the process's torch
        # generator: drawing it there when the first batch is asked for (iteration 0 of a run,
        # the resumed iteration of a resumed one) would shift the draws the model makes
        # (Faster R-CNN's RoI sampling) in a resumed run. Elements are mapped with seeds of
        # their own (SeededMapDataset), so the workers' seed changes no data.
        generator=torch.Generator().manual_seed(0),
    )
    if aspect_ratio_grouping:
        batches = AspectRatioGroupedDataset(elements, batch_size)
    else:
        batches = _ConsecutiveBatches(elements, batch_size)
    return ResumableLoader(batches, sampler)


def build_resumable_train_loader(
    cfg: CfgNode,
    mapper: Optional[Callable[[Dict[str, Any]], Any]] = None,
    dataset: Optional[List[Dict[str, Any]]] = None,
) -> Iterable[List[Dict[str, Any]]]:
    """:func:`build_resumable_loader` from a YAML config: Detectron2's training loader (same
    dataset dicts, batching, aspect-ratio grouping, workers) with the resumable, seeded stream,
    boxes checked by :func:`sanitize_dataset_dicts` and images read by
    :class:`RobustDatasetMapper`.

    ``cfg.SEED >= 0`` fixes the stream; a negative seed draws one and stores it in
    checkpoints. A ``DATALOADER.SAMPLER_TRAIN`` other than ``TrainingSampler`` falls back to
    Detectron2's loader (its order then restarts on resume, with a warning).
    """
    if dataset is None:
        num_classes = model_num_classes(cfg)
        dataset = get_training_dataset_dicts(
            # a model without classes (ProposalNetwork) takes any category id >= 0
            cfg.DATASETS.TRAIN, num_classes=sys.maxsize if num_classes is None else num_classes,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        )
    if mapper is None:
        mapper = RobustDatasetMapper(cfg, True)
    if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
        logger.warning(
            f"DATALOADER.SAMPLER_TRAIN={cfg.DATALOADER.SAMPLER_TRAIN}: using Detectron2's "
            "loader; its data order restarts when training is resumed"
        )
        return build_detection_train_loader(cfg, mapper=mapper, dataset=dataset)
    return build_resumable_loader(
        dataset, mapper=mapper, total_batch_size=cfg.SOLVER.IMS_PER_BATCH, seed=cfg.SEED,
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
