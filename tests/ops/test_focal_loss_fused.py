"""The fused focal-loss path (C++ kernel on CPU, closed-form PyTorch ops elsewhere) against the
exact portable path, the paper's formula and torch.autograd; and how the path is chosen."""
import logging

import pytest
import torch

from retina_focal.ops import _cpu_kernel
from retina_focal.ops import focal_loss as fl
from retina_focal.ops import sigmoid_focal_loss_labels
from retina_focal.ops._cpu_kernel import KernelUnavailable, load_kernel
from retina_focal.ops._fused import (
    ClosedFormFocalLoss,
    _closed_form_terms,
    alpha_vectors,
    compiled_closed_form_terms,
)

try:
    _cpu_kernel._find_compiler()
    NO_COMPILER = None
except KernelUnavailable as e:
    NO_COMPILER = str(e)
try:
    load_kernel()
    KERNEL_ERROR = None
except KernelUnavailable as e:
    KERNEL_ERROR = str(e)
# Where a C++ compiler exists the kernel must build: its tests then run (and fail if it does
# not), because a kernel that silently stopped building leaves training ~20x slower. Only a
# machine without any compiler skips them.
needs_kernel = pytest.mark.skipif(
    NO_COMPILER is not None, reason=f"the fused CPU kernel cannot be built: {NO_COMPILER}"
)
needs_cpu_compile = pytest.mark.skipif(
    NO_COMPILER is not None, reason=f"inductor compiles CPU code with C++: {NO_COMPILER}"
)

GAMMAS = [0.0, 0.5, 1.0, 1.5, 2.0, 5.0]


@needs_kernel
def test_kernel_builds_where_a_compiler_exists():
    assert KERNEL_ERROR is None, f"a C++ compiler exists but the kernel failed:\n{KERNEL_ERROR}"


def problem(num_anchors=257, num_classes=9, seed=0, scale=4.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_anchors, num_classes, generator=g) * scale
    labels = torch.randint(0, num_classes + 1, (num_anchors,), generator=g)
    labels[torch.rand(num_anchors, generator=g) < 0.15] = -1
    weights = torch.rand(num_anchors, generator=g) * 2
    alpha = torch.rand(num_classes, generator=g)
    return logits, labels, weights, alpha


def run(logits, labels, impl, **kwargs):
    """Loss and gradient w.r.t. the logits (a random upstream gradient for "none")."""
    x = logits.detach().clone().requires_grad_()
    loss = sigmoid_focal_loss_labels(x, labels, impl=impl, **kwargs)
    upstream = torch.linspace(0.5, 2, loss.numel()).reshape(loss.shape).to(loss.dtype)
    (loss * upstream).sum().backward()
    return loss.detach(), x.grad


def made_by_the_operator(loss):
    """Whether ``loss`` came from the fused path: the ``retina_focal::sigmoid_focal_loss``
    operator, whose autograd node torch.library names after it."""
    return "retina_focal_sigmoid_focal_loss" in type(loss.grad_fn).__name__


def close(got, ref, rtol=1e-6):
    """Equal to ``ref`` within ``rtol`` of each value (a floor of rtol * max|ref| for values
    that are tiny next to the largest one)."""
    atol = rtol * float(ref.abs().max()) if ref.numel() else 0.0
    torch.testing.assert_close(got.to(ref.dtype), ref, rtol=rtol, atol=atol)


@needs_kernel
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("alpha_kind", ["scalar", "none", "per_class"])
def test_fused_equals_portable_float32(gamma, reduction, alpha_kind):
    logits, labels, weights, alpha = problem(seed=int(gamma * 10))
    alpha = {"scalar": 0.25, "none": -1, "per_class": alpha}[alpha_kind]
    kw = dict(alpha=alpha, gamma=gamma, reduction=reduction, weights=weights)
    loss, grad = run(logits, labels, "fused", **kw)
    assert loss.dtype == torch.float32 and grad.dtype == torch.float32
    # the exact reference: the portable path in float64 on the same float32 values
    ref_loss, ref_grad = run(logits.double(), labels, "portable", **kw)
    close(loss, ref_loss)
    close(grad, ref_grad)
    assert torch.all(grad[labels < 0] == 0)
    # and the portable path in float32, as a user would run it
    loss32, grad32 = run(logits, labels, "portable", **kw)
    close(loss, loss32.double(), rtol=1e-5)
    close(grad, grad32.double(), rtol=1e-5)


@needs_kernel
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_fused_gradcheck_float64(reduction):
    logits, labels, weights, alpha = problem(num_anchors=23, num_classes=4, seed=3, scale=2)
    for kw in ({}, {"alpha": alpha, "gamma": 1.5, "weights": weights}):
        x = logits.double().requires_grad_()
        assert torch.autograd.gradcheck(
            lambda t: sigmoid_focal_loss_labels(t, labels, reduction=reduction, impl="fused", **kw),
            (x,),
        )


@needs_kernel
@pytest.mark.parametrize("dtype,rtol", [(torch.bfloat16, 1e-2), (torch.float16, 2e-3)])
def test_half_inputs_accumulate_in_float32(dtype, rtol):
    logits, labels, weights, alpha = problem(num_anchors=3000, num_classes=11, seed=5, scale=3)
    logits = logits.to(dtype)
    for reduction in ("sum", "none"):
        kw = dict(alpha=alpha, gamma=2.0, reduction=reduction, weights=weights)
        loss, grad = run(logits, labels, "fused", **kw)
        assert loss.dtype == torch.float32 and grad.dtype == dtype
        # the same (rounded) input values, in float64: only the accumulation may differ
        ref_loss, ref_grad = run(logits.double(), labels, "portable", **kw)
        close(loss, ref_loss)
        close(grad, ref_grad.to(dtype).double(), rtol=rtol)


@needs_kernel
def test_threads_split_rows_without_changing_results():
    logits, labels, weights, alpha = problem(num_anchors=20000, num_classes=80, seed=7)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run(logits, labels, "fused", weights=weights)
        torch.set_num_threads(4)
        four = run(logits, labels, "fused", weights=weights)
    finally:
        torch.set_num_threads(threads)
    close(four[0], one[0].double())
    torch.testing.assert_close(four[1], one[1], rtol=0, atol=0)
    ref = run(logits.double(), labels, "portable", weights=weights)
    close(one[0], ref[0])
    close(one[1], ref[1])


@needs_kernel
def test_extreme_and_degenerate_inputs():
    logits = torch.tensor([[100.0, -100.0, 0.0], [-1e4, 1e4, 30.0], [88.0, -88.0, -104.0]])
    labels = torch.tensor([0, 0, 3])
    loss, grad = run(logits, labels, "fused")
    ref_loss, ref_grad = run(logits.double(), labels, "portable")
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    close(loss, ref_loss)
    close(grad, ref_grad)
    # no anchors; all anchors ignored ("mean" divides by max(count, 1))
    empty = sigmoid_focal_loss_labels(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))
    assert empty.item() == 0.0
    ignored = torch.full((4,), -1)
    for reduction in ("sum", "mean"):
        assert run(torch.randn(4, 5), ignored, "fused", reduction=reduction)[0].item() == 0.0
    # int32 labels and a non-contiguous logits view
    base = torch.randn(40, 12)
    view, lab = base[:, ::2], torch.randint(-1, 7, (40,))
    close(run(view, lab.int(), "fused")[1], run(view.double(), lab, "portable")[1])


@needs_kernel
def test_default_path_is_fused_and_matches_portable():
    logits, labels, _, _ = problem(seed=9)
    assert fl.resolve_impl(None, logits) == "fused"
    assert fl.resolve_impl("auto", logits) == "fused"
    x = logits.clone().requires_grad_()
    loss = sigmoid_focal_loss_labels(x, labels)
    loss.backward()
    assert made_by_the_operator(loss)
    close(loss, run(logits.double(), labels, "portable")[0])


def test_environment_variable_and_bad_names(monkeypatch):
    logits, labels, _, _ = problem(seed=11)
    monkeypatch.setenv(fl.IMPL_ENV, "portable")
    assert fl.resolve_impl(None, logits) == "portable"
    x = logits.clone().requires_grad_()
    loss = sigmoid_focal_loss_labels(x, labels)
    assert not made_by_the_operator(loss)
    if NO_COMPILER is None:
        assert fl.resolve_impl("fused", logits) == "fused"  # an explicit choice wins
    monkeypatch.setenv(fl.IMPL_ENV, "fast")
    with pytest.raises(ValueError, match="RETINA_FOCAL_FOCAL_IMPL.*'fast'|'fast'.*RETINA_FOCAL"):
        sigmoid_focal_loss_labels(logits, labels)
    monkeypatch.delenv(fl.IMPL_ENV)
    with pytest.raises(ValueError, match="'triton'"):
        sigmoid_focal_loss_labels(logits, labels, impl="triton")


def test_weights_that_need_gradients_use_the_portable_path():
    logits, labels, weights, _ = problem(seed=13)
    w = weights.clone().requires_grad_()
    assert fl.resolve_impl(None, logits, 0.25, w) == "portable"
    sigmoid_focal_loss_labels(logits, labels, weights=w).backward()
    per_anchor = sigmoid_focal_loss_labels(logits, labels, reduction="none").sum(1)
    torch.testing.assert_close(w.grad, per_anchor)
    with pytest.raises(RuntimeError, match="weights"):
        sigmoid_focal_loss_labels(logits, labels, weights=w, impl="fused")


def test_fallback_when_the_kernel_cannot_be_built(monkeypatch, tmp_path, caplog):
    from retina_focal.ops import _cpu_kernel

    monkeypatch.setattr(_cpu_kernel, "_cached", None)
    monkeypatch.setattr(_cpu_kernel, "_error", None)
    monkeypatch.setattr(fl, "_warned", set())
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    logits, labels, _, _ = problem(seed=15)
    with caplog.at_level(logging.WARNING, logger=fl.__name__):
        a = sigmoid_focal_loss_labels(logits, labels)
        b = sigmoid_focal_loss_labels(logits, labels)
    warnings = [r for r in caplog.records if "portable" in r.getMessage()]
    assert len(warnings) == 1 and "no-such-compiler" in warnings[0].getMessage()
    expected = sigmoid_focal_loss_labels(logits, labels, impl="portable")
    assert a.item() == b.item() == expected.item()
    with pytest.raises(RuntimeError, match="no-such-compiler"):
        sigmoid_focal_loss_labels(logits, labels, impl="fused")


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_closed_form_ops_equal_portable(reduction):
    """The closed form the fused path runs on CUDA, here eagerly on the CPU."""
    logits, labels, weights, alpha = problem(seed=17)
    for a, gamma in ((0.25, 2.0), (alpha, 1.5), (-1, 0.0)):
        x = logits.double().requires_grad_()
        ap, an = alpha_vectors(a, logits.shape[1], torch.float64, "cpu")
        loss = ClosedFormFocalLoss.apply(x, labels, ap, an, gamma, reduction, weights.double())
        upstream = torch.linspace(0.5, 2, loss.numel()).reshape(loss.shape).double()
        (loss * upstream).sum().backward()
        kw = dict(alpha=a, gamma=gamma, reduction=reduction, weights=weights)
        ref_loss, ref_grad = run(logits.double(), labels, "portable", **kw)
        torch.testing.assert_close(loss.detach(), ref_loss, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(x.grad, ref_grad, rtol=1e-10, atol=1e-12)


@needs_cpu_compile
def test_compiled_closed_form_on_cpu_equals_portable():
    """The ``torch.compile(dynamic=True)`` function the fused path runs on CUDA, compiled here
    for CPU tensors (inductor's C++ backend): a change that breaks its compilation or its
    values fails without a GPU. A second problem size must not recompile it."""
    import torch._dynamo

    fn = compiled_closed_form_terms()
    for size, (num_anchors, num_classes) in enumerate(((37, 5), (61, 9))):
        logits, labels, weights, alpha = problem(num_anchors, num_classes, seed=23)
        ap, an = alpha_vectors(alpha, num_classes, torch.float32, "cpu")
        args = (labels, ap, an, weights, 2.0)
        # the first size compiles (loss and gradient graphs); the second must reuse them
        with torch._dynamo.config.patch(error_on_recompile=size > 0):
            loss, grad = fn(logits, *args, False), fn(logits, *args, True)
        assert loss.dtype == grad.dtype == torch.float32
        eager = _closed_form_terms(logits, *args, False), _closed_form_terms(logits, *args, True)
        torch.testing.assert_close(loss, eager[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, eager[1], rtol=1e-5, atol=1e-6)
        ref_loss, ref_grad = run(logits.double(), labels, "portable", alpha=alpha, gamma=2.0,
                                 reduction="none", weights=weights)
        upstream = torch.linspace(0.5, 2, loss.numel()).reshape(loss.shape).double()
        close(loss, ref_loss, rtol=1e-5)
        close(grad * upstream, ref_grad, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fused_on_cuda_equals_portable(dtype):
    logits, labels, weights, alpha = problem(num_anchors=5000, num_classes=80, seed=19)
    logits = logits.to(dtype)
    kw = dict(alpha=alpha, gamma=2.0, reduction="sum", weights=weights)
    cuda = run(logits.cuda(), labels.cuda(), "fused", alpha=alpha.cuda(), gamma=2.0,
               reduction="sum", weights=weights.cuda())
    ref_loss, ref_grad = run(logits.double(), labels, "portable", **kw)
    close(cuda[0].cpu(), ref_loss)
    close(cuda[1].cpu().double(), ref_grad.to(dtype).double(), rtol=1e-2)


def test_config_key_selects_the_implementation(tiny_cfg):
    from retina_focal import SigmoidFocalLoss

    assert tiny_cfg.MODEL.RETINA_FOCAL.FOCAL_LOSS_IMPL == "auto"
    logits, labels, _, _ = problem(seed=21)
    losses = {}
    for impl in ("auto", "portable"):
        tiny_cfg.MODEL.RETINA_FOCAL.FOCAL_LOSS_IMPL = impl
        module = SigmoidFocalLoss(tiny_cfg)
        assert module.impl == impl and f"impl={impl}" in repr(module)
        x = logits.clone().requires_grad_()
        loss = module(x, labels)
        loss.backward()
        losses[impl] = (loss.detach(), x.grad)
        fused = made_by_the_operator(loss)
        assert fused == (impl == "auto" and NO_COMPILER is None)
    close(losses["auto"][0], losses["portable"][0].double(), rtol=1e-5)
    close(losses["auto"][1], losses["portable"][1].double(), rtol=1e-5)
    tiny_cfg.MODEL.RETINA_FOCAL.FOCAL_LOSS_IMPL = "cuda"
    with pytest.raises(ValueError, match="MODEL.RETINA_FOCAL.FOCAL_LOSS_IMPL='cuda'"):
        SigmoidFocalLoss(tiny_cfg)
