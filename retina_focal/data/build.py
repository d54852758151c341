"""Detectron2's training data loader with a resumable, seeded data stream."""
import logging

from detectron2.data import (
    DatasetFromList,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data.build import build_batch_data_loader

from retina_focal.data.checks import sanitize_dataset_dicts
from retina_focal.data.mapper import RobustDatasetMapper
from retina_focal.data.samplers import ResumableTrainingSampler, SeededMapDataset

__all__ = ["ResumableLoader", "build_resumable_train_loader"]

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


def build_resumable_train_loader(cfg, mapper=None, dataset=None):
    """Detectron2's training loader (same dataset dicts, batching, aspect-ratio grouping,
    workers) with the resumable, seeded stream of :mod:`retina_focal.data.samplers`, boxes
    checked by :func:`sanitize_dataset_dicts` and images read by :class:`RobustDatasetMapper`.

    ``cfg.SEED >= 0`` fixes the stream; a negative seed draws one and stores it in
    checkpoints. A ``DATALOADER.SAMPLER_TRAIN`` other than ``TrainingSampler`` falls back to
    Detectron2's loader (its order then restarts on resume, with a warning).
    """
    if dataset is None:
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
        )
        dataset = sanitize_dataset_dicts(dataset, ",".join(cfg.DATASETS.TRAIN),
                                         cfg.MODEL.RETINANET.NUM_CLASSES)
    if mapper is None:
        mapper = RobustDatasetMapper(cfg, True)
    if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
        logger.warning(
            f"DATALOADER.SAMPLER_TRAIN={cfg.DATALOADER.SAMPLER_TRAIN}: using Detectron2's "
            "loader; its data order restarts when training is resumed"
        )
        return build_detection_train_loader(cfg, mapper=mapper, dataset=dataset)
    sampler = ResumableTrainingSampler(
        len(dataset), total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
        seed=cfg.SEED if cfg.SEED >= 0 else None,
    )
    data = SeededMapDataset(DatasetFromList(dataset, copy=False), mapper, sampler)
    loader = build_batch_data_loader(
        data, sampler, cfg.SOLVER.IMS_PER_BATCH,
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
    return ResumableLoader(loader, sampler)
