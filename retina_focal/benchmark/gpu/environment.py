"""The GPU checks' environment: the benchmark report's
(:func:`retina_focal.utils.environment.measurement_environment`) with the GPU, the CUDA-side
versions and whether the fused CPU kernel is built (why CUDA is unavailable:
:func:`retina_focal.utils.environment.cuda_unavailable_reason`)."""
import os
from typing import Dict

import torch

from retina_focal.ops._cpu_kernel import is_built as cpu_kernel_built
from retina_focal.utils.environment import compilers, measurement_environment, package_version

__all__ = ["cpu_kernel_built", "gpu_environment"]


def gpu_environment(command: str, repeats: int) -> Dict:
    """Where the checks ran: the benchmark's environment, the GPU and versions, and whether a
    C/C++ compiler exists (Triton builds its launcher with one; the fused CPU kernel needs
    g++)."""
    import detectron2

    cuda = torch.cuda.is_available()
    return {
        **measurement_environment(command, repeats),
        "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cuda_available": cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_capability": list(torch.cuda.get_device_capability(0)) if cuda else None,
        "gpu_memory_gib": (torch.cuda.get_device_properties(0).total_memory / 2**30
                           if cuda else None),
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "torchvision": package_version("torchvision"), "triton": package_version("triton"),
        "fvcore": package_version("fvcore"),
        "detectron2": detectron2.__version__,
        "detectron2_path": os.path.dirname(detectron2.__file__),
        "retina_focal_path": os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        "compilers": compilers(),
        # the C++ CPU focal-loss kernel is built on first use on the CPU only: the GPU checks
        # never need it (False here at the end of a run shows it)
        "cpu_kernel_built_in_this_process": cpu_kernel_built(),
    }
