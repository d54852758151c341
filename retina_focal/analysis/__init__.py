"""Measurements of what the model's components do, computed without training.

Pure functions: they take tensors, numbers and callables, never a config.
"""
from .assignment import (
    COCO_SIZE_BUCKETS,
    analyze_image,
    feature_grid_sizes,
    format_table,
    gt_as_model_sees_it,
    plot_summaries,
    size_bucket,
    summarize,
    resized_image_size,
)

__all__ = [
    "COCO_SIZE_BUCKETS",
    "analyze_image",
    "feature_grid_sizes",
    "format_table",
    "gt_as_model_sees_it",
    "plot_summaries",
    "size_bucket",
    "summarize",
    "resized_image_size",
]
