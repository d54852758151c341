"""The head's per-level BatchNorm: CycleBatchNormFusedList against Detectron2's
CycleBatchNormList: the same values in float32, the same statistics and values up to bfloat16
rounding under autocast (where it fuses the shared affine into the BN call)."""
import copy

import pytest
import torch
from detectron2.layers import CycleBatchNormList, ShapeSpec
from torch import nn

from retina_focal.modeling.head import CycleBatchNormFusedList, RetinaFocalHead


def _pair(momentum=0.1):
    torch.manual_seed(0)
    reference = CycleBatchNormList(length=3, bn_class=nn.BatchNorm2d, num_features=8)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-0.5, 0.5)
    for bn in reference:
        bn.momentum = momentum
    ours = CycleBatchNormFusedList(length=3, bn_class=nn.BatchNorm2d, num_features=8)
    ours.load_state_dict(reference.state_dict())
    for bn in ours:
        bn.momentum = momentum
    return ours, reference


def _inputs():
    g = torch.Generator().manual_seed(1)
    # 2 cycles over 3 levels of different sizes and statistics
    return [torch.randn(2, 8, s, s, generator=g) * (1 + lvl) + lvl
            for _ in range(2) for lvl, s in enumerate((8, 4, 2))]


def _run(module, inputs, autocast):
    outputs, grads = [], []
    for x in inputs:
        # under autocast the head's BN gets a convolution's bfloat16 output
        x = x.to(torch.bfloat16 if autocast else torch.float32).requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = module(x)
        outputs.append(y)
        (y.float() * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        grads.append(x.grad)
    return outputs, grads


def _buffers(module):
    return {k: v for k, v in module.state_dict().items() if k[0].isdigit()}


@pytest.mark.parametrize("momentum", [0.1, None])
def test_float32_is_detectron2s_value_for_value(momentum):
    ours, reference = _pair(momentum)
    assert list(ours.state_dict()) == list(reference.state_dict())
    for training in (True, False):
        ours.train(training), reference.train(training)
        (out_a, grad_a), (out_b, grad_b) = (_run(m, _inputs(), False) for m in (ours, reference))
        for a, b in zip(out_a + grad_a, out_b + grad_b):
            assert torch.equal(a, b)
    for k, v in _buffers(reference).items():
        assert torch.equal(_buffers(ours)[k], v), k
    assert torch.equal(ours.weight.grad, reference.weight.grad)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_bfloat16_autocast_fuses_with_the_same_statistics(momentum):
    ours, reference = _pair(momentum)
    before = copy.deepcopy(_buffers(ours))
    (out_a, grad_a), (out_b, grad_b) = (_run(m, _inputs(), True) for m in (ours, reference))
    assert {y.dtype for y in out_a} == {torch.bfloat16}  # Detectron2's: float32
    assert {y.dtype for y in out_b} == {torch.float32}
    for a, b in zip(out_a + grad_a, out_b + grad_b):
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=3e-2)
    buffers = _buffers(ours)
    for k, v in _buffers(reference).items():
        assert torch.equal(buffers[k], v), k
        if "running" in k:
            assert not torch.equal(buffers[k], before[k])  # they were updated
    assert [int(bn.num_batches_tracked) for bn in ours] == [2, 2, 2]
    for p, q in ((ours.weight, reference.weight), (ours.bias, reference.bias)):
        torch.testing.assert_close(p.grad, q.grad, rtol=2e-2, atol=5e-2)
    ours.eval(), reference.eval()
    (out_a, _), (out_b, _) = (_run(m, _inputs(), True) for m in (ours, reference))
    for a, b in zip(out_a, out_b):  # eval: the running statistics, not the batch's
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=3e-2)


def test_the_head_uses_it_for_bn_only():
    shapes = [ShapeSpec(channels=8, stride=s) for s in (8, 16, 32)]
    bn = RetinaFocalHead(input_shape=shapes, num_classes=3, num_anchors=9, conv_dims=[8, 8],
                         norm="BN")
    assert sum(type(m) is CycleBatchNormFusedList for m in bn.modules()) == 4
    sync = RetinaFocalHead(input_shape=shapes, num_classes=3, num_anchors=9, conv_dims=[8, 8],
                           norm="SyncBN")
    assert sum(type(m) is CycleBatchNormList for m in sync.modules()) == 4
    assert list(bn.state_dict()) == list(sync.state_dict())
