"""With default settings RetinaFocal is Detectron2's RetinaNet: same parameters, same losses
and gradients on the same batch, same detections."""
import pytest
import torch
from helpers import assert_same_losses_and_gradients, batch, crowded, losses_and_gradients, pair


@pytest.mark.parametrize(
    "opts",
    [
        [],
        ["MODEL.RETINANET.BBOX_REG_LOSS_TYPE", "giou"],
        ["MODEL.RETINANET.SMOOTH_L1_LOSS_BETA", "0.1"],
        ["MODEL.RETINANET.IOU_THRESHOLDS", "[0.3, 0.6]"],
        ["MODEL.RETINANET.FOCAL_LOSS_GAMMA", "0.0"],
        ["MODEL.RETINANET.FOCAL_LOSS_GAMMA", "5.0"],
        ["MODEL.RETINANET.FOCAL_LOSS_ALPHA", "-1.0"],
    ],
    ids=lambda o: " ".join(o) or "default",
)
def test_losses_and_gradients_equal_detectron2(tiny_cfg, opts):
    tiny_cfg.merge_from_list(opts)
    ref, ours = pair(tiny_cfg)
    assert_same_losses_and_gradients(ref, ours, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "opts",
    [[], ["MODEL.RETINANET.BBOX_REG_LOSS_TYPE", "giou"],
     ["MODEL.RETINANET.SMOOTH_L1_LOSS_BETA", "0.1"]],
    ids=lambda o: " ".join(o) or "default",
)
def test_default_cpu_layout_equals_nchw_in_float64(tiny_cfg, opts):
    """The default CPU model (channels-last weights and activations, the loss computed one
    FPN level at a time) computes what the NCHW model above does, which equals Detectron2's
    RetinaNet: in float64 losses and gradients agree to 1e-9. (Detectron2 itself cannot be
    the reference here: fvcore's focal loss casts to float32. In float32 the two layouts
    differ by convolution rounding, ~1e-6, which a ReLU or the L1 box loss can turn into a
    different subgradient for a value at its kink.)"""
    tiny_cfg.merge_from_list(opts)
    cfg_cl = tiny_cfg.clone()
    _, nchw = pair(tiny_cfg)
    _, cl = pair(cfg_cl, memory_format="auto")
    assert nchw.head.cls_score.weight.is_contiguous()
    assert not nchw.head.cls_score.weight.is_contiguous(memory_format=torch.channels_last)
    assert cl.head.cls_score.weight.is_contiguous(memory_format=torch.channels_last)
    assert_same_losses_and_gradients(nchw.double(), cl.double(), rtol=1e-9, atol=1e-12)


def test_channels_last_float32_losses_match_nchw(tiny_cfg):
    """In float32, the channels-last model's losses equal the NCHW model's to 1e-5."""
    cfg_cl = tiny_cfg.clone()
    ref, nchw = pair(tiny_cfg)
    _, cl = pair(cfg_cl, memory_format="channels_last")
    torch.manual_seed(0)
    inputs = [batch(True), batch(False), crowded()]
    features = {}
    cl.head.cls_subnet.register_forward_hook(lambda m, i, o: features.update(cls=o))
    a, _ = losses_and_gradients(nchw, inputs)
    b, _ = losses_and_gradients(cl, inputs)
    assert features["cls"].is_contiguous(memory_format=torch.channels_last)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=0)


@pytest.mark.parametrize(
    "opts",
    [
        ["MODEL.RETINANET.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "50"],
        ["MODEL.RETINANET.SCORE_THRESH_TEST", "0.3", "TEST.DETECTIONS_PER_IMAGE", "100"],
        ["MODEL.RETINANET.TOPK_CANDIDATES_TEST", "20", "TEST.DETECTIONS_PER_IMAGE", "30"],
        ["MODEL.RETINANET.NMS_THRESH_TEST", "0.3", "TEST.DETECTIONS_PER_IMAGE", "1000"],
    ],
    ids=lambda o: " ".join(o),
)
def test_detections_equal_detectron2(tiny_cfg, opts):
    tiny_cfg.merge_from_list(opts)
    ref, ours = pair(tiny_cfg)
    with torch.no_grad():  # a trained-like head: some confident scores
        for model in (ref, ours):
            model.head.cls_score.bias.normal_(-2, 2, generator=torch.Generator().manual_seed(2))
    ref.eval()
    ours.eval()
    inputs = [batch(True), crowded()]
    with torch.no_grad():
        a, b = ref(inputs), ours(inputs)
    for x, y in zip(a, b):
        x, y = x["instances"], y["instances"]
        assert len(x) == len(y) > 0
        torch.testing.assert_close(y.pred_boxes.tensor, x.pred_boxes.tensor, atol=1e-4, rtol=0)
        torch.testing.assert_close(y.scores, x.scores, atol=1e-4, rtol=0)
        assert torch.equal(y.pred_classes, x.pred_classes)


def randomize_norm_statistics(ref, ours, seed=3):
    """Give every BatchNorm / FrozenBatchNorm of ``ref`` non-trivial statistics and affine
    parameters (as after training: a fresh BN is the identity, which would hide a skipped or
    misapplied norm), then copy ``ref``'s state into ``ours``."""
    from detectron2.layers import CycleBatchNormList, FrozenBatchNorm2d

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)):
                c = m.running_mean.numel()
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            # (the per-level BNs of a CycleBatchNormList share the list's affine parameters)
            if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d, CycleBatchNormList)) \
                    and m.weight is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    ours.load_state_dict(ref.state_dict(), strict=True)


def assert_same_detections(ref, ours, inputs, box_atol, score_atol):
    with torch.no_grad():  # a trained-like classifier: some confident scores
        for model in (ref, ours):
            model.head.cls_score.bias.normal_(-2, 2, generator=torch.Generator().manual_seed(2))
    ref.eval()
    ours.eval()
    with torch.no_grad():
        a, b = ref(inputs), ours(inputs)
    for x, y in zip(a, b):
        x, y = x["instances"], y["instances"]
        assert len(x) == len(y) > 0
        assert torch.equal(y.pred_classes, x.pred_classes)
        # position by position the same class and score; two detections may swap places only
        # where their scores tie up to rounding (their order then depends on the summation
        # order: seen with AVX2 convolutions and Detectron2 main)
        torch.testing.assert_close(y.scores, x.scores, atol=score_atol, rtol=0)
        order = match_tied_detections(x, y, box_atol, score_atol)
        torch.testing.assert_close(y.pred_boxes.tensor[order], x.pred_boxes.tensor,
                                   atol=box_atol, rtol=0)


def match_tied_detections(x, y, box_atol, score_atol):
    """For each detection i of ``x``: the index in ``y`` of the same detection (same class,
    box within ``box_atol``, score within ``score_atol``), taken among the unused ones whose
    score ties with x's i-th score; i itself when it matches. Fails naming i when none does."""
    used = torch.zeros(len(y), dtype=torch.bool)
    order = []
    for i in range(len(x)):
        candidates = [i] + [j for j in range(len(y)) if j != i]
        for j in candidates:
            if used[j] or y.pred_classes[j] != x.pred_classes[i] \
                    or abs(float(y.scores[j] - x.scores[i])) > score_atol:
                continue
            if float((y.pred_boxes.tensor[j] - x.pred_boxes.tensor[i]).abs().max()) <= box_atol:
                used[j] = True
                order.append(j)
                break
        else:
            raise AssertionError(f"detection {i} (class {int(x.pred_classes[i])}, score "
                                 f"{float(x.scores[i]):.6f}, box "
                                 f"{x.pred_boxes.tensor[i].tolist()}) has no match")
    return torch.tensor(order, dtype=torch.long)


def test_quick_start_bn_head_equals_detectron2s_retinanet_head():
    """The quick-start config's head (BatchNorm, one set of statistics per FPN level, shared
    weights) is Detectron2's RetinaNetHead with NORM "BN": the same parameter names, losses
    and gradients in training (batch statistics), and detections in evaluation (running
    statistics)."""
    from conftest import CONFIGS

    from retina_focal.engine.defaults import build_cfg

    cfg = build_cfg(f"{CONFIGS}/Synthetic/retina_focal_R_18_FPN_synthetic.yaml", freeze=False)
    assert cfg.MODEL.RETINANET.NORM == "BN"
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.05
    ref, ours = pair(cfg, norm="BN")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in ours.head.modules())
    randomize_norm_statistics(ref, ours)
    # atol 1e-6: the loss summed by level (here) or at once (Detectron2) differs by float32
    # rounding, which training-mode BatchNorm carries back through every layer
    assert_same_losses_and_gradients(ref, ours, rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    assert_same_detections(ref, ours, [batch(True), crowded()], box_atol=1e-4, score_atol=1e-5)


def test_default_cpu_layout_detections_equal_detectron2(tiny_cfg):
    """What retina_focal's commands build on CPU by default (channels-last weights and
    activations, backbone FrozenBatchNorm folded into its convolutions) detects what
    Detectron2's RetinaNet with the same weights detects: the same classes in the same order,
    boxes and scores equal up to float32 rounding of the other summation order (1e-3 px,
    1e-5); two detections whose scores tie up to that rounding may swap places."""
    from retina_focal.ops.fold_bn import FrozenBNConv2d

    tiny_cfg.merge_from_list(["MODEL.BACKBONE.FREEZE_AT", 2, "MODEL.RESNETS.NORM", "FrozenBN",
                              "MODEL.RETINANET.SCORE_THRESH_TEST", "0.05",
                              "TEST.DETECTIONS_PER_IMAGE", "100"])
    assert tiny_cfg.MODEL.RETINA_FOCAL.MEMORY_FORMAT == "auto"
    assert tiny_cfg.MODEL.RETINA_FOCAL.FOLD_FROZEN_BN
    ref, ours = pair(tiny_cfg, memory_format="auto")
    randomize_norm_statistics(ref, ours)
    assert sum(isinstance(m, FrozenBNConv2d) for m in ours.modules()) > 0
    assert not any(isinstance(m, FrozenBNConv2d) for m in ref.modules())
    assert ours.head.cls_score.weight.is_contiguous(memory_format=torch.channels_last)
    torch.manual_seed(0)
    inputs = [batch(True), crowded(), batch(False)]
    assert_same_detections(ref, ours, inputs, box_atol=1e-3, score_atol=1e-5)
