"""Device-specific speed-ups, applied once where a model is built, before any optimizer or
``DistributedDataParallel`` sees its parameters. None of them changes what the model computes
beyond floating-point rounding, its parameter names, or its checkpoints.

* ``memory_format``: "contiguous" (NCHW, Detectron2's) or "channels_last": the 4D weights
  are stored channels-last (NHWC), so every convolution, from the first one on the (NCHW)
  input batch, outputs channels-last activations, which oneDNN's CPU convolutions run faster.
  "auto" picks channels-last on the CPU and NCHW elsewhere.
* ``fold_frozen_bn``: each backbone ``Conv2d`` + ``FrozenBatchNorm2d`` runs as one convolution
  with the folded weight and bias (:mod:`retina_focal.ops.fold_bn`).

It also says whether mixed precision on a CPU should run in bfloat16
(:func:`use_cpu_bfloat16`): only where the CPU computes bfloat16 natively, unless asked.
"""
import functools
import platform

import torch
from detectron2.config import CfgNode
from torch import nn

from retina_focal.config import MEMORY_FORMATS, InvalidArgument, check, check_choice
from retina_focal.ops.fold_bn import fold_frozen_batchnorm
from retina_focal.utils.cpu import cpu_info

__all__ = [
    "check_device_available",
    "CONFIG_KEYS", "CPU_BFLOAT16_MODES", "apply_device_speedups", "check_cpu_bfloat16",
    "apply_device_speedups_from_config", "cpu_has_native_bfloat16", "resolve_memory_format",
    "use_cpu_bfloat16",
]

# Values of MODEL.RETINA_FOCAL.CPU_BFLOAT16 (train.amp.cpu_bfloat16): when SOLVER.AMP.ENABLED
# on a CPU trains in bfloat16: "native" only on a CPU with bfloat16 instructions (float32
# elsewhere, where emulated bfloat16 is slower than float32), "always" everywhere.
CPU_BFLOAT16_MODES = ("native", "always")

# CPU feature flags (Linux /proc/cpuinfo) of bfloat16 arithmetic: x86 AVX512-BF16 and AMX-BF16,
# Arm's BF16 extension.
_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")

# The YAML config's keys for the arguments of apply_device_speedups.
CONFIG_KEYS = {
    "memory_format": "MODEL.RETINA_FOCAL.MEMORY_FORMAT",
    "fold_frozen_bn": "MODEL.RETINA_FOCAL.FOLD_FROZEN_BN",
    "device": "MODEL.DEVICE",
}


def resolve_memory_format(memory_format: str, device: str) -> str:
    """``memory_format`` in :data:`MEMORY_FORMATS` -> "channels_last" or "contiguous" for a
    model on ``device`` ("auto": channels-last on the CPU)."""
    check_choice(memory_format, MEMORY_FORMATS, key="memory_format")
    if memory_format == "auto":
        return "channels_last" if str(device).startswith("cpu") else "contiguous"
    return memory_format


def apply_device_speedups(
    model: nn.Module, *, memory_format: str, fold_frozen_bn: bool, device: str
) -> nn.Module:
    """Apply the speed-ups to ``model`` in place and return it.

    Args:
        model: a built model (folding touches only its ``Conv2d`` + ``FrozenBatchNorm2d``
            pairs: the backbone's, in Detectron2's models).
        memory_format: "auto", "channels_last" or "contiguous".
        fold_frozen_bn: fold each frozen BatchNorm into the convolution before it.
        device: the device the model runs on (``MODEL.DEVICE`` / ``train.device``), for "auto".
    """
    layout = resolve_memory_format(memory_format, device)
    check(isinstance(fold_frozen_bn, bool), fold_frozen_bn, key="fold_frozen_bn",
          requirement="use True or False")
    if fold_frozen_bn:
        fold_frozen_batchnorm(model)
    if layout == "channels_last":
        model.to(memory_format=torch.channels_last)
    return model


def apply_device_speedups_from_config(model: nn.Module, cfg: CfgNode) -> nn.Module:
    """:func:`apply_device_speedups` with a YAML config's :data:`CONFIG_KEYS`; a bad value is a
    ValueError naming the key."""
    rf = cfg.MODEL.RETINA_FOCAL
    try:
        return apply_device_speedups(model, memory_format=rf.MEMORY_FORMAT,
                                     fold_frozen_bn=rf.FOLD_FROZEN_BN, device=cfg.MODEL.DEVICE)
    except InvalidArgument as e:
        raise e.naming(CONFIG_KEYS) from e


@functools.lru_cache(maxsize=None)
def cpu_has_native_bfloat16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bfloat16 instructions (x86 ``avx512_bf16`` / ``amx_bf16``, Arm
    ``bf16``), read from the feature flags of ``cpuinfo_path``. False where the file does not
    exist (not Linux): there bfloat16 autocast is not assumed to be faster than float32."""
    return bool(cpu_info(cpuinfo_path).flags & set(_BFLOAT16_FLAGS))


def check_device_available(device: str, key: str) -> None:
    """Raise :class:`~retina_focal.config.loading.ConfigError` naming ``key`` when ``device``
    cannot be used here: a CUDA device on a machine without one (Detectron2's configs default
    to "cuda"; torch would say "Found no NVIDIA driver" deep inside), or a device name torch
    does not know."""
    from retina_focal.config.loading import ConfigError

    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"{key}={device!r} is not a device torch knows ({str(e).splitlines()[0]})"
                          "; use cpu, or cuda on a machine with an NVIDIA GPU") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}={device!r}, but this machine has no CUDA device: set {key} cpu"
                          + (" (as the synthetic configs do)" if key != "--device" else ""))


def check_cpu_bfloat16(mode: object) -> None:
    """Raise :class:`~retina_focal.config.InvalidArgument` (key ``cpu_bfloat16``) unless
    ``mode`` is one of :data:`CPU_BFLOAT16_MODES`."""
    check_choice(mode, CPU_BFLOAT16_MODES, key="cpu_bfloat16",
                 note=f"with mixed precision on a CPU, 'native' trains in bfloat16 only where "
                      f"the CPU has bfloat16 instructions ({', '.join(_BFLOAT16_FLAGS)}; this "
                      f"one is {platform.machine()}), 'always' everywhere")


def use_cpu_bfloat16(mode: str) -> bool:
    """Whether mixed precision on this CPU runs in bfloat16 for ``mode`` in
    :data:`CPU_BFLOAT16_MODES` ("native": only with :func:`cpu_has_native_bfloat16`)."""
    check_cpu_bfloat16(mode)
    return mode == "always" or cpu_has_native_bfloat16()
