"""What this CPU is, read once from Linux's ``/proc/cpuinfo``: its model name, family and model
numbers and feature flags. Benchmarks record it with every figure (speed ratios differ between
CPUs that look alike: an AMD EPYC of family 25 model 1 is not one of model 17), the fused
kernel's cache is keyed by it, and bfloat16 autocast is chosen from its flags."""
import functools
import platform
from typing import Dict, FrozenSet, NamedTuple, Optional

__all__ = ["CpuInfo", "cpu_info", "describe_cpu"]

# flags worth naming beside a timing: the vector and bfloat16 instructions our kernels use
NOTABLE_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "bf16", "sve")


class CpuInfo(NamedTuple):
    model_name: str  # e.g. "AMD EPYC 7B13"; the machine type where unknown
    vendor: Optional[str]  # "AuthenticAMD", "GenuineIntel", ...
    family: Optional[int]
    model: Optional[int]
    flags: FrozenSet[str]  # x86 "flags" / Arm "Features"

    def as_dict(self) -> Dict:
        return {"model_name": self.model_name, "vendor": self.vendor, "family": self.family,
                "model": self.model,
                "notable_flags": [f for f in NOTABLE_FLAGS if f in self.flags]}


def _int(value: Optional[str]) -> Optional[int]:
    try:
        return int(value, 0) if value is not None else None
    except ValueError:
        return None


@functools.lru_cache(maxsize=None)
def cpu_info(cpuinfo_path: str = "/proc/cpuinfo") -> CpuInfo:
    """The first processor's entry of ``cpuinfo_path``; where the file cannot be read (not
    Linux), the machine type and no flags."""
    fields: Dict[str, str] = {}
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break  # the first processor is enough: they are all the same here
                    continue
                name, _, value = line.partition(":")
                fields.setdefault(name.strip().lower(), value.strip())
    except OSError:
        pass
    flags = fields.get("flags", fields.get("features", ""))
    return CpuInfo(
        model_name=fields.get("model name") or platform.processor() or platform.machine(),
        vendor=fields.get("vendor_id"), family=_int(fields.get("cpu family")),
        model=_int(fields.get("model")), flags=frozenset(flags.split()))


def describe_cpu(info: Optional[CpuInfo] = None) -> str:
    """One line for a report: ``AMD EPYC 7B13 (family 25 model 1; avx2 avx512f avx512_bf16)``."""
    info = info or cpu_info()
    ids = f"family {info.family} model {info.model}" if info.family is not None else ""
    notable = " ".join(f for f in NOTABLE_FLAGS if f in info.flags)
    inner = "; ".join(p for p in (ids, notable) if p)
    return f"{info.model_name} ({inner})" if inner else info.model_name
