"""What a report records about the process it was measured in, beside the CPU
(:mod:`retina_focal.utils.cpu`): the time, the installed version of a package, the C/C++
compilers on the PATH, the load average, the GPU and why CUDA cannot be used; every report's
(:func:`measurement_environment`) and the GPU checks' (:func:`gpu_environment`)."""
import importlib.util
import os
import platform
import shutil
import time
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from retina_focal.utils.cpu import cpu_info, describe_cpu

__all__ = ["DEPLOY_PACKAGES", "compilers", "cuda_unavailable_reason", "gpu_environment",
           "load_average", "measurement_environment", "package_version", "require_packages",
           "utc_time"]

# the packages of the "deploy" extra (setup.py): ONNX export and onnxruntime
DEPLOY_PACKAGES = ("onnx", "onnxruntime")


def utc_time() -> str:
    """Now, as ``2024-05-01 12:00:00 UTC``."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def package_version(module: str) -> Optional[str]:
    """``module.__version__``; where it cannot be imported, ``unavailable (why)``."""
    try:
        version: Optional[str] = __import__(module).__version__
        return version
    except Exception as e:  # not installed, or broken: the report says which
        return f"unavailable ({type(e).__name__}: {e})"


def compilers(names: Sequence[str] = ("cc", "gcc", "g++")) -> Dict[str, Optional[str]]:
    """The path of each compiler on the PATH (None: not found)."""
    return {c: shutil.which(c) for c in names}


def load_average() -> Optional[Tuple[float, float, float]]:
    """The 1, 5 and 15 minute load averages; None where the system has none."""
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def cuda_unavailable_reason() -> Optional[str]:
    """None when a CUDA device can be used, else why not (the reason each section records)."""
    if not torch.cuda.is_available():
        built = torch.version.cuda
        return ("no CUDA device: torch.cuda.is_available() is False (torch "
                f"{torch.__version__}, built {'with CUDA ' + built if built else 'without CUDA'})")
    return None


def measurement_environment(command: str, repeats: int) -> Dict[str, Any]:
    """Where and how a report's figures were measured: torch and its threads, the CPU model
    and flags (ratios differ between CPUs that look alike), Python, Detectron2's version and
    where it and retina_focal were imported from, the command line, the repeats, the time and
    the load average."""
    import detectron2

    return {
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "detectron2": detectron2.__version__,
        "detectron2_path": os.path.dirname(detectron2.__file__),
        # this package's folder (utils/ is one below it)
        "retina_focal_path": os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        "cpu": describe_cpu(), "cpu_info": cpu_info().as_dict(),
        "python": platform.python_version(),
        "command": command,
        "repeats": repeats, "time": utc_time(), "load_average": load_average(),
    }


def gpu_environment(command: str, repeats: int) -> Dict[str, Any]:
    """Where the GPU checks ran: :func:`measurement_environment`, the GPU and the CUDA-side
    versions, the other packages' versions, and whether a C/C++ compiler exists (Triton builds
    its launcher with one; the fused CPU kernel needs g++)."""
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
        "compilers": compilers(),
    }


def require_packages(what: str, modules: Sequence[str] = DEPLOY_PACKAGES) -> None:
    """Raise :class:`~retina_focal.utils.errors.MissingPackage` naming those of ``modules``
    that are not installed and what needs them (``what``, e.g. ``"--format onnx"``), before
    any work: the ONNX packages are the optional ``deploy`` extra."""
    from retina_focal.utils.errors import MissingPackage

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        extra = "'retina_focal[deploy]'" if set(missing) <= set(DEPLOY_PACKAGES) else ""
        raise MissingPackage(f"{what} needs the Python package{'s' if len(missing) > 1 else ''} "
                             f"{' and '.join(missing)}, not installed here: pip install "
                             f"{extra or ' '.join(missing)}"
                             + (f" (or pip install {' '.join(missing)})" if extra else ""))
