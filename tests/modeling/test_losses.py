"""The classification-loss family against independent references: each paper's formula written
out here in float64, fvcore's sigmoid_focal_loss_star, torchvision's sigmoid_focal_loss and
torch's cross entropy; gradcheck in float64; extreme logits; config validation."""
import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from fvcore.nn import sigmoid_focal_loss_star as fvcore_fl_star
from torchvision.ops import sigmoid_focal_loss as tv_focal

from retina_focal import (
    CLS_LOSS_REGISTRY,
    QualityFocalLoss,
    SigmoidFocalLoss,
    SigmoidFocalLossStar,
    SoftmaxFocalLoss,
    VarifocalLoss,
    add_retina_focal_config,
    build_cls_loss,
)

K = 5


def problem(num_anchors=200, num_classes=K, seed=0, scale=3.0, softmax=False):
    """Random logits, labels in {-1, 0..K-1, K} (10% ignored) and IoU targets in (0, 1)."""
    g = torch.Generator().manual_seed(seed)
    cols = num_classes + 1 if softmax else num_classes
    logits = torch.randn(num_anchors, cols, generator=g, dtype=torch.float64) * scale
    labels = torch.randint(0, num_classes + 1, (num_anchors,), generator=g)
    labels[torch.rand(num_anchors, generator=g) < 0.1] = -1
    ious = torch.rand(num_anchors, generator=g, dtype=torch.float64) * 0.9 + 0.05
    return logits, labels, ious


def sigm(x):
    return 1 / (1 + torch.exp(-x))


def one_hot(labels, num_classes, values=None):
    """(R, K) float64 target written out with a loop: values[i] (or 1) at (i, labels[i])."""
    t = torch.zeros(len(labels), num_classes, dtype=torch.float64)
    for i, lab in enumerate(labels.tolist()):
        if 0 <= lab < num_classes:
            t[i, lab] = 1.0 if values is None else float(values[i])
    return t


def valid_rows(labels):
    return (labels >= 0).double()[:, None]


# ---------------------------------------------------------------- reference formulas


def ref_focal(x, labels, alpha, gamma):
    """Paper eq. 5 with alpha_t = alpha_k (positives) / 1 - alpha_k (negatives)."""
    t = one_hot(labels, x.shape[1])
    p = sigm(x)
    p_t = torch.where(t == 1, p, 1 - p)
    a = torch.as_tensor(alpha, dtype=torch.float64)
    alpha_t = torch.ones_like(x) if a.dim() == 0 and a < 0 else t * a + (1 - t) * (1 - a)
    return -alpha_t * (1 - p_t) ** gamma * torch.log(p_t) * valid_rows(labels)


def ref_fl_star(x, labels, alpha, gamma, beta):
    """Paper appendix A: x_t = y x, p*_t = sigmoid(gamma x_t + beta), FL* = -log(p*_t)/gamma."""
    t = one_hot(labels, x.shape[1])
    y = 2 * t - 1
    p_star = sigm(gamma * y * x + beta)
    a = torch.as_tensor(alpha, dtype=torch.float64)
    alpha_t = torch.ones_like(x) if a.dim() == 0 and a < 0 else t * a + (1 - t) * (1 - a)
    return -alpha_t * torch.log(p_star) / gamma * valid_rows(labels)


def ref_softmax_focal(x, labels, alpha, gamma):
    """Softmax over K + 1 (background last): -alpha_t (1 - p_t)^gamma log p_t per anchor."""
    e = torch.exp(x - x.max(dim=1, keepdim=True).values)
    p = e / e.sum(dim=1, keepdim=True)
    out = torch.zeros(len(labels), dtype=torch.float64)
    num_classes = x.shape[1] - 1
    for i, lab in enumerate(labels.tolist()):
        if lab < 0:
            continue
        a = 1.0 if alpha < 0 else (alpha if lab < num_classes else 1 - alpha)
        out[i] = -a * (1 - p[i, lab]) ** gamma * torch.log(p[i, lab])
    return out


def ref_qfl(x, labels, ious, beta):
    """GFL eq. 6: -|y - s|^beta ((1 - y) log(1 - s) + y log s), y = IoU at the gt class."""
    y = one_hot(labels, x.shape[1], ious)
    s = sigm(x)
    return -(y - s).abs() ** beta * ((1 - y) * torch.log(1 - s) + y * torch.log(s)) \
        * valid_rows(labels)


def ref_vfl(x, labels, ious, alpha, gamma):
    """VarifocalNet eq. 2: -q (q log p + (1-q) log(1-p)) if q > 0, -alpha p^gamma log(1-p)."""
    q = one_hot(labels, x.shape[1], ious)
    p = sigm(x)
    pos = -q * (q * torch.log(p) + (1 - q) * torch.log(1 - p))
    neg = -alpha * p ** gamma * torch.log(1 - p)
    return torch.where(q > 0, pos, neg) * valid_rows(labels)


# ---------------------------------------------------------------- value tests


@pytest.mark.parametrize("alpha", [[0.1, 0.25, 0.5, 0.75, 0.9], [0.0, 1.0, 0.3, 0.3, 0.6]])
@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_sigmoid_focal_per_class_alpha_equals_formula(alpha, gamma):
    x, labels, _ = problem()
    loss = SigmoidFocalLoss(alpha=alpha, gamma=gamma)
    expected = ref_focal(x, labels, alpha, gamma)
    torch.testing.assert_close(loss.elementwise(x, labels), expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(loss(x, labels), expected.sum(), rtol=1e-9, atol=1e-12)


def test_sigmoid_focal_per_class_alpha_with_equal_values_is_the_scalar_case():
    x, labels, _ = problem(seed=1)
    per_class = SigmoidFocalLoss(alpha=[0.3] * K, gamma=2.0)(x, labels)
    scalar = SigmoidFocalLoss(alpha=0.3, gamma=2.0)(x, labels)
    torch.testing.assert_close(per_class, scalar)
    # and against torchvision (scalar alpha, dense one-hot targets over the valid rows)
    valid = labels >= 0
    ref = tv_focal(x[valid], one_hot(labels, K)[valid], 0.3, 2.0, reduction="sum")
    torch.testing.assert_close(per_class, ref)


@pytest.mark.parametrize("alpha", [-1.0, 0.25])
@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 4.0])
def test_fl_star_with_beta_zero_equals_fvcore(alpha, gamma):
    x, labels, _ = problem(seed=2)
    valid = labels >= 0
    ours = SigmoidFocalLossStar(alpha=alpha, gamma=gamma, beta=0.0)(x.float(), labels)
    ref = fvcore_fl_star(x[valid].float(), one_hot(labels, K)[valid].float(), alpha, gamma,
                         reduction="sum")
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("alpha,gamma,beta", [(0.25, 2.0, 1.0), (-1, 4.0, 0.0), (0.5, 1.0, -1.0),
                                              ([0.2, 0.4, 0.6, 0.8, 0.5], 2.0, 1.0)])
def test_fl_star_equals_formula(alpha, gamma, beta):
    x, labels, _ = problem(seed=3)
    loss = SigmoidFocalLossStar(alpha=alpha, gamma=gamma, beta=beta)
    expected = ref_fl_star(x, labels, alpha, gamma, beta)
    torch.testing.assert_close(loss.elementwise(x, labels), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1, 2.0), (0.5, 0.0), (0.75, 5.0)])
def test_softmax_focal_equals_formula(alpha, gamma):
    x, labels, _ = problem(seed=4, softmax=True)
    loss = SoftmaxFocalLoss(alpha=alpha, gamma=gamma)
    got = loss.elementwise(x, labels)
    assert got.shape == (len(labels), 1)
    torch.testing.assert_close(got[:, 0], ref_softmax_focal(x, labels, alpha, gamma),
                               rtol=1e-9, atol=1e-12)


def test_softmax_focal_gamma_zero_no_alpha_is_cross_entropy():
    x, labels, _ = problem(seed=5, softmax=True)
    ce = F.cross_entropy(x, labels, ignore_index=-1, reduction="sum")
    torch.testing.assert_close(SoftmaxFocalLoss(alpha=-1, gamma=0.0)(x, labels), ce)


def test_softmax_prior_bias_gives_foreground_probability_pi():
    for num_classes, pi in [(80, 0.01), (6, 0.05), (1, 0.3)]:
        bias = torch.tensor(SoftmaxFocalLoss.prior_logit_bias(num_classes, pi), dtype=torch.float64)
        assert len(bias) == SoftmaxFocalLoss.num_logits(num_classes) == num_classes + 1
        p = torch.softmax(bias, 0)
        assert p[:num_classes].sum().item() == pytest.approx(pi, rel=1e-9)
        assert torch.allclose(p[:num_classes], p[0].expand(num_classes))  # no class favoured
    # sigmoid losses: every logit sigmoid(b) = pi
    b = SigmoidFocalLoss.prior_logit_bias(7, 0.01)
    assert len(b) == 7 and sigm(torch.tensor(b[0])).item() == pytest.approx(0.01)


@pytest.mark.parametrize("beta", [2.0, 1.0, 0.0])
def test_qfl_equals_formula(beta):
    x, labels, ious = problem(seed=6)
    got = QualityFocalLoss(beta=beta).elementwise(x, labels, iou_targets=ious)
    torch.testing.assert_close(got, ref_qfl(x, labels, ious, beta), rtol=1e-9, atol=1e-12)


def test_qfl_with_hard_targets_is_focal_loss_without_alpha():
    """With IoU target 1 QFL(beta) is FL(alpha=-1, gamma=beta): checked against torchvision."""
    x, labels, _ = problem(seed=7)
    valid = labels >= 0
    qfl = QualityFocalLoss(beta=2.0)(x, labels, iou_targets=torch.ones(len(labels)))
    ref = tv_focal(x[valid], one_hot(labels, K)[valid], alpha=-1, gamma=2.0, reduction="sum")
    torch.testing.assert_close(qfl, ref)


@pytest.mark.parametrize("alpha,gamma", [(0.75, 2.0), (1.0, 0.0), (0.5, 1.5)])
def test_vfl_equals_formula(alpha, gamma):
    x, labels, ious = problem(seed=8)
    got = VarifocalLoss(alpha=alpha, gamma=gamma).elementwise(x, labels, iou_targets=ious)
    torch.testing.assert_close(got, ref_vfl(x, labels, ious, alpha, gamma),
                               rtol=1e-9, atol=1e-12)


def test_iou_targets_carry_no_gradient_and_are_required():
    x, labels, ious = problem(seed=9)
    ious = ious.clone().requires_grad_()
    for loss in (QualityFocalLoss(), VarifocalLoss()):
        out = loss(x.clone().requires_grad_(), labels, iou_targets=ious)
        out.backward()
        assert ious.grad is None
        with pytest.raises(ValueError, match="iou_targets"):
            loss(x, labels)


# ---------------------------------------------------------------- shared properties

ALL_LOSSES = [
    ("SigmoidFocalLoss", lambda: SigmoidFocalLoss(alpha=0.25, gamma=2.0)),
    ("SigmoidFocalLoss/per-class", lambda: SigmoidFocalLoss(alpha=[.1, .2, .3, .4, .5])),
    ("SigmoidFocalLossStar", lambda: SigmoidFocalLossStar(alpha=0.25, gamma=2.0, beta=1.0)),
    ("SoftmaxFocalLoss", lambda: SoftmaxFocalLoss(alpha=0.25, gamma=2.0)),
    ("QualityFocalLoss", lambda: QualityFocalLoss(beta=2.0)),
    ("VarifocalLoss", lambda: VarifocalLoss(alpha=0.75, gamma=2.0)),
    # exponents < 1: a saturated score must not turn 0 * inf into NaN gradients
    ("SoftmaxFocalLoss/gamma0.5", lambda: SoftmaxFocalLoss(alpha=0.25, gamma=0.5)),
    ("QualityFocalLoss/beta0.5", lambda: QualityFocalLoss(beta=0.5)),
    ("VarifocalLoss/gamma0.5", lambda: VarifocalLoss(alpha=0.75, gamma=0.5)),
]


def call_args(loss, x, labels, ious):
    return {"iou_targets": ious} if loss.needs_iou_targets else {}


def sized(loss, x):
    """Drop the background column for sigmoid losses (problem() makes K + 1 columns)."""
    return x if loss.score_activation == "softmax" else x[:, :K]


@pytest.mark.parametrize("name,make", ALL_LOSSES, ids=[n for n, _ in ALL_LOSSES])
def test_gradcheck_float64(name, make):
    loss = make()
    x, labels, ious = problem(num_anchors=12, seed=10, softmax=True)
    x = sized(loss, x).clone().requires_grad_()
    weights = torch.rand(len(labels), dtype=torch.float64)
    kw = call_args(loss, x, labels, ious)
    assert torch.autograd.gradcheck(lambda t: loss(t, labels, weights=weights, **kw), (x,))


@pytest.mark.parametrize("name,make", ALL_LOSSES, ids=[n for n, _ in ALL_LOSSES])
def test_extreme_logits_give_finite_loss_and_gradient(name, make):
    loss = make()
    g = torch.Generator().manual_seed(11)
    x = (torch.randint(0, 2, (40, K + 1), generator=g).float() * 2 - 1) * 100  # +-100
    labels = torch.arange(40) % (K + 2) - 1  # every label value, ignored included
    ious = torch.rand(40, generator=g)
    x = sized(loss, x).clone().requires_grad_()
    out = loss(x, labels, **call_args(loss, x, labels, ious))
    out.backward()
    assert torch.isfinite(out) and out.item() > 0
    assert torch.isfinite(x.grad).all()
    assert torch.all(x.grad[labels < 0] == 0)  # ignored anchors: no gradient


@pytest.mark.parametrize("name,make", ALL_LOSSES, ids=[n for n, _ in ALL_LOSSES])
def test_weights_per_anchor_and_forward_agree(name, make):
    loss = make()
    x, labels, ious = problem(seed=12, softmax=True)
    x = sized(loss, x)
    kw = call_args(loss, x, labels, ious)
    per_anchor = loss.per_anchor(x, labels, **kw)
    assert per_anchor.shape == labels.shape
    assert torch.all(per_anchor[labels < 0] == 0) and torch.all(per_anchor[labels >= 0] > 0)
    torch.testing.assert_close(loss(x, labels, **kw), per_anchor.sum())
    w = torch.rand(len(labels), dtype=torch.float64)
    torch.testing.assert_close(loss(x, labels, weights=w, **kw), (per_anchor * w).sum())


# ---------------------------------------------------------------- config


def cfg_with(opts):
    cfg = get_cfg()
    add_retina_focal_config(cfg)
    cfg.MODEL.RETINANET.NUM_CLASSES = K
    cfg.merge_from_list(opts)
    return cfg


def test_registered_names():
    for name in ["SigmoidFocalLoss", "SigmoidFocalLossStar", "SoftmaxFocalLoss",
                 "QualityFocalLoss", "VarifocalLoss"]:
        assert name in CLS_LOSS_REGISTRY


@pytest.mark.parametrize(
    "opts,cls,attrs",
    [
        ([], SigmoidFocalLoss, {"alpha": 0.25, "gamma": 2.0}),
        (["MODEL.RETINA_FOCAL.ALPHA_PER_CLASS", "[0.1, 0.2, 0.3, 0.4, 0.5]"], SigmoidFocalLoss,
         {"alpha": None}),
        (["MODEL.RETINA_FOCAL.LOSS_NAME", "SigmoidFocalLossStar",
          "MODEL.RETINA_FOCAL.FL_STAR_GAMMA", "4.0", "MODEL.RETINA_FOCAL.FL_STAR_BETA", "0.0"],
         SigmoidFocalLossStar, {"gamma": 4.0, "beta": 0.0, "alpha": 0.25}),
        (["MODEL.RETINA_FOCAL.LOSS_NAME", "SoftmaxFocalLoss",
          "MODEL.RETINANET.FOCAL_LOSS_GAMMA", "1.0"], SoftmaxFocalLoss, {"gamma": 1.0}),
        (["MODEL.RETINA_FOCAL.LOSS_NAME", "QualityFocalLoss", "MODEL.RETINA_FOCAL.QFL_BETA",
          "1.5"], QualityFocalLoss, {"beta": 1.5}),
        (["MODEL.RETINA_FOCAL.LOSS_NAME", "VarifocalLoss", "MODEL.RETINA_FOCAL.VFL_ALPHA",
          "0.5", "MODEL.RETINA_FOCAL.VFL_GAMMA", "1.0"], VarifocalLoss,
         {"alpha": 0.5, "gamma": 1.0}),
    ],
)
def test_built_from_config(opts, cls, attrs):
    loss = build_cls_loss(cfg_with(opts))
    assert type(loss) is cls
    for k, v in attrs.items():
        assert getattr(loss, k) == v
    if "ALPHA_PER_CLASS" in " ".join(opts):
        assert loss.alpha_per_class.tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


@pytest.mark.parametrize(
    "opts,match",
    [
        (["MODEL.RETINA_FOCAL.ALPHA_PER_CLASS", "[0.1, 0.2]"], "ALPHA_PER_CLASS has 2 values"),
        (["MODEL.RETINA_FOCAL.ALPHA_PER_CLASS", "[0.1, 0.2, 0.3, 0.4, 1.5]"],
         "ALPHA_PER_CLASS.*in \\[0, 1\\]"),
        (["MODEL.RETINA_FOCAL.LOSS_NAME", "SoftmaxFocalLoss",
          "MODEL.RETINA_FOCAL.ALPHA_PER_CLASS", "[0.1, 0.2, 0.3, 0.4, 0.5]"],
         "ALPHA_PER_CLASS.*not used by SoftmaxFocalLoss"),
        (["MODEL.RETINA_FOCAL.LOSS_NAME", "SigmoidFocalLossStar",
          "MODEL.RETINA_FOCAL.FL_STAR_GAMMA", "0.0"], "FL_STAR_GAMMA"),
        (["MODEL.RETINA_FOCAL.LOSS_NAME", "QualityFocalLoss",
          "MODEL.RETINA_FOCAL.QFL_BETA", "-1.0"], "QFL_BETA"),
        (["MODEL.RETINA_FOCAL.LOSS_NAME", "VarifocalLoss",
          "MODEL.RETINA_FOCAL.VFL_ALPHA", "0.0"], "VFL_ALPHA"),
        (["MODEL.RETINA_FOCAL.LOSS_NAME", "VarifocalLoss",
          "MODEL.RETINA_FOCAL.VFL_GAMMA", "-2.0"], "VFL_GAMMA"),
        (["MODEL.RETINA_FOCAL.LOSS_NAME", "SoftmaxFocalLoss",
          "MODEL.RETINANET.FOCAL_LOSS_GAMMA", "-1.0"], "FOCAL_LOSS_GAMMA"),
        (["MODEL.RETINA_FOCAL.LOSS_NAME", "FocalLoss"], "LOSS_NAME='FocalLoss'.*choices"),
    ],
)
def test_bad_config_values_name_the_key(opts, match):
    with pytest.raises(ValueError, match=match):
        build_cls_loss(cfg_with(opts))


def test_half_precision_is_computed_in_float32():
    x, labels, ious = problem(seed=13, softmax=True)
    for _, make in ALL_LOSSES:
        loss = make()
        xs = sized(loss, x).float()
        kw = call_args(loss, xs, labels, ious.float())
        ref = loss(xs, labels, **kw)
        got = loss(xs.bfloat16(), labels, **kw)
        assert got.dtype == torch.float32
        assert math.isclose(got.item(), ref.item(), rel_tol=3e-2)
