"""What a report records about the process it was measured in, beside the CPU
(:mod:`retina_focal.utils.cpu`): the time, the installed version of a package, the C/C++
compilers on the PATH, the load average, and why CUDA cannot be used."""
import os
import shutil
import time
from typing import Dict, Optional, Sequence, Tuple

import torch

__all__ = ["compilers", "cuda_unavailable_reason", "load_average", "package_version",
           "utc_time"]


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
