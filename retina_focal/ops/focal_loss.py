"""Sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017).

With p = sigmoid(x) and target t in {0, 1} per (anchor, class):

    p_t     = p if t == 1 else 1 - p
    alpha_t = alpha if t == 1 else 1 - alpha          (alpha = -1: alpha_t = 1)
    FL      = -alpha_t * (1 - p_t) ** gamma * log(p_t)

``-log(p_t)`` is computed as ``softplus(-x)`` (t = 1) or ``softplus(x)`` (t = 0), which is
finite for any finite logit. gamma = 0 gives alpha-balanced binary cross entropy.
"""
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["sigmoid_focal_loss", "sigmoid_focal_loss_labels"]

_REDUCTIONS = ("none", "mean", "sum")


def _check(alpha: float, gamma: float, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"Invalid reduction {reduction!r}; choices: {_REDUCTIONS}")
    if not (alpha == -1 or 0.0 <= alpha <= 1.0):
        raise ValueError(f"Invalid alpha {alpha!r}: use a value in [0, 1] or -1")
    if not gamma >= 0:
        raise ValueError(f"Invalid gamma {gamma!r}: must be >= 0")


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    return loss


def _modulated(x: torch.Tensor, positive: bool, alpha: float, gamma: float) -> torch.Tensor:
    """Elementwise FL for logits ``x`` that all have the same target (1 if positive else 0)."""
    sign = -1.0 if positive else 1.0
    loss = F.softplus(sign * x)  # -log(p_t)
    if gamma != 0:
        p = torch.sigmoid(x)
        loss = loss * ((1 - p) if positive else p).pow(gamma)  # (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha if positive else 1 - alpha)
    return loss


def sigmoid_focal_loss(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> torch.Tensor:
    """Focal loss with dense targets; same signature and results as
    ``torchvision.ops.sigmoid_focal_loss``.

    Args:
        inputs: logits of any shape.
        targets: same shape as ``inputs``; 1 for the positive class, 0 otherwise (soft
            values in [0, 1] are accepted and interpolate the two terms' cross entropy).
        alpha: weight of positives in [0, 1]; -1 for no weighting.
        gamma: focusing parameter >= 0.
        reduction: "none" | "mean" | "sum".
    """
    _check(alpha, gamma, reduction)
    p = torch.sigmoid(inputs)
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return _reduce(loss, reduction)


def sigmoid_focal_loss_labels(
    logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "sum",
    weights: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Focal loss from integer anchor labels, without building a one-hot target.

    Args:
        logits: (R, K) class logits of R anchors.
        labels: (R,) int64: -1 ignored (no loss), 0..K-1 foreground class, K background.
        alpha, gamma: as in :func:`sigmoid_focal_loss`.
        reduction: "sum" (default, what RetinaNet normalises), "mean" over the (R, K)
            elements of non-ignored anchors, or "none" for the (R, K) loss (zero rows for
            ignored anchors).
        weights: optional (R,) per-anchor weights (e.g. from a sampler).

    The loss is computed in float32 (or float64) whatever the input precision, and returned
    in that precision.
    """
    _check(alpha, gamma, reduction)
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"Expected logits (R, K) and labels (R,); got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    num_classes = logits.shape[1]
    x = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    row_weight = (labels >= 0).to(x.dtype)
    if weights is not None:
        row_weight = row_weight * weights.to(x.dtype)
    # Every class of every anchor as if it were negative ...
    loss = _modulated(x, False, alpha, gamma) * row_weight[:, None]
    # ... then the one positive entry of each foreground anchor corrected.
    fg = torch.nonzero((labels >= 0) & (labels < num_classes)).squeeze(1)
    cls = labels[fg]
    x_fg = x[fg, cls]
    correction = (
        _modulated(x_fg, True, alpha, gamma) - _modulated(x_fg, False, alpha, gamma)
    ) * row_weight[fg]
    if reduction == "none":
        return loss.index_put((fg, cls), correction, accumulate=True)
    total = loss.sum() + correction.sum()
    if reduction == "mean":
        total = total / max((labels >= 0).sum().item() * num_classes, 1)
    return total
