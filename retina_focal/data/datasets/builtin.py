"""Register synthetic splits through Detectron2's COCO loader."""
import os
from typing import Iterable, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from retina_focal.data.datasets.synthetic import (
    CLASS_NAMES,
    SyntheticConfig,
    dataset_dir,
    ensure_generated,
)

__all__ = ["register_synthetic_dataset", "ensure_datasets"]

SPLITS = ("train", "val")


def register_synthetic_dataset(
    prefix: str, config: SyntheticConfig, cache_root: Optional[str] = None
) -> None:
    """Register ``<prefix>_train`` and ``<prefix>_val`` in Detectron2's catalogs.

    The images and COCO JSON are generated into the cache (``$RETINA_FOCAL_DATASETS``, by
    default ``~/.cache/retina_focal/datasets``) the first time a split is loaded; loading then
    goes through Detectron2's :func:`load_coco_json`, exactly as ``register_coco_instances``.
    """
    root = dataset_dir(config, cache_root)
    for split in SPLITS:
        name = f"{prefix}_{split}"

        def load(split=split, name=name):
            json_file = ensure_generated(config, split, root)
            return load_coco_json(json_file, os.path.join(root, split), name)

        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(
            json_file=os.path.join(root, f"{split}.json"),
            image_root=os.path.join(root, split),
            evaluator_type="coco",
            thing_classes=list(CLASS_NAMES),
            synthetic_config=config,
            synthetic_split=split,
        )


def ensure_datasets(names: Iterable[str]) -> None:
    """Generate the files of every synthetic dataset among ``names`` that is not cached yet.

    Call it before building an evaluator: COCOEvaluator reads the JSON file when it is built.
    """
    for name in names:
        meta = MetadataCatalog.get(name)
        config = getattr(meta, "synthetic_config", None)
        if config is not None:
            ensure_generated(config, meta.synthetic_split, os.path.dirname(meta.image_root))
