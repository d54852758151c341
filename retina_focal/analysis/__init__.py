"""Measurements of what the model's components do, computed without training.

Pure functions: they take tensors, numbers and callables, never a config.
"""
from retina_focal.analysis import assignment
from retina_focal.analysis.assignment import *  # noqa: F401,F403  (its __all__ is this package's)

__all__ = list(assignment.__all__)
