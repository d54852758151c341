"""The compute counts the benchmarks report, against independent references."""
import torch
from torch import nn

from retina_focal.analysis.compute import conv_flops, count_compiles, matmul_gflops


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


def test_count_compiles_counts_first_compiles_and_recompiles():
    """With the eager backend (no code generation, so fast on the CPU): new sizes of a
    dynamic dimension compile nothing; another value of a Python flag compiles again, with its
    reason logged."""
    def terms(x, grad: bool):
        y = torch.sigmoid(x) * 2.0
        return -y if grad else y

    fn = torch.compile(terms, dynamic=True, backend="eager")
    calls = [(f"{n} {grad}", lambda n=n, grad=grad: fn(torch.randn(n, 3), grad))
             for grad in (False, True) for n in (50, 70, 90)]
    result = count_compiles(calls, "cpu")
    assert [c["frames"] for c in result["calls"]] == [1, 0, 0, 1, 0, 0]
    assert result["frames_compiled"] == 2 and result["frames_compiled_after_first_call"] == 1
    assert result["calls_that_compiled"] == 2 and result["graphs"] == 2
    assert result["recompile_limit"] >= 1
    assert len(result["recompile_reasons"]) == 1 and "grad" in result["recompile_reasons"][0]


def test_the_profiler_prints_no_error_line_on_a_machine_without_gpu(tmp_path):
    """A stranger's find: a successful benchmark's stderr carried the profiler's ``ERROR ...
    gpuGetDeviceCount failed``. Measured in a fresh process, where the profiler starts."""
    import os
    import subprocess
    import sys

    code = ("import torch\nfrom retina_focal.analysis.compute import peak_extra_bytes\n"
            "print(peak_extra_bytes(lambda: torch.ones(100, 100) * 2))\n")
    env = {k: v for k, v in os.environ.items() if k != "KINETO_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.split()[-1]) >= 100 * 100 * 4
    assert "ERROR" not in proc.stderr, proc.stderr
