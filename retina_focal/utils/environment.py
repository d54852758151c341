"""What a report records about the process it was measured in, beside the CPU
(:mod:`retina_focal.utils.cpu`): the time, the installed version of a package, the C/C++
compilers on the PATH, the load average, and why CUDA cannot be used."""
import os
import platform
import shutil
import time
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from retina_focal.utils.cpu import cpu_info, describe_cpu

__all__ = ["compilers", "cuda_unavailable_reason", "load_average", "measurement_environment",
           "package_version", "utc_time"]


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
    and flags (ratios differ between CPUs that look alike), Python, the command line, the
    repeats, the time and the load average."""
    return {
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu": describe_cpu(), "cpu_info": cpu_info().as_dict(),
        "python": platform.python_version(),
        "command": command,
        "repeats": repeats, "time": utc_time(), "load_average": load_average(),
    }
