"""SigmoidFocalLoss and retina_focal.ops against independent references: the paper's formula
written out here, torchvision.ops.sigmoid_focal_loss and fvcore's sigmoid_focal_loss."""
import math

import pytest
import torch
import torch.nn.functional as F
from fvcore.nn import sigmoid_focal_loss as fvcore_focal
from torchvision.ops import sigmoid_focal_loss as tv_focal

from retina_focal import SigmoidFocalLoss
from retina_focal.ops import sigmoid_focal_loss, sigmoid_focal_loss_labels

CASES = [(0.25, 2.0), (0.5, 0.0), (-1, 2.0), (0.75, 1.0), (0.25, 5.0), (0.0, 0.5), (1.0, 3.0)]


def paper_formula(x, t, alpha, gamma):
    """Eq. 5 of the paper, elementwise in float64: -alpha_t (1 - p_t)^gamma log(p_t)."""
    x, t = x.double(), t.double()
    p = 1 / (1 + torch.exp(-x))
    p_t = torch.where(t == 1, p, 1 - p)
    alpha_t = torch.ones_like(x) if alpha < 0 else torch.where(t == 1, alpha, 1 - alpha)
    return -alpha_t * (1 - p_t) ** gamma * torch.log(p_t)


def random_problem(num_anchors=300, num_classes=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_anchors, num_classes, generator=g) * 3
    labels = torch.randint(0, num_classes + 1, (num_anchors,), generator=g)  # K = background
    labels[torch.rand(num_anchors, generator=g) < 0.1] = -1  # ignored
    return logits, labels


def one_hot_targets(labels, num_classes):
    valid = labels >= 0
    targets = F.one_hot(labels.clamp(min=0), num_classes + 1)[:, :num_classes].float()
    return targets, valid


@pytest.mark.parametrize("alpha,gamma", CASES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_dense_equals_torchvision_and_fvcore(alpha, gamma, reduction):
    logits, labels = random_problem()
    targets, _ = one_hot_targets(labels, logits.shape[1])
    ours = sigmoid_focal_loss(logits, targets, alpha, gamma, reduction)
    torch.testing.assert_close(ours, tv_focal(logits, targets, alpha, gamma, reduction))
    torch.testing.assert_close(ours, fvcore_focal(logits, targets, alpha, gamma, reduction))


def test_dense_version_compiles_with_torchscript_like_torchvisions(tmp_path):
    """Issue 28 (12): the drop-in for torchvision.ops.sigmoid_focal_loss scripts as torchvision's
    does (torchvision's own test_jit), survives save / load, and the scripted function gives
    torchvision's values, per-class alphas included."""
    import warnings

    logits, labels = random_problem()
    targets, _ = one_hot_targets(labels, logits.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, not gone
        scripted = torch.jit.script(sigmoid_focal_loss)
        tv_scripted = torch.jit.script(tv_focal)
        path = str(tmp_path / "fl.pt")

        class Wrap(torch.nn.Module):
            def forward(self, x, t):
                return sigmoid_focal_loss(x, t, 0.5, 1.5, "sum")

        torch.jit.save(torch.jit.script(Wrap()), path)
        loaded = torch.jit.load(path)
    for alpha, gamma, reduction in [(0.25, 2.0, "none"), (-1.0, 0.0, "mean"), (0.75, 5.0, "sum")]:
        torch.testing.assert_close(scripted(logits, targets, alpha, gamma, reduction),
                                   tv_scripted(logits, targets, alpha, gamma, reduction))
    torch.testing.assert_close(loaded(logits, targets), tv_focal(logits, targets, 0.5, 1.5, "sum"))
    per_class = torch.rand(logits.shape[1], dtype=torch.float64)
    torch.testing.assert_close(scripted(logits, targets, per_class, 2.0, "sum"),
                               sigmoid_focal_loss(logits, targets, per_class.tolist(), 2.0, "sum"))
    with pytest.raises(torch.jit.Error, match="Invalid reduction"):
        scripted(logits, targets, 0.25, 2.0, "max")


@pytest.mark.parametrize("alpha,gamma", CASES)
def test_labels_version_equals_paper_formula(alpha, gamma):
    logits, labels = random_problem()
    K = logits.shape[1]
    targets, valid = one_hot_targets(labels, K)
    expected = paper_formula(logits, targets, alpha, gamma) * valid[:, None]
    got = sigmoid_focal_loss_labels(logits.double(), labels, alpha, gamma, reduction="none")
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    total = sigmoid_focal_loss_labels(logits, labels, alpha, gamma, reduction="sum")
    assert math.isclose(total.item(), expected.sum().item(), rel_tol=1e-5)


@pytest.mark.parametrize("alpha,gamma", CASES)
def test_labels_version_equals_fvcore_on_valid_rows(alpha, gamma):
    """What Detectron2's RetinaNet computes: one-hot over valid anchors, fvcore, summed."""
    logits, labels = random_problem(seed=3)
    targets, valid = one_hot_targets(labels, logits.shape[1])
    logits_a = logits.clone().requires_grad_()
    logits_b = logits.clone().requires_grad_()
    ref = fvcore_focal(logits_a[valid], targets[valid], alpha, gamma, reduction="sum")
    ours = SigmoidFocalLoss(alpha=alpha, gamma=gamma)(logits_b, labels)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    ref.backward()
    ours.backward()
    torch.testing.assert_close(logits_b.grad, logits_a.grad, rtol=1e-5, atol=1e-6)
    assert torch.all(logits_b.grad[labels < 0] == 0)  # ignored anchors get no gradient


def test_gamma_zero_is_alpha_balanced_cross_entropy():
    logits, labels = random_problem(seed=5)
    K = logits.shape[1]
    targets, valid = one_hot_targets(labels, K)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    weight = 0.3 * targets + 0.7 * (1 - targets)
    expected = (weight * bce)[valid].sum()
    got = sigmoid_focal_loss_labels(logits, labels, alpha=0.3, gamma=0.0)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # alpha = -1 and gamma = 0: plain binary cross entropy
    got = sigmoid_focal_loss_labels(logits, labels, alpha=-1, gamma=0.0)
    torch.testing.assert_close(got, bce[valid].sum(), rtol=1e-5, atol=1e-6)


def test_weights_scale_rows():
    logits, labels = random_problem(seed=7)
    weights = torch.rand(len(labels))
    per_elem = sigmoid_focal_loss_labels(logits, labels, reduction="none")
    weighted = sigmoid_focal_loss_labels(logits, labels, reduction="sum", weights=weights)
    torch.testing.assert_close(weighted, (per_elem * weights[:, None]).sum())


def test_all_background_and_all_ignored():
    logits = torch.randn(50, 4)
    bg = torch.full((50,), 4)
    expected = paper_formula(logits, torch.zeros_like(logits), 0.25, 2.0).sum()
    assert math.isclose(sigmoid_focal_loss_labels(logits, bg).item(), expected.item(), rel_tol=1e-5)
    assert sigmoid_focal_loss_labels(logits, torch.full((50,), -1)).item() == 0.0


@pytest.mark.parametrize("impl", ["portable", "auto"])
def test_extreme_logits_are_finite(impl):
    logits = torch.tensor([[100.0, -100.0], [-100.0, 100.0]], requires_grad=True)
    loss = sigmoid_focal_loss_labels(logits, torch.tensor([0, 0]), impl=impl)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    # row 1 is confidently wrong twice: the positive (x=-100) costs alpha * 100 and the
    # negative (x=100) costs (1 - alpha) * 100; row 0 is confidently right and costs ~0
    assert loss.item() == pytest.approx(0.25 * 100 + 0.75 * 100, rel=1e-6)
    assert logits.grad[1].tolist() == pytest.approx([-0.25, 0.75], rel=1e-6)


@pytest.mark.parametrize("impl", ["portable", "auto"])
@pytest.mark.parametrize("gamma", [0.2, 0.5, 1.0, 2.0])
def test_saturated_logits_give_finite_gradient_for_any_gamma(impl, gamma):
    """(1 - p_t) ** gamma with gamma < 1 at 1 - p_t == 0 has an infinite derivative; the loss
    must still give the exact (zero) gradient there, and the formula's value elsewhere."""
    x = torch.tensor([[200.0, -200.0, 3.0], [-200.0, 200.0, -0.5]], dtype=torch.float64,
                     requires_grad=True)
    labels = torch.tensor([0, 1])
    loss = sigmoid_focal_loss_labels(x, labels, gamma=gamma, impl=impl)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    # every saturated entry is confidently right: its loss and gradient are 0 to double precision
    assert x.grad[:, :2].abs().max().item() < 1e-60
    # the unsaturated entries (both negatives) follow the paper's formula and its derivative
    for value in (3.0, -0.5):
        v = torch.tensor(value, dtype=torch.float64, requires_grad=True)
        p = torch.sigmoid(v)
        ref = -(1 - 0.25) * p ** gamma * torch.log(1 - p)
        (g,) = torch.autograd.grad(ref, v)
        row, col = (0, 2) if value == 3.0 else (1, 2)
        assert x.grad[row, col].item() == pytest.approx(g.item(), rel=1e-6)


def test_half_precision_accumulates_in_float32():
    logits, labels = random_problem(seed=11)
    ref = sigmoid_focal_loss_labels(logits, labels)
    got = sigmoid_focal_loss_labels(logits.bfloat16(), labels)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=2e-2, atol=0)


def test_gradcheck_float64():
    logits, labels = random_problem(num_anchors=20, num_classes=3, seed=13)
    x = logits.double().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda t: sigmoid_focal_loss_labels(t, labels, 0.25, 2.0, "sum"), (x,)
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": -0.5}, "alpha"),
        ({"gamma": -1.0}, "gamma"),
        ({"reduction": "avg"}, "reduction"),
    ],
)
def test_bad_arguments(kwargs, match):
    logits, labels = random_problem()
    with pytest.raises(ValueError, match=match):
        sigmoid_focal_loss_labels(logits, labels, **kwargs)


def paper_formula_per_class(x, t, alpha):
    """Eq. 5 with a per-class alpha, written out in float64, gamma = 2:
    class k costs -alpha_k (1 - p)^2 log(p) where t = 1 and -(1 - alpha_k) p^2 log(1 - p)
    where t = 0."""
    x, t = x.double(), t.double()
    p = 1 / (1 + torch.exp(-x))
    a = alpha.double()[None, :]
    return -(t * a * (1 - p) ** 2 * torch.log(p) + (1 - t) * (1 - a) * p**2 * torch.log(1 - p))


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_per_class_alpha_equals_formula(reduction):
    logits, labels = random_problem(seed=17)
    K = logits.shape[1]
    alpha = torch.tensor([0.1, 0.25, 0.5, 0.9, 0.0, 1.0, 0.4])
    assert alpha.numel() == K
    targets, valid = one_hot_targets(labels, K)
    expected = paper_formula_per_class(logits, targets, alpha) * valid[:, None]
    got = sigmoid_focal_loss_labels(logits.double(), labels, alpha, 2.0, reduction=reduction)
    if reduction == "none":
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    elif reduction == "sum":
        torch.testing.assert_close(got, expected.sum(), rtol=1e-10, atol=1e-12)
    else:
        torch.testing.assert_close(got, expected.sum() / (valid.sum() * K), rtol=1e-10, atol=0)
    # a per-class alpha of K equal values is the scalar alpha
    same = sigmoid_focal_loss_labels(logits, labels, torch.full((K,), 0.3), 2.0, reduction)
    torch.testing.assert_close(same, sigmoid_focal_loss_labels(logits, labels, 0.3, 2.0, reduction))
    # the dense drop-in broadcasts a per-class alpha over the last dimension
    dense = sigmoid_focal_loss(logits.double(), targets.double(), alpha, 2.0, "none")
    torch.testing.assert_close(dense[valid], expected[valid], rtol=1e-10, atol=1e-12)


def test_per_class_alpha_gradient_and_list():
    logits, labels = random_problem(num_anchors=30, num_classes=4, seed=19)
    alpha = [0.2, 0.8, 0.5, 0.35]
    x = logits.double().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda t: sigmoid_focal_loss_labels(t, labels, alpha, 2.0, "sum"), (x,)
    )
    got = sigmoid_focal_loss_labels(logits, labels, alpha)
    ref = sigmoid_focal_loss_labels(logits, labels, torch.tensor(alpha))
    torch.testing.assert_close(got, ref)


@pytest.mark.parametrize(
    "alpha,match",
    [
        (torch.tensor([0.25, 0.5]), "2 values but there are 7 classes"),
        (torch.tensor([[0.25] * 7]), "1-D"),
        (torch.tensor([0.25] * 6 + [1.5]), r"\[0, 1\]"),
        (torch.tensor([0.25] * 6 + [-1.0]), r"\[0, 1\]"),
    ],
)
def test_bad_per_class_alpha(alpha, match):
    logits, labels = random_problem()
    with pytest.raises(ValueError, match=match):
        sigmoid_focal_loss_labels(logits, labels, alpha)


@pytest.mark.parametrize("bad", [-2, 8])
def test_bad_labels(bad):
    logits, labels = random_problem()
    labels[3] = bad
    with pytest.raises(ValueError, match="labels"):
        sigmoid_focal_loss_labels(logits, labels)
