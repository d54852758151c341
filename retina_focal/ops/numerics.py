"""The two numerical rules every loss in retina_focal follows, in one place."""
import torch
from torch import Tensor

__all__ = ["compute_dtype", "to_compute_dtype", "unit_pow"]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The precision a loss is computed (and accumulated) in for inputs of ``dtype``: float64
    stays float64, everything else (float16, bfloat16, float32) is float32, because sums over
    ~100k anchors and ``log``/``exp`` of saturated logits lose too much in half precision."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def to_compute_dtype(x: Tensor) -> Tensor:
    """``x`` in :func:`compute_dtype` (itself, without a copy, when it already is)."""
    return x.to(compute_dtype(x.dtype))


def unit_pow(base: Tensor, exponent: float) -> Tensor:
    """``base ** exponent`` for ``base`` in [0, 1], e.g. the focal term ``(1 - p_t) ** gamma``.

    For ``exponent < 1`` the derivative at ``base = 0`` is infinite, and a saturated score (base
    exactly 0, derivative of the base 0) would get 0 * inf = NaN as its gradient. The base is
    therefore kept >= the smallest normal float of its dtype: the gradient there is exactly 0
    and the value changes by less than that float raised to ``exponent``.
    """
    if exponent < 1:
        base = base.clamp(min=torch.finfo(base.dtype).tiny)
    return base.pow(exponent)
