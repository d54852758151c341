"""Fused focal loss from integer labels: loss in one pass, closed-form gradient in one pass.

Two backends share one formulation (see ``csrc/focal_loss_cpu.cpp`` for the derivation):

* ``FusedFocalLossCPU``: the C++ kernel of ``_cpu_kernel`` (vectorised, multi-threaded);
  nothing of size (R, K) is allocated in forward ("sum"/"mean") and only the gradient in
  backward. float16 / bfloat16 logits are read as they are and accumulated in float32.
* ``ClosedFormFocalLoss``: the same closed form written with PyTorch ops, for devices other
  than the CPU (on CUDA it is compiled by ``torch.compile`` into one elementwise kernel per
  pass when Triton is available, and runs eagerly otherwise).
"""
import ctypes
import logging
from typing import Optional

import torch
from torch.autograd.function import once_differentiable

from retina_focal.ops._cpu_kernel import load_kernel
from retina_focal.ops.numerics import compute_dtype, to_compute_dtype

__all__ = [
    "FusedFocalLossCPU",
    "ClosedFormFocalLoss",
    "alpha_vectors",
    "compiled_closed_form_terms",
]

logger = logging.getLogger(__name__)

_DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}


def alpha_vectors(alpha, num_classes: int, dtype: torch.dtype, device):
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


def _ptr(t: Optional[torch.Tensor]):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


class FusedFocalLossCPU(torch.autograd.Function):
    """``(logits (R, K), labels (R,), alpha_pos (K,), alpha_neg (K,), gamma, reduction,
    weights (R,) or None) -> loss``; CPU tensors only."""

    @staticmethod
    def forward(ctx, logits, labels, alpha_pos, alpha_neg, gamma, reduction, weights):
        lib = load_kernel()
        x = logits.contiguous()
        if x.dtype == torch.float16 and not lib.rf_focal_has_float16():
            x = x.float()  # this compiler has no _Float16: one converted copy
        acc = compute_dtype(x.dtype)
        labels = labels.contiguous().to(torch.int64)
        R, K = x.shape
        out = torch.empty((R, K), dtype=acc) if reduction == "none" else None
        total, valid = ctypes.c_double(), ctypes.c_int64()
        threads = torch.get_num_threads()
        rc = lib.rf_focal_forward(
            _ptr(x), _DTYPE_CODES[x.dtype], _ptr(labels), R, K, _ptr(alpha_pos),
            _ptr(alpha_neg), float(gamma), _ptr(weights), _ptr(out), ctypes.byref(total),
            ctypes.byref(valid), threads,
        )
        if rc != 0:
            raise RuntimeError(f"fused focal loss kernel failed (code {rc}) for {x.dtype}")
        ctx.gamma, ctx.reduction, ctx.threads = float(gamma), reduction, threads
        ctx.logits_dtype = logits.dtype
        ctx.scale = 1.0
        if reduction == "none":
            result = out
        else:
            value = total.value
            if reduction == "mean":
                ctx.scale = 1.0 / max(valid.value * K, 1)
                value *= ctx.scale
            result = torch.tensor(value, dtype=acc)
        ctx.save_for_backward(x, labels, alpha_pos, alpha_neg, weights)
        return result

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None, None
        lib = load_kernel()
        x, labels, alpha_pos, alpha_neg, weights = ctx.saved_tensors
        R, K = x.shape
        grad_in = torch.empty_like(x)
        if ctx.reduction == "none":
            grad_out, scale = grad.to(compute_dtype(x.dtype)).contiguous(), 1.0
        else:
            grad_out, scale = None, float(grad) * ctx.scale
        rc = lib.rf_focal_backward(
            _ptr(x), _DTYPE_CODES[x.dtype], _ptr(labels), R, K, _ptr(alpha_pos),
            _ptr(alpha_neg), ctx.gamma, _ptr(weights), _ptr(grad_out), scale, _ptr(grad_in),
            ctx.threads,
        )
        if rc != 0:
            raise RuntimeError(f"fused focal loss kernel failed (code {rc}) for {x.dtype}")
        return grad_in.to(ctx.logits_dtype), None, None, None, None, None, None


def _closed_form_terms(x, labels, alpha_pos, alpha_neg, weights, gamma: float, grad: bool):
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


_compiled = {}


def compiled_closed_form_terms():
    """``_closed_form_terms`` compiled by ``torch.compile(dynamic=True)``, created once: what
    the fused path runs on CUDA (one generated kernel per pass, for any number of anchors and
    classes without recompiling). The compiled function takes tensors of any device; on the
    CPU inductor generates C++ instead of Triton, which is how the tests check, without a GPU,
    that it still compiles and computes the closed form."""
    if "compiled" not in _compiled:
        _compiled["compiled"] = torch.compile(_closed_form_terms, dynamic=True)
    return _compiled["compiled"]


def _terms_fn(device: torch.device):
    """The elementwise function for ``device``: compiled on CUDA when possible."""
    if device.type != "cuda":
        return _closed_form_terms
    if "cuda" not in _compiled:
        fn = _closed_form_terms
        try:
            import triton  # noqa: F401

            fn = compiled_closed_form_terms()
        except Exception as e:  # no Triton / no compiler: eager ops, same results
            logger.warning("focal loss: torch.compile unavailable on CUDA (%s); eager ops", e)
        _compiled["cuda"] = fn
    return _compiled["cuda"]


class ClosedFormFocalLoss(torch.autograd.Function):
    """Same contract as :class:`FusedFocalLossCPU`, with PyTorch ops (any device)."""

    @staticmethod
    def forward(ctx, logits, labels, alpha_pos, alpha_neg, gamma, reduction, weights):
        x = to_compute_dtype(logits)
        fn = _terms_fn(x.device)
        loss = fn(x, labels, alpha_pos, alpha_neg, weights, float(gamma), False)
        ctx.scale = 1.0
        if reduction == "sum":
            loss = loss.sum()
        elif reduction == "mean":
            ctx.scale = 1.0 / max(int((labels >= 0).sum()) * x.shape[1], 1)
            loss = loss.sum() * ctx.scale
        ctx.gamma, ctx.reduction, ctx.logits_dtype = float(gamma), reduction, logits.dtype
        ctx.save_for_backward(logits, labels, alpha_pos, alpha_neg, weights)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None, None
        logits, labels, alpha_pos, alpha_neg, weights = ctx.saved_tensors
        x = to_compute_dtype(logits)
        fn = _terms_fn(x.device)
        d = fn(x, labels, alpha_pos, alpha_neg, weights, ctx.gamma, True)
        d = d * (grad if ctx.reduction == "none" else grad * ctx.scale)
        return d.to(ctx.logits_dtype), None, None, None, None, None, None
