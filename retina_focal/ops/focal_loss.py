"""Sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017).

With p = sigmoid(x) and target t in {0, 1} per (anchor, class k):

    p_t     = p if t == 1 else 1 - p
    alpha_t = alpha_k if t == 1 else 1 - alpha_k      (alpha = -1: alpha_t = 1)
    FL      = -alpha_t * (1 - p_t) ** gamma * log(p_t)

``alpha`` is one float shared by every class (the paper) or a (K,) tensor of per-class
alphas. ``-log(p_t)`` is computed as ``softplus(-x)`` (t = 1) or ``softplus(x)`` (t = 0),
which is finite for any finite logit. gamma = 0 gives alpha-balanced binary cross entropy.
"""
import logging
import os
from typing import Optional, Sequence, Set, Union

import torch
import torch.nn.functional as F

from retina_focal.ops._cpu_kernel import KernelUnavailable, load_kernel
from retina_focal.ops._fused import alpha_vectors, focal_loss_op
from retina_focal.ops.numerics import compute_dtype, to_compute_dtype, unit_pow

__all__ = [
    "sigmoid_focal_loss", "sigmoid_focal_loss_labels", "Alpha", "IMPLS", "IMPL_ENV",
    "resolve_impl",
]

logger = logging.getLogger(__name__)

_REDUCTIONS = ("none", "mean", "sum")
# "auto": the fused path where it can run, else the portable one; "portable": eager PyTorch
# ops, exact, any device; "fused": the fused path, or an error saying why it cannot run.
IMPLS = ("auto", "portable", "fused")
# Environment variable that chooses the implementation when the caller leaves it to "auto".
IMPL_ENV = "RETINA_FOCAL_FOCAL_IMPL"

Alpha = Union[float, Sequence[float], torch.Tensor]


def _check(alpha: Alpha, gamma: float, reduction: str,
           num_classes: Optional[int] = None) -> Union[float, torch.Tensor]:
    """Validate the arguments; return alpha as a float or a 1-D tensor."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"Invalid reduction {reduction!r}; choices: {_REDUCTIONS}")
    if not gamma >= 0:
        raise ValueError(f"Invalid gamma {gamma!r}: must be >= 0")
    if isinstance(alpha, (list, tuple)):
        alpha = torch.tensor(alpha, dtype=torch.float64)
    if isinstance(alpha, torch.Tensor):
        if alpha.dim() != 1 or not alpha.is_floating_point():
            raise ValueError(
                f"Invalid alpha: a per-class alpha must be a 1-D float tensor of K values; got "
                f"shape {tuple(alpha.shape)}, dtype {alpha.dtype}"
            )
        if num_classes is not None and alpha.numel() != num_classes:
            raise ValueError(
                f"Invalid alpha: per-class alpha has {alpha.numel()} values but there are "
                f"{num_classes} classes"
            )
        # a check of values, skipped where a graph is traced: see _check_labels_inputs
        tracing = torch.compiler.is_compiling()
        if not tracing and not bool(((alpha >= 0) & (alpha <= 1)).all()):
            raise ValueError(f"Invalid alpha {alpha.tolist()}: per-class values must be in [0, 1]")
        return alpha
    alpha = float(alpha)  # type: ignore[arg-type]  # a sequence became a tensor above
    if not (alpha == -1 or 0.0 <= alpha <= 1.0):
        raise ValueError(f"Invalid alpha {alpha!r}: use a value in [0, 1] or -1")
    return alpha


def _modulated(x: torch.Tensor, positive: bool, alpha: Union[None, float, torch.Tensor],
               gamma: float) -> torch.Tensor:
    """Elementwise FL for logits ``x`` that all have the same target (1 if positive else 0).

    ``alpha`` is None (no balancing), a float, or a tensor broadcastable to ``x``.
    """
    sign = -1.0 if positive else 1.0
    loss = F.softplus(sign * x)  # -log(p_t)
    if gamma != 0:
        loss = loss * unit_pow(torch.sigmoid(sign * x), gamma)  # (1 - p_t) ** gamma
    if alpha is not None:
        loss = loss * (alpha if positive else 1 - alpha)
    return loss


def sigmoid_focal_loss(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    alpha: Union[float, torch.Tensor] = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> torch.Tensor:
    """Focal loss with dense targets; same signature and results as
    ``torchvision.ops.sigmoid_focal_loss``, and like it compilable with ``torch.jit.script``.

    Args:
        inputs: logits of any shape (..., K).
        targets: same shape as ``inputs``; 1 for the positive class, 0 otherwise (soft
            values in [0, 1] are accepted and interpolate the two terms' cross entropy).
        alpha: weight of positives in [0, 1]; -1 for no weighting; or a (K,) tensor (or, in
            Python, a list) of per-class weights, broadcast over the last dimension.
        gamma: focusing parameter >= 0.
        reduction: "none" | "mean" | "sum".
    """
    # The full checks (and list alphas) in Python. The function torch.jit.is_scripting names
    # (TorchScript knows it by identity), spelled where it is defined: torch.jit leaves it out of
    # its __all__, so mypy with no_implicit_reexport finds no such attribute there.
    if not torch._jit_internal.is_scripting():
        alpha = _check(alpha, gamma, reduction)
    elif reduction not in ("none", "mean", "sum"):
        raise ValueError("Invalid reduction: use 'none', 'mean' or 'sum'")
    p = torch.sigmoid(inputs)
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    if isinstance(alpha, torch.Tensor):
        alpha_k = alpha.to(device=inputs.device, dtype=loss.dtype)
        loss = (alpha_k * targets + (1 - alpha_k) * (1 - targets)) * loss
    elif alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    return loss


def _check_labels_inputs(logits: torch.Tensor, labels: torch.Tensor,
                         weights: Optional[torch.Tensor]) -> None:
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"Expected logits (R, K) and labels (R,); got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if not logits.is_floating_point():
        raise ValueError(f"Expected floating-point logits; got {logits.dtype}")
    if labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"Expected int64 labels in {{-1, 0..K}}; got {labels.dtype}")
    # A check of values: data-dependent, so skipped where a graph is traced (torch.compile,
    # torch.export), whose graph it would break.
    tracing = torch.compiler.is_compiling()
    if not tracing and labels.numel() and (labels.min() < -1 or labels.max() > logits.shape[1]):
        raise ValueError(
            f"Invalid labels: values must be -1 (ignored), 0..K-1 (foreground) or K = "
            f"{logits.shape[1]} (background); got min {labels.min().item()}, max "
            f"{labels.max().item()}"
        )
    if weights is not None and weights.shape != labels.shape:
        raise ValueError(
            f"Expected weights of shape (R,) = {tuple(labels.shape)}; got {tuple(weights.shape)}"
        )


def sigmoid_focal_loss_labels(
    logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: Alpha = 0.25,
    gamma: float = 2.0,
    reduction: str = "sum",
    weights: Optional[torch.Tensor] = None,
    impl: Optional[str] = None,
) -> torch.Tensor:
    """Focal loss from integer anchor labels, without building a one-hot target.

    Args:
        logits: (R, K) class logits of R anchors.
        labels: (R,) int64: -1 ignored (no loss), 0..K-1 foreground class, K background.
        alpha: float in [0, 1] (weight of positives; negatives get 1 - alpha), -1 for no
            weighting, or a (K,) tensor of per-class alphas (class k: alpha_k for its
            positives, 1 - alpha_k for its negatives).
        gamma: focusing parameter >= 0.
        reduction: "sum" (default, what RetinaNet normalises), "mean" over the (R, K)
            elements of non-ignored anchors, or "none" for the (R, K) loss (zero rows for
            ignored anchors).
        weights: optional (R,) per-anchor weights (e.g. from a sampler).
        impl: "auto" (default; ``$RETINA_FOCAL_FOCAL_IMPL`` may override it), "fused" or
            "portable". The fused path computes the loss in one pass over the logits and its
            gradient in closed form in one more (a C++ kernel on CPU, built once with the
            system's g++; compiled PyTorch ops elsewhere); the portable path is a few eager
            PyTorch ops. They agree to 1e-6 relative. "auto" falls back to the portable path,
            with one logged warning, when the fused one cannot run here. The fused path is
            the operator ``torch.ops.retina_focal.sigmoid_focal_loss``: ``torch.compile``
            keeps it in its graph and ``torch.export`` records it (the checks of label and
            alpha values, which read data, are skipped while a graph is traced).

    Returns:
        a scalar, or (R, K) for ``reduction="none"``. The loss is computed in float32 (or
        float64) whatever the input precision, and returned in that precision.

    Example::

        >>> logits = torch.randn(5, 3, requires_grad=True)
        >>> labels = torch.tensor([0, 3, 3, -1, 2])  # class 0, background x2, ignored, class 2
        >>> sigmoid_focal_loss_labels(logits, labels, alpha=0.25, gamma=2.0).backward()
    """
    _check_labels_inputs(logits, labels, weights)
    alpha = _check(alpha, gamma, reduction, logits.shape[1])
    if resolve_impl(impl, logits, alpha, weights) == "portable":
        return _portable(logits, labels, alpha, float(gamma), reduction, weights)
    acc = compute_dtype(logits.dtype)
    alpha_pos, alpha_neg = alpha_vectors(alpha, logits.shape[1], acc, logits.device)
    if weights is not None:
        weights = weights.detach().to(acc).contiguous()
    return focal_loss_op(logits, labels, alpha_pos, alpha_neg, float(gamma), reduction, weights)


_warned: Set[str] = set()


# torch.compiler.assume_constant_result is unannotated in torch (it returns fn itself)
@torch.compiler.assume_constant_result  # type: ignore[untyped-decorator]
def _cpu_kernel_error() -> str:
    """Why the C++ kernel cannot be loaded ("" when it can). A constant to a graph traced by
    torch.compile or torch.export, which reads it once instead of tracing the loader (whose
    lock would break the graph); a failure is remembered for the process anyway."""
    try:
        load_kernel()
    except KernelUnavailable as e:
        return str(e)
    return ""


def resolve_impl(impl: Optional[str], logits: torch.Tensor, alpha: Optional[Alpha] = None,
                 weights: Optional[torch.Tensor] = None) -> str:
    """"fused" or "portable": what :func:`sigmoid_focal_loss_labels` runs for these inputs.

    ``impl`` None or "auto" defers to ``$RETINA_FOCAL_FOCAL_IMPL``, then to the automatic
    choice. Raises ValueError for an unknown name and RuntimeError when "fused" is forced
    but cannot run.
    """
    requested = impl or "auto"
    source = "impl"
    if requested == "auto" and os.environ.get(IMPL_ENV):
        requested, source = os.environ[IMPL_ENV], IMPL_ENV
    if requested not in IMPLS:
        raise ValueError(f"Invalid focal loss implementation {requested!r} ({source}); "
                         f"choices: {IMPLS}")
    if requested == "portable":
        return "portable"
    needs_autograd = (weights is not None and weights.requires_grad) or (
        isinstance(alpha, torch.Tensor) and alpha.requires_grad
    )
    reason = None
    if needs_autograd:
        reason = "gradients w.r.t. weights or alpha need the portable path"
    elif logits.device.type == "cpu":
        reason = _cpu_kernel_error() or None
    elif logits.device.type != "cuda":
        reason = f"no fused path for device {logits.device.type!r}"
    if reason is None:
        return "fused"
    if requested == "fused":
        raise RuntimeError(f"focal loss implementation 'fused' cannot run: {reason}")
    if reason not in _warned:
        _warned.add(reason)
        logger.warning("focal loss: using the portable implementation: %s", reason)
    return "portable"


def _portable(logits: torch.Tensor, labels: torch.Tensor, alpha: Union[float, torch.Tensor],
              gamma: float, reduction: str, weights: Optional[torch.Tensor]) -> torch.Tensor:
    """The exact reference: a handful of eager PyTorch ops (any device, autograd)."""
    num_classes = logits.shape[1]
    x = to_compute_dtype(logits)
    alpha_neg: Union[None, float, torch.Tensor]
    alpha_pos: Union[None, float, torch.Tensor]
    if isinstance(alpha, torch.Tensor):
        alpha = alpha.to(device=x.device, dtype=x.dtype)
        alpha_neg, alpha_pos = alpha, alpha  # (K,): broadcast over rows / indexed by class
    else:
        alpha_neg = alpha_pos = None if alpha < 0 else alpha
    row_weight = (labels >= 0).to(x.dtype)
    if weights is not None:
        row_weight = row_weight * weights.to(x.dtype)
    # Every class of every anchor as if it were negative ...
    loss = _modulated(x, False, alpha_neg, gamma) * row_weight[:, None]
    # ... then the one positive entry of each foreground anchor replaced (not corrected by a
    # difference, which would cancel catastrophically for confident, correct positives).
    fg = torch.nonzero((labels >= 0) & (labels < num_classes)).squeeze(1)
    cls = labels[fg]
    if isinstance(alpha_pos, torch.Tensor):
        alpha_pos = alpha_pos[cls]
    positive = _modulated(x[fg, cls], True, alpha_pos, gamma) * row_weight[fg]
    loss = loss.index_put((fg, cls), positive)
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "mean":
        total = total / max((labels >= 0).sum().item() * num_classes, 1)
    return total
