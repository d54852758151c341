"""The GPU checks' environment: why CUDA is unavailable, the versions and devices recorded in
the report, whether the fused CPU kernel is built."""
import os
import platform
import shutil
import time
from typing import Dict, Optional

import torch

from retina_focal.utils.cpu import describe_cpu


def cuda_unavailable_reason() -> Optional[str]:
    """None when a CUDA device can be used, else why not (the reason each section records)."""
    if not torch.cuda.is_available():
        built = torch.version.cuda
        return ("no CUDA device: torch.cuda.is_available() is False (torch "
                f"{torch.__version__}, built {'with CUDA ' + built if built else 'without CUDA'})")
    return None


def _version(module: str) -> Optional[str]:
    try:
        return __import__(module).__version__
    except Exception as e:  # not installed, or broken: the report says which
        return f"unavailable ({type(e).__name__}: {e})"


def gpu_environment(command: str) -> Dict:
    """Where the checks ran: versions, the GPU, and whether a C/C++ compiler exists (Triton
    builds its launcher with one; the fused CPU kernel needs g++)."""
    import detectron2

    cuda = torch.cuda.is_available()
    return {
        "command": command,
        "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "python": platform.python_version(), "torch": torch.__version__,
        "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cuda_available": cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_capability": list(torch.cuda.get_device_capability(0)) if cuda else None,
        "gpu_memory_gib": (torch.cuda.get_device_properties(0).total_memory / 2**30
                           if cuda else None),
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "torchvision": _version("torchvision"), "triton": _version("triton"),
        "fvcore": _version("fvcore"),
        "detectron2": detectron2.__version__,
        "detectron2_path": os.path.dirname(detectron2.__file__),
        "retina_focal_path": os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        "compilers": {c: shutil.which(c) for c in ("cc", "gcc", "g++")},
        "cpu_threads": torch.get_num_threads(), "cpu": describe_cpu(),
        # the C++ CPU focal-loss kernel is built on first use on the CPU only: the GPU checks
        # never need it (False here at the end of a run shows it)
        "cpu_kernel_built_in_this_process": cpu_kernel_built(),
    }


def cpu_kernel_built() -> bool:
    from retina_focal.ops import _cpu_kernel

    return _cpu_kernel._cached is not None
