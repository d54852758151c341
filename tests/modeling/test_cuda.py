"""On a CUDA GPU: the fused focal loss (the closed form compiled by torch.compile) against the
exact path, RetinaFocal's training step against Detectron2's RetinaNet, and CUDA inference
against CPU inference. Skipped without a GPU; ``scripts/gpu_checks.sh`` runs them (every test
name holds "cuda", so ``pytest tests -k cuda`` selects them)."""
import pytest
import torch
from helpers import assert_same_losses_and_gradients, batch, crowded, pair

from retina_focal.engine.defaults import build_model
from retina_focal.ops import sigmoid_focal_loss_labels

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.fixture
def exact_float32():
    """Full float32 convolutions and matmuls (no TF32) and deterministic cuDNN algorithms, so
    that two models differing in the loss path only can be compared to float32 rounding."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
     torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) = saved


def problem(num_anchors=5000, num_classes=80, seed=0, scale=4.0):
    """Logits over a wide range (saturated scores included), every kind of label (15%
    ignored), per-anchor weights and a per-class alpha."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_anchors, num_classes, generator=g) * scale
    labels = torch.randint(0, num_classes + 1, (num_anchors,), generator=g)
    labels[torch.rand(num_anchors, generator=g) < 0.15] = -1
    weights = torch.rand(num_anchors, generator=g) * 2
    alpha = torch.rand(num_classes, generator=g)
    return logits, labels, weights, alpha


def loss_and_grad(logits, labels, impl, reduction, **kwargs):
    """Loss and d loss / d logits (a fixed upstream gradient for "none"), on logits' device."""
    x = logits.detach().clone().requires_grad_()
    loss = sigmoid_focal_loss_labels(x, labels, impl=impl, reduction=reduction, **kwargs)
    upstream = torch.linspace(0.5, 2.0, loss.numel(), dtype=loss.dtype,
                              device=loss.device).reshape(loss.shape)
    (loss * upstream).sum().backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("gamma", [2.0, 0.5])
def test_fused_loss_on_cuda_equals_the_exact_path(dtype, reduction, gamma):
    """The fused path on CUDA against the portable one in float64 on the CPU: loss to 1e-5
    (it is computed in float32 whatever the input precision), gradient to float32 rounding
    then the input dtype's (it is returned in the logits' dtype)."""
    logits, labels, weights, alpha = problem(seed=int(gamma * 10))
    logits = logits.to(dtype)
    loss, grad = loss_and_grad(logits.cuda(), labels.cuda(), "fused", reduction,
                               alpha=alpha.cuda(), gamma=gamma, weights=weights.cuda())
    ref_loss, ref_grad = loss_and_grad(logits.double(), labels, "portable", reduction,
                                       alpha=alpha.double(), gamma=gamma,
                                       weights=weights.double())
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(loss.cpu().double(), ref_loss, rtol=1e-5, atol=1e-7)
    rtol = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(grad.cpu().double(), ref_grad.to(dtype).double(), rtol=rtol,
                               atol=1e-6 if dtype == torch.float32 else 1e-4)


@pytest.mark.parametrize("alpha", [0.25, -1.0])
def test_fused_loss_on_cuda_equals_portable_on_cuda(alpha):
    """Same device, same float32 logits, a float alpha and none, no weights: the two paths
    agree to 1e-6 relative (the documented promise)."""
    logits, labels, _, _ = problem(num_anchors=20000, seed=3)
    logits, labels = logits.cuda(), labels.cuda()
    fused = loss_and_grad(logits, labels, "fused", "sum", alpha=alpha, gamma=2.0)
    portable = loss_and_grad(logits, labels, "portable", "sum", alpha=alpha, gamma=2.0)
    torch.testing.assert_close(fused[0], portable[0], rtol=1e-6, atol=0)
    torch.testing.assert_close(fused[1], portable[1], rtol=1e-5, atol=1e-8)


def test_cuda_compiled_closed_form_equals_eager_and_does_not_recompile_for_new_shapes():
    """The compiled closed form (what the fused path runs on CUDA) equals its eager ops, and
    once compiled for a forward and a backward pass, new numbers of anchors and classes reuse
    the compiled code (``dynamic=True``): no frame is compiled again."""
    from torch._dynamo.utils import counters

    from retina_focal.ops._fused import (
        _closed_form_terms,
        alpha_vectors,
        compiled_closed_form_terms,
    )

    fn = compiled_closed_form_terms()
    frames = []
    for i, (R, K) in enumerate([(3000, 80), (5001, 80), (777, 80), (4096, 7), (123457, 91)]):
        logits, labels, weights, alpha = problem(R, K, seed=10 + i)
        x, labels, weights = logits.cuda(), labels.cuda(), weights.cuda()
        ap, an = alpha_vectors(alpha, K, torch.float32, "cuda")
        before = counters["frames"]["total"]
        for grad in (False, True):
            out = fn(x, labels, ap, an, weights, 2.0, grad)
            ref = _closed_form_terms(x, labels, ap, an, weights, 2.0, grad)
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        frames.append(counters["frames"]["total"] - before)
    assert sum(frames[1:]) == 0, f"frames compiled per new shape: {frames}"


@pytest.mark.parametrize(
    "opts", [[], ["MODEL.RETINANET.BBOX_REG_LOSS_TYPE", "giou"],
             ["MODEL.RETINANET.FOCAL_LOSS_GAMMA", "0.5"]],
    ids=lambda o: " ".join(o) or "default")
def test_cuda_training_step_equals_detectron2(tiny_cfg, exact_float32, opts):
    """RetinaFocal (with the fused loss) and Detectron2's RetinaNet on CUDA, same weights, same
    batch: the same losses and parameter gradients, to float32 rounding."""
    tiny_cfg.merge_from_list(["MODEL.DEVICE", "cuda"] + opts)
    ref, ours = pair(tiny_cfg)
    assert next(ours.parameters()).is_cuda and next(ref.parameters()).is_cuda
    assert_same_losses_and_gradients(ref, ours, rtol=1e-4, atol=1e-6)


def test_cuda_default_layout_training_step_equals_detectron2(tiny_cfg, exact_float32):
    """The CUDA model as the commands build it (MEMORY_FORMAT "auto": NCHW on CUDA)."""
    tiny_cfg.MODEL.DEVICE = "cuda"
    ref, ours = pair(tiny_cfg, memory_format="auto")
    assert ours.head.cls_score.weight.is_contiguous()
    assert_same_losses_and_gradients(ref, ours, rtol=1e-4, atol=1e-6)


def test_cuda_inference_equals_cpu_inference(tiny_cfg, exact_float32):
    """The same weights on the CPU (its default layout: channels-last, folded BN) and on CUDA
    detect the same objects: same classes in the same order, boxes to 1e-3 px, scores to
    1e-5."""
    tiny_cfg.merge_from_list(["MODEL.RETINANET.SCORE_THRESH_TEST", "0.05",
                              "TEST.DETECTIONS_PER_IMAGE", "100"])
    torch.manual_seed(0)
    cpu = build_model(tiny_cfg)
    with torch.no_grad():  # a trained-like classifier: some confident scores
        cpu.head.cls_score.bias.normal_(-2, 2, generator=torch.Generator().manual_seed(2))
    tiny_cfg.MODEL.DEVICE = "cuda"
    gpu = build_model(tiny_cfg)
    gpu.load_state_dict(cpu.state_dict())
    cpu.eval()
    gpu.eval()
    torch.manual_seed(0)
    inputs = [batch(True), crowded(), batch(False)]
    with torch.no_grad():
        expected, actual = cpu(inputs), gpu(inputs)
    for a, b in zip(expected, actual):
        a, b = a["instances"], b["instances"].to("cpu")
        assert len(a) == len(b) > 0
        assert torch.equal(b.pred_classes, a.pred_classes)
        torch.testing.assert_close(b.pred_boxes.tensor, a.pred_boxes.tensor, atol=1e-3, rtol=0)
        torch.testing.assert_close(b.scores, a.scores, atol=1e-5, rtol=0)
