"""Fused focal loss from integer labels: loss in one pass, closed-form gradient in one pass.

The fused path is one PyTorch operator, ``torch.ops.retina_focal.sigmoid_focal_loss``
(registered with ``torch.library`` when this module is imported), with its gradient another
(``torch.ops.retina_focal.sigmoid_focal_loss_backward``) tied to it by
``register_autograd``. Being an operator, not a Python ``autograd.Function``, it is one node
that ``torch.compile`` keeps in its graph (no graph break) and ``torch.export`` records; its
fake kernels give the output shapes and dtypes without computing anything. Two kernels share
one formulation (see ``csrc/focal_loss_cpu.cpp`` for the derivation):

* CPU: the C++ kernel of ``_cpu_kernel`` (vectorised, multi-threaded); nothing of size (R, K)
  is allocated in forward ("sum"/"mean") and only the gradient in backward. float16 /
  bfloat16 logits are read as they are and accumulated in float32.
* any other device: the same closed form written with PyTorch ops (on CUDA compiled by
  ``torch.compile`` into one elementwise kernel per pass when Triton is available, eager
  otherwise). :class:`ClosedFormFocalLoss` is the same computation as an
  ``autograd.Function``, which the tests run on the CPU.
"""
import ctypes
import logging
from typing import Callable, Dict, Optional, Protocol, Tuple, Union

import torch
from torch import Tensor
from torch._ops import OpOverload
from torch.autograd.function import once_differentiable

from retina_focal.ops._cpu_kernel import load_kernel
from retina_focal.ops.numerics import compute_dtype, to_compute_dtype

__all__ = [
    "OP_NAMESPACE",
    "focal_loss_op",
    "focal_loss_backward_op",
    "ClosedFormFocalLoss",
    "alpha_vectors",
    "compiled_closed_form_terms",
]

logger = logging.getLogger(__name__)

OP_NAMESPACE = "retina_focal"
_FORWARD_SCHEMA = (
    "(Tensor logits, Tensor labels, Tensor alpha_pos, Tensor alpha_neg, float gamma, "
    "str reduction, Tensor? weights) -> Tensor"
)
_BACKWARD_SCHEMA = (
    "(Tensor grad, Tensor logits, Tensor labels, Tensor alpha_pos, Tensor alpha_neg, "
    "float gamma, str reduction, Tensor? weights) -> Tensor"
)
_DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}

# (x, labels, alpha_pos, alpha_neg, weights, gamma, grad) -> (R, K): ``_closed_form_terms``
TermsFn = Callable[[Tensor, Tensor, Tensor, Tensor, Optional[Tensor], float, bool], Tensor]
# the two operators: (logits, labels, alpha_pos, alpha_neg, gamma, reduction, weights) -> loss,
# and (grad, <the same>) -> d loss / d logits
FocalLossOp = OpOverload[[Tensor, Tensor, Tensor, Tensor, float, str, Optional[Tensor]], Tensor]
FocalLossBackwardOp = OpOverload[
    [Tensor, Tensor, Tensor, Tensor, Tensor, float, str, Optional[Tensor]], Tensor
]


def alpha_vectors(alpha: Union[float, Tensor], num_classes: int, dtype: torch.dtype,
                  device: Union[torch.device, str]) -> Tuple[Tensor, Tensor]:
    """(K,) weights of positive and of negative entries for a float alpha (-1: none) or a
    (K,) per-class alpha."""
    if isinstance(alpha, torch.Tensor):
        pos = alpha.detach().to(device=device, dtype=dtype).contiguous()
        return pos, 1 - pos
    if alpha < 0:
        ones = torch.ones(num_classes, dtype=dtype, device=device)
        return ones, ones
    pos = torch.full((num_classes,), float(alpha), dtype=dtype, device=device)
    return pos, torch.full((num_classes,), 1.0 - float(alpha), dtype=dtype, device=device)


def _mean_scale(labels: Tensor, num_classes: int) -> float:
    """1 / (number of (R, K) elements of non-ignored anchors), as "mean" divides."""
    return 1.0 / max(int((labels >= 0).sum()) * num_classes, 1)


# ---------------------------------------------------------------- CPU: the C++ kernel

def _ptr(t: Optional[Tensor]) -> Optional[ctypes.c_void_p]:
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def _kernel_inputs(lib: ctypes.CDLL, logits: Tensor, labels: Tensor,
                   weights: Optional[Tensor]) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Contiguous logits in a dtype the kernel reads, int64 labels, weights in the compute
    dtype."""
    x = logits.contiguous()
    if x.dtype == torch.float16 and not lib.rf_focal_has_float16():
        x = x.float()  # this compiler has no _Float16: one converted copy
    labels = labels.contiguous().to(torch.int64)
    if weights is not None:
        weights = weights.to(compute_dtype(x.dtype)).contiguous()
    return x, labels, weights


def _cpu_forward(logits: Tensor, labels: Tensor, alpha_pos: Tensor, alpha_neg: Tensor,
                 gamma: float, reduction: str, weights: Optional[Tensor]) -> Tensor:
    lib = load_kernel()
    x, labels, weights = _kernel_inputs(lib, logits, labels, weights)
    acc = compute_dtype(x.dtype)
    alpha_pos, alpha_neg = alpha_pos.to(acc).contiguous(), alpha_neg.to(acc).contiguous()
    R, K = x.shape
    out = torch.empty((R, K), dtype=acc) if reduction == "none" else None
    total, valid = ctypes.c_double(), ctypes.c_int64()
    rc = lib.rf_focal_forward(
        _ptr(x), _DTYPE_CODES[x.dtype], _ptr(labels), R, K, _ptr(alpha_pos), _ptr(alpha_neg),
        float(gamma), _ptr(weights), _ptr(out), ctypes.byref(total), ctypes.byref(valid),
        torch.get_num_threads(),
    )
    if rc != 0:
        raise RuntimeError(f"fused focal loss kernel failed (code {rc}) for {x.dtype}")
    if reduction == "none":
        assert out is not None  # allocated above for "none"
        return out
    value = total.value
    if reduction == "mean":
        value /= max(valid.value * K, 1)
    return torch.tensor(value, dtype=acc)


def _cpu_backward(grad: Tensor, logits: Tensor, labels: Tensor, alpha_pos: Tensor,
                  alpha_neg: Tensor, gamma: float, reduction: str,
                  weights: Optional[Tensor]) -> Tensor:
    lib = load_kernel()
    x, labels, weights = _kernel_inputs(lib, logits, labels, weights)
    acc = compute_dtype(x.dtype)
    alpha_pos, alpha_neg = alpha_pos.to(acc).contiguous(), alpha_neg.to(acc).contiguous()
    R, K = x.shape
    grad_in = torch.empty_like(x)
    if reduction == "none":
        grad_out, scale = grad.to(acc).contiguous(), 1.0
    else:
        grad_out, scale = None, float(grad)
        if reduction == "mean":
            scale *= _mean_scale(labels, K)
    rc = lib.rf_focal_backward(
        _ptr(x), _DTYPE_CODES[x.dtype], _ptr(labels), R, K, _ptr(alpha_pos), _ptr(alpha_neg),
        float(gamma), _ptr(weights), _ptr(grad_out), scale, _ptr(grad_in),
        torch.get_num_threads(),
    )
    if rc != 0:
        raise RuntimeError(f"fused focal loss kernel failed (code {rc}) for {x.dtype}")
    return grad_in.to(logits.dtype)


# ------------------------------------------------- any device: the closed form as torch ops

def _closed_form_terms(x: Tensor, labels: Tensor, alpha_pos: Tensor, alpha_neg: Tensor,
                       weights: Optional[Tensor], gamma: float, grad: bool) -> Tensor:
    """Elementwise loss (grad=False) or d loss / d x (grad=True), (R, K), in x's dtype."""
    K = x.shape[1]
    t = labels[:, None] == torch.arange(K, device=x.device)
    z = torch.where(t, -x, x)
    u = torch.sigmoid(z)  # 1 - p_t
    softplus = torch.nn.functional.softplus(z)  # -log(p_t)
    a = torch.where(t, alpha_pos, alpha_neg)
    w = (labels >= 0).to(x.dtype)
    if weights is not None:
        w = w * weights
    mod = u.pow(gamma) if gamma != 0 else torch.ones_like(u)
    if not grad:
        return a * mod * softplus * w[:, None]
    d = a * mod * (gamma * torch.sigmoid(-z) * softplus + u) * w[:, None]
    return torch.where(t, -d, d)


_compiled: Dict[str, TermsFn] = {}


def compiled_closed_form_terms() -> TermsFn:
    """``_closed_form_terms`` compiled by ``torch.compile(dynamic=True)``, created once: what
    the fused path runs on CUDA (one generated kernel per pass, for any number of anchors and
    classes without recompiling). The compiled function takes tensors of any device; on the
    CPU inductor generates C++ instead of Triton, which is how the tests check, without a GPU,
    that it still compiles and computes the closed form."""
    if "compiled" not in _compiled:
        _compiled["compiled"] = torch.compile(_closed_form_terms, dynamic=True)
    return _compiled["compiled"]


def _terms_fn(device: torch.device) -> TermsFn:
    """The elementwise function for ``device``: compiled on CUDA when possible."""
    if device.type != "cuda":
        return _closed_form_terms
    if "cuda" not in _compiled:
        fn: TermsFn = _closed_form_terms
        try:
            import triton  # noqa: F401

            fn = compiled_closed_form_terms()
        except Exception as e:  # no Triton / no compiler: eager ops, same results
            logger.warning("focal loss: torch.compile unavailable on CUDA (%s); eager ops", e)
        _compiled["cuda"] = fn
    return _compiled["cuda"]


def closed_form_forward(logits: Tensor, labels: Tensor, alpha_pos: Tensor, alpha_neg: Tensor,
                        gamma: float, reduction: str, weights: Optional[Tensor]) -> Tensor:
    """The operator's kernel on devices other than the CPU: the loss, in the compute dtype."""
    x = to_compute_dtype(logits)
    fn = _terms_fn(x.device)
    loss = fn(x, labels, alpha_pos.to(x.dtype), alpha_neg.to(x.dtype),
              None if weights is None else weights.to(x.dtype), float(gamma), False)
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() * _mean_scale(labels, x.shape[1])
    return loss.contiguous()  # the layout the fake kernel promises, whatever the logits' strides


def closed_form_backward(grad: Tensor, logits: Tensor, labels: Tensor, alpha_pos: Tensor,
                         alpha_neg: Tensor, gamma: float, reduction: str,
                         weights: Optional[Tensor]) -> Tensor:
    """The gradient operator's kernel on devices other than the CPU, in the logits' dtype."""
    x = to_compute_dtype(logits)
    fn = _terms_fn(x.device)
    d = fn(x, labels, alpha_pos.to(x.dtype), alpha_neg.to(x.dtype),
           None if weights is None else weights.to(x.dtype), float(gamma), True)
    if reduction == "mean":
        grad = grad * _mean_scale(labels, x.shape[1])
    return (d * grad).to(logits.dtype).contiguous()


class _FocalLossCtx(Protocol):
    """What the backward passes read from autograd's context object: the saved inputs and the
    two non-tensor arguments stored on it in forward (``torch.autograd.function.FunctionCtx``
    declares neither)."""

    gamma: float
    reduction: str
    needs_input_grad: Tuple[bool, ...]
    # (logits, labels, alpha_pos, alpha_neg, weights), as saved
    saved_tensors: Tuple[Tensor, Tensor, Tensor, Tensor, Optional[Tensor]]

    def save_for_backward(self, *tensors: Optional[Tensor]) -> None: ...


# the gradients of the seven inputs: the logits' only (None where they need none)
_InputGrads = Tuple[Optional[Tensor], None, None, None, None, None, None]


class ClosedFormFocalLoss(torch.autograd.Function):
    """``(logits (R, K), labels (R,), alpha_pos (K,), alpha_neg (K,), gamma, reduction,
    weights (R,) or None) -> loss``: the closed form of the operator's non-CPU kernels as an
    ``autograd.Function`` (any device, eager), so that the tests check those kernels' values
    on the CPU."""

    @staticmethod
    def forward(ctx: _FocalLossCtx, logits: Tensor, labels: Tensor, alpha_pos: Tensor,
                alpha_neg: Tensor, gamma: float, reduction: str,
                weights: Optional[Tensor]) -> Tensor:
        ctx.gamma, ctx.reduction = float(gamma), reduction
        ctx.save_for_backward(logits, labels, alpha_pos, alpha_neg, weights)
        return closed_form_forward(logits, labels, alpha_pos, alpha_neg, gamma, reduction,
                                   weights)

    @staticmethod
    @once_differentiable
    def backward(ctx: _FocalLossCtx, grad: Tensor) -> _InputGrads:
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None, None
        logits, labels, alpha_pos, alpha_neg, weights = ctx.saved_tensors
        d = closed_form_backward(grad, logits, labels, alpha_pos, alpha_neg, ctx.gamma,
                                 ctx.reduction, weights)
        return d, None, None, None, None, None, None


# ----------------------------------------------------------------- the torch.library operators

def _fake_forward(logits: Tensor, labels: Tensor, alpha_pos: Tensor, alpha_neg: Tensor,
                  gamma: float, reduction: str, weights: Optional[Tensor]) -> Tensor:
    """Shape and dtype only: (R, K) for "none", a scalar otherwise, in the compute dtype."""
    shape = logits.shape if reduction == "none" else ()
    return logits.new_empty(shape, dtype=compute_dtype(logits.dtype))


def _fake_backward(grad: Tensor, logits: Tensor, labels: Tensor, alpha_pos: Tensor,
                   alpha_neg: Tensor, gamma: float, reduction: str,
                   weights: Optional[Tensor]) -> Tensor:
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


def _setup_context(ctx: _FocalLossCtx,
                   inputs: Tuple[Tensor, Tensor, Tensor, Tensor, float, str, Optional[Tensor]],
                   output: Tensor) -> None:
    logits, labels, alpha_pos, alpha_neg, gamma, reduction, weights = inputs
    ctx.gamma, ctx.reduction = gamma, reduction
    ctx.save_for_backward(logits, labels, alpha_pos, alpha_neg, weights)


def _backward(ctx: _FocalLossCtx, grad: Tensor) -> _InputGrads:
    """Only the logits get a gradient: labels are integers, and alpha or weights that need one
    are sent to the portable path by ``resolve_impl``."""
    grad_logits = None
    if ctx.needs_input_grad[0]:
        logits, labels, alpha_pos, alpha_neg, weights = ctx.saved_tensors
        grad_logits = focal_loss_backward_op(
            grad, logits, labels, alpha_pos, alpha_neg, ctx.gamma, ctx.reduction, weights
        )
    return grad_logits, None, None, None, None, None, None


def _lookup(name: str) -> Optional[OpOverload[..., Tensor]]:
    """``torch.ops.retina_focal.<name>``, or None if it is not registered yet."""
    try:
        op: OpOverload[..., Tensor] = getattr(getattr(torch.ops, OP_NAMESPACE), name).default
        return op
    except (AttributeError, RuntimeError):
        return None


def _register() -> Tuple[FocalLossOp, FocalLossBackwardOp]:
    """Define both operators once per process. A second import of this module (a reload, a
    test that clears ``sys.modules``) finds them registered and uses them as they are: the
    dispatcher refuses a second definition of the same name."""
    forward, backward = _lookup("sigmoid_focal_loss"), _lookup("sigmoid_focal_loss_backward")
    if forward is not None and backward is not None:
        return forward, backward
    bwd = torch.library.custom_op(
        f"{OP_NAMESPACE}::sigmoid_focal_loss_backward", closed_form_backward, mutates_args=(),
        schema=_BACKWARD_SCHEMA,
    )
    bwd.register_kernel("cpu")(_cpu_backward)
    bwd.register_fake(_fake_backward)
    fwd = torch.library.custom_op(
        f"{OP_NAMESPACE}::sigmoid_focal_loss", closed_form_forward, mutates_args=(),
        schema=_FORWARD_SCHEMA,
    )
    fwd.register_kernel("cpu")(_cpu_forward)
    fwd.register_fake(_fake_forward)
    fwd.register_autograd(_backward, setup_context=_setup_context)
    forward, backward = _lookup("sigmoid_focal_loss"), _lookup("sigmoid_focal_loss_backward")
    assert forward is not None and backward is not None  # both defined just above
    return forward, backward


# ``(logits (R, K), labels (R,), alpha_pos (K,), alpha_neg (K,), gamma, reduction,
# weights (R,) or None) -> loss`` (R, K) or scalar, in ``compute_dtype(logits.dtype)``; and
# ``(grad, <the same inputs>) -> d loss / d logits`` (R, K) in the logits' dtype.
focal_loss_op, focal_loss_backward_op = _register()
