"""Checkpointing that survives kills and reports bad weight files clearly.

:class:`RetinaFocalCheckpointer` is Detectron2's :class:`DetectionCheckpointer` with:

* **atomic writes**: a checkpoint is written to a temporary file in the same directory,
  flushed to disk and renamed over the final name; ``last_checkpoint`` is replaced the same
  way and only after the checkpoint is complete. A process killed at any moment leaves either
  the previous ``last_checkpoint`` or the new one, each naming a complete file;
* **clear load errors** (``MODEL.WEIGHTS`` or ``--resume``):

  - a missing file: ``FileNotFoundError`` naming it;
  - a truncated or corrupt file: ``RuntimeError`` naming it and what the reader said;
  - a checkpoint of another architecture: if not a single tensor of the model can be loaded
    from it, ``ValueError`` listing what is missing, unexpected and of the wrong shape. A
    partial match stays a warning (with the same listing), because initialising from a
    backbone-only or another detector's checkpoint is normal;
  - resuming (``--resume`` with a ``last_checkpoint``): the file must match the model
    exactly, else ``ValueError`` with the listing.

:class:`ModelAttributeState` checkpoints plain Python attributes of a model that are not in
its ``state_dict``, such as RetinaNet's EMA ``loss_normalizer``; keeping them out of the
state_dict keeps the parameters identical to Detectron2's ``RetinaNet``.
"""
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, Iterable, List

import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

from retina_focal.utils.file_io import atomic_write_bytes

__all__ = ["ModelAttributeState", "RetinaFocalCheckpointer", "describe_mismatch"]

logger = logging.getLogger(__name__)


def _group(keys: Iterable[str], limit: int = 12) -> str:
    """A short, readable listing of state_dict keys, grouped by their first two components."""
    groups: "OrderedDict[str, int]" = OrderedDict()
    for k in keys:
        prefix = ".".join(k.split(".")[:2])
        groups[prefix] = groups.get(prefix, 0) + 1
    items = [f"{p}.* ({n})" if n > 1 else p for p, n in groups.items()]
    extra = f", ... and {len(items) - limit} more groups" if len(items) > limit else ""
    return ", ".join(items[:limit]) + extra


def describe_mismatch(missing: List[str], unexpected: List[str], shapes: List) -> str:
    """Human-readable summary of a state_dict mismatch."""
    lines = []
    if missing:
        lines.append(f"  in the model but not in the checkpoint ({len(missing)}): "
                     f"{_group(missing)}")
    if unexpected:
        lines.append(f"  in the checkpoint but not in the model ({len(unexpected)}): "
                     f"{_group(unexpected)}")
    if shapes:
        shown = ", ".join(f"{k} {tuple(a)} vs model {tuple(b)}" for k, a, b in shapes[:8])
        more = f", ... and {len(shapes) - 8} more" if len(shapes) > 8 else ""
        lines.append(f"  different shapes ({len(shapes)}): {shown}{more}")
    return "\n".join(lines)


class ModelAttributeState:
    """Checkpointable holding plain (non-tensor) attributes of a model, e.g.
    ``loss_normalizer``; an attribute not set yet is saved as ``None`` and left alone on load."""

    def __init__(self, model: nn.Module, names: Iterable[str]):
        self._model = model
        self._names = list(names)

    def state_dict(self) -> Dict[str, Any]:
        return {n: getattr(self._model, n, None) for n in self._names}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        for n in self._names:
            if state.get(n) is not None:
                setattr(self._model, n, state[n])


def _is_local(path: str) -> bool:
    return "://" not in path


class RetinaFocalCheckpointer(DetectionCheckpointer):
    """:class:`DetectionCheckpointer` with atomic saves and clear load errors (module doc)."""

    _strict = False  # set while resuming: the file must then match the model exactly

    # ---- saving ----------------------------------------------------------------------------
    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        if not _is_local(self.save_dir):
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_write_bytes(save_file, lambda f: torch.save(data, f), durable=True)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not _is_local(self.save_dir):
            return super().tag_last_checkpoint(last_filename_basename)
        atomic_write_bytes(os.path.join(self.save_dir, "last_checkpoint"),
                           last_filename_basename.encode(), durable=True)

    # ---- loading ---------------------------------------------------------------------------
    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        self._strict = bool(resume and self.has_checkpoint())
        try:
            return super().resume_or_load(path, resume=resume)
        finally:
            self._strict = False

    def load(self, path: str, *args, **kwargs) -> Dict[str, Any]:
        if path and _is_local(path) and not os.path.isfile(path):
            what = "the last checkpoint named in last_checkpoint" if self._strict else \
                "the checkpoint (MODEL.WEIGHTS)"
            raise FileNotFoundError(f"Cannot load {what}: file {path!r} does not exist")
        return super().load(path, *args, **kwargs)

    def _load_file(self, filename: str) -> Dict[str, Any]:
        try:
            return super()._load_file(filename)
        except FileNotFoundError:
            raise
        except Exception as e:
            size = os.path.getsize(filename) if os.path.isfile(filename) else "?"
            raise RuntimeError(
                f"Cannot read checkpoint {filename!r} ({size} bytes): the file is truncated or "
                f"corrupt, or not a checkpoint. The reader said: {type(e).__name__}: {e}"
            ) from e

    def _load_model(self, checkpoint: Any):
        if not isinstance(checkpoint.get("model"), dict):
            raise ValueError(
                f"The checkpoint holds no state_dict under 'model' (found "
                f"{type(checkpoint.get('model')).__name__}); keys: {sorted(checkpoint)[:10]}"
            )
        incompatible = super()._load_model(checkpoint)
        # BatchNorm's counter is filled in silently when absent: it does not count as loaded
        model_keys = {k for k in self.model.state_dict() if not k.endswith("num_batches_tracked")}
        missing = list(incompatible.missing_keys)
        unexpected = list(incompatible.unexpected_keys)
        shapes = list(incompatible.incorrect_shapes)
        not_loaded = set(missing) | {k for k, _, _ in shapes} | {"pixel_mean", "pixel_std"}
        num_loaded = len(model_keys - not_loaded)
        if not (missing or unexpected or shapes):
            return incompatible
        listing = describe_mismatch(missing, unexpected, shapes)
        if num_loaded == 0:
            raise ValueError(
                "The checkpoint does not fit this model: none of the model's "
                f"{len(model_keys)} tensors could be loaded from it (is it a checkpoint of "
                f"another architecture?)\n{listing}"
            )
        if self._strict:
            raise ValueError(
                "Cannot resume: the last checkpoint does not match the model exactly (was it "
                f"written with another config?)\n{listing}"
            )
        self.logger.warning(
            f"Loaded {num_loaded} of the model's {len(model_keys)} tensors from the "
            f"checkpoint; the others keep their initialisation.\n{listing}"
        )
        return incompatible
