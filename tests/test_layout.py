"""The training step's layout choices: channels-last weights/activations on CPU
(MODEL.RETINA_FOCAL.MEMORY_FORMAT) and the classification loss summed one FPN level at a
time. Neither may change what is computed."""
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from retina_focal.modeling.meta_arch import RetinaFocal


def test_memory_format_from_config(tiny_cfg):
    assert tiny_cfg.MODEL.RETINA_FOCAL.MEMORY_FORMAT == "auto"
    assert RetinaFocal._memory_format_from_config(tiny_cfg) == "channels_last"  # CPU
    tiny_cfg.MODEL.DEVICE = "cuda"
    assert RetinaFocal._memory_format_from_config(tiny_cfg) == "contiguous"
    tiny_cfg.MODEL.RETINA_FOCAL.MEMORY_FORMAT = "channels_last"
    assert RetinaFocal._memory_format_from_config(tiny_cfg) == "channels_last"
    tiny_cfg.MODEL.RETINA_FOCAL.MEMORY_FORMAT = "nhwc"
    with pytest.raises(ValueError, match="MODEL.RETINA_FOCAL.MEMORY_FORMAT='nhwc'"):
        RetinaFocal._memory_format_from_config(tiny_cfg)


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
