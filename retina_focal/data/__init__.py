"""Embedded synthetic dataset and dataset registration helpers.

Importing this module registers (lazily: nothing is generated until a split is loaded)
``synthetic_shapes_{train,val}`` (the default: 1200 / 200 images of 256x256) and
``synthetic_shapes_tiny_{train,val}`` (16 / 8 images of 128x128, some without any object, for
tests and smoke runs).
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
    "SyntheticConfig",
    "ensure_datasets",
    "generate_image",
    "register_synthetic_dataset",
    "write_split",
]

register_synthetic_dataset("synthetic_shapes", SyntheticConfig())
register_synthetic_dataset(
    "synthetic_shapes_tiny",
    SyntheticConfig(num_train=16, num_val=8, image_size=(128, 128), max_size=64.0,
                    min_objects=0, max_objects=4, num_clutter=6),
)
