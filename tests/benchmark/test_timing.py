"""The benchmark's compute counts against independent references."""
import torch
from torch import nn

from retina_focal.benchmark.timing import conv_flops, matmul_gflops


def test_conv_flops_is_twice_fvcores_multiply_adds():
    """``conv_flops`` (2 FLOPs per multiply-add, from the shapes the convolutions see) against
    fvcore's FlopCountAnalysis, which counts one per multiply-add: strided, grouped, 1x1 and
    3x3 convolutions, at a size that is not a multiple of the strides."""
    from fvcore.nn import FlopCountAnalysis

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1, groups=4),
                        nn.Conv2d(8, 16, 1), nn.Conv2d(16, 5, (3, 5), padding=(1, 2))).eval()
    x = torch.randn(2, 3, 37, 50)
    counted = conv_flops(net, lambda: net(x))
    reference = FlopCountAnalysis(net, (x,))
    reference.unsupported_ops_warnings(False)
    assert counted == 2 * reference.by_operator()["conv"]
    assert not any(m._forward_hooks for m in net.modules())  # the counting hooks are removed


def test_matmul_gflops_is_a_positive_rate():
    assert matmul_gflops(size=128, repeats=2) > 0
