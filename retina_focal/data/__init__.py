"""Embedded synthetic dataset and dataset registration helpers.

Importing this module registers (lazily: nothing is generated until a split is loaded)
``synthetic_shapes_{train,val}`` (the default: 1200 / 200 images of 256x256) and
``synthetic_shapes_tiny_{train,val}`` (16 / 8 images of 128x128, some without any object, for
tests and smoke runs), and the imbalance presets ``synthetic_shapes_{sparse,sparser,sparsest}``
(:data:`IMBALANCE_PRESETS`).
"""
from retina_focal.data.datasets.builtin import ensure_datasets, register_synthetic_dataset
from retina_focal.data.datasets.synthetic import (
    CLASS_NAMES,
    SyntheticConfig,
    generate_image,
    write_split,
)

__all__ = [
    "CLASS_NAMES",
    "IMBALANCE_PRESETS",
    "SyntheticConfig",
    "ensure_datasets",
    "generate_image",
    "register_synthetic_dataset",
    "write_split",
]

# Foreground-background imbalance as a dataset knob: the same 256x256 images (so the same
# 12,276 anchors and the same cost per training step), with fewer and smaller objects per image
# and more clutter, part of it object-like (distractors: hard negatives). Each level has about
# 2.5x the negatives per positive anchor of the one before; docs/datasets.md gives the measured
# anchor statistics and COCO's beside them. The validation splits grow as objects thin out, so
# every level is evaluated on 800-1000 objects.
IMBALANCE_PRESETS = {
    "synthetic_shapes": SyntheticConfig(),
    "synthetic_shapes_sparse": SyntheticConfig(
        num_val=400, min_objects=1, max_objects=4, max_size=96.0, num_clutter=24,
        num_distractors=2),
    "synthetic_shapes_sparser": SyntheticConfig(
        num_val=600, min_objects=1, max_objects=2, max_size=64.0, num_clutter=36,
        num_distractors=4),
    "synthetic_shapes_sparsest": SyntheticConfig(
        num_val=1600, min_objects=0, max_objects=1, max_size=40.0, num_clutter=48,
        num_distractors=6),
}
for _prefix, _config in IMBALANCE_PRESETS.items():
    register_synthetic_dataset(_prefix, _config)
register_synthetic_dataset(
    "synthetic_shapes_tiny",
    SyntheticConfig(num_train=16, num_val=8, image_size=(128, 128), max_size=64.0,
                    min_objects=0, max_objects=4, num_clutter=6),
)
