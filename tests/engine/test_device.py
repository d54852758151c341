"""The training step's layout choices: channels-last weights/activations on CPU
(MODEL.RETINA_FOCAL.MEMORY_FORMAT), frozen BatchNorm folded into convolutions
(MODEL.RETINA_FOCAL.FOLD_FROZEN_BN), both applied by retina_focal.engine.device where every
command builds its model (retina_focal.engine.defaults.build_model), and the classification
loss summed one FPN level at a time. None of them may change what is computed."""
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from helpers import assert_same_losses_and_gradients, scripted_and_eager

from retina_focal.engine.defaults import build_model
from retina_focal.engine.device import apply_device_speedups_from_config


def _is_channels_last(cfg) -> bool:
    """Whether the config's speed-ups store a convolution's weight channels-last."""
    conv = apply_device_speedups_from_config(torch.nn.Conv2d(3, 8, 3), cfg)
    return conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_memory_format_from_config(tiny_cfg):
    assert tiny_cfg.MODEL.RETINA_FOCAL.MEMORY_FORMAT == "auto"
    assert _is_channels_last(tiny_cfg)  # CPU
    tiny_cfg.MODEL.DEVICE = "cuda"
    assert not _is_channels_last(tiny_cfg)
    tiny_cfg.MODEL.RETINA_FOCAL.MEMORY_FORMAT = "channels_last"
    assert _is_channels_last(tiny_cfg)
    tiny_cfg.MODEL.RETINA_FOCAL.MEMORY_FORMAT = "contiguous"
    tiny_cfg.MODEL.DEVICE = "cpu"
    assert not _is_channels_last(tiny_cfg)
    tiny_cfg.MODEL.RETINA_FOCAL.MEMORY_FORMAT = "nhwc"
    with pytest.raises(ValueError, match="MODEL.RETINA_FOCAL.MEMORY_FORMAT='nhwc'"):
        build_model(tiny_cfg)


def test_speedups_are_applied_where_models_are_built_not_by_the_model(tiny_cfg):
    """RetinaFocal is about detection: built by Detectron2's own build_model it is NCHW and
    unfolded whatever the config says; retina_focal's build_model applies the config's
    speed-ups, to whatever meta-architecture the config names."""
    from detectron2.modeling import build_model as d2_build_model

    from retina_focal.ops.fold_bn import FrozenBNConv2d

    cfg = frozen_bn_cfg(tiny_cfg, True)
    plain = d2_build_model(cfg)
    assert not plain.head.cls_score.weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(isinstance(m, FrozenBNConv2d) for m in plain.modules())
    for arch in ("RetinaFocal", "RetinaNet"):
        cfg.MODEL.META_ARCHITECTURE = arch
        cfg.MODEL.RETINANET.NORM = ""  # Detectron2 0.6's RetinaNetHead cannot build a GN head
        fast = build_model(cfg)
        assert fast.head.cls_score.weight.is_contiguous(memory_format=torch.channels_last)
        assert any(isinstance(m, FrozenBNConv2d) for m in fast.modules()), arch


def test_channels_last_model_weights_and_checkpoints(tiny_cfg, tmp_path):
    """Every 4D weight is channels-last; a checkpoint of it loads into an NCHW model (and
    back) with the same values, and the loaded model keeps its own layout."""
    torch.manual_seed(0)
    cl = build_model(tiny_cfg)
    convs = [m for m in cl.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(
        m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    DetectionCheckpointer(cl, save_dir=str(tmp_path)).save("cl")

    nchw_cfg = tiny_cfg.clone()
    nchw_cfg.MODEL.RETINA_FOCAL.MEMORY_FORMAT = "contiguous"
    torch.manual_seed(1)
    nchw = build_model(nchw_cfg)
    DetectionCheckpointer(nchw).load(str(tmp_path / "cl.pth"))
    for (name, a), (_, b) in zip(cl.state_dict().items(), nchw.state_dict().items()):
        assert torch.equal(a, b), name
    assert nchw.head.cls_score.weight.is_contiguous()

    with torch.no_grad():
        nchw.head.cls_score.bias.add_(1.0)
    cl.load_state_dict(nchw.state_dict())
    assert torch.equal(cl.head.cls_score.bias, nchw.head.cls_score.bias)
    assert cl.head.cls_score.weight.is_contiguous(memory_format=torch.channels_last)


class _RecordingLoss(torch.nn.Module):
    """Wraps a loss; records the row count of each call."""

    def __init__(self, loss):
        super().__init__()
        self.loss, self.rows = loss, []

    def forward(self, logits, labels, **targets):
        self.rows.append(logits.shape[0])
        return self.loss(logits, labels, **targets)


@pytest.mark.parametrize("loss_name", ["SigmoidFocalLoss", "QualityFocalLoss",
                                       "SoftmaxFocalLoss"])
def test_per_level_loss_equals_one_call_on_the_concatenation(tiny_cfg, loss_name):
    """Per-level sums (levels of different sizes, 3 images, with sampler weights and IoU
    targets) equal one call on the (N*R, C) concatenation, value and gradient."""
    from retina_focal.modeling.losses import build_cls_loss

    tiny_cfg.MODEL.RETINA_FOCAL.LOSS_NAME = loss_name
    model = build_model(tiny_cfg)
    loss = build_cls_loss(tiny_cfg)
    k = tiny_cfg.MODEL.RETINANET.NUM_CLASSES
    c = loss.num_logits(k)
    g = torch.Generator().manual_seed(0)
    n, sizes = 3, [72, 18, 9]
    levels = [torch.randn(n, r, c, generator=g, dtype=torch.float64).requires_grad_()
              for r in sizes]
    labels = torch.randint(-1, k + 1, (n, sum(sizes)), generator=g)
    targets = {"weights": torch.rand(n, sum(sizes), generator=g, dtype=torch.float64)}
    if loss.needs_iou_targets:
        targets["iou_targets"] = torch.rand(n, sum(sizes), generator=g, dtype=torch.float64)
    model.cls_loss = _RecordingLoss(loss)
    per_level = model._cls_loss_per_level(levels, labels, targets)
    assert model.cls_loss.rows == [n * r for r in sizes]
    grads = torch.autograd.grad(per_level, levels)

    flat = torch.cat(levels, dim=1).flatten(0, 1)
    whole = loss(flat, labels.flatten(), **{key: v.flatten() for key, v in targets.items()})
    expected = torch.autograd.grad(whole, levels)
    torch.testing.assert_close(per_level, whole, rtol=1e-12, atol=0)
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def frozen_bn_cfg(tiny_cfg, fold):
    cfg = tiny_cfg.clone()
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 2  # stem and res2 frozen, res3-res5 trained
    cfg.MODEL.RETINA_FOCAL.FOLD_FROZEN_BN = fold
    return cfg


def test_folded_frozen_bn_equals_conv_then_norm(tiny_cfg):
    """Folding changes the class of the backbone's conv+FrozenBN modules only: same state_dict
    keys and values, and in float64 the same losses and gradients (trained and frozen stages,
    non-trivial norm statistics)."""
    from detectron2.layers import FrozenBatchNorm2d

    from retina_focal.ops.fold_bn import FrozenBNConv2d

    torch.manual_seed(0)
    plain = build_model(frozen_bn_cfg(tiny_cfg, False))
    with torch.no_grad():  # statistics and affine terms that are not the identity
        g = torch.Generator().manual_seed(3)
        for m in plain.modules():
            if isinstance(m, FrozenBatchNorm2d):
                for buf in (m.weight, m.bias, m.running_mean):
                    buf.copy_(torch.randn(buf.shape, generator=g) * 0.3 + (buf == 1) * 1.0)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    folded = build_model(frozen_bn_cfg(tiny_cfg, True))
    assert list(folded.state_dict()) == list(plain.state_dict())
    folded.load_state_dict(plain.state_dict())
    n_folded = sum(isinstance(m, FrozenBNConv2d) for m in folded.modules())
    n_frozen = sum(isinstance(m, FrozenBatchNorm2d) for m in plain.modules())
    assert n_folded == n_frozen > 0
    assert not any(isinstance(m, FrozenBNConv2d) for m in plain.modules())
    assert_same_losses_and_gradients(plain.double(), folded.double(), rtol=1e-9, atol=1e-12)


def test_folded_model_scripts_and_gives_the_same_detections(tiny_cfg):

    cfg = frozen_bn_cfg(tiny_cfg, True)
    cfg.merge_from_list(["MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"])
    out, eager = scripted_and_eager(cfg)
    assert len(eager) == len(out) > 0
    torch.testing.assert_close(out.scores, eager.scores, atol=1e-4, rtol=0)
