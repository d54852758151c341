"""Checkpointing that survives kills and reports bad weight files clearly.

:class:`RetinaFocalCheckpointer` is Detectron2's :class:`DetectionCheckpointer` with:

* **atomic writes**: a checkpoint is written to a temporary file in the same directory,
  flushed to disk and renamed over the final name; ``last_checkpoint`` is replaced the same
  way and only after the checkpoint is complete. A process killed at any moment leaves either
  the previous ``last_checkpoint`` or the new one, each naming a complete file;
* **clear load errors** (``MODEL.WEIGHTS`` or ``--resume``):

  - a missing file: :class:`CheckpointNotFound` (a ``FileNotFoundError``) naming it;
  - a truncated or corrupt file: :class:`CheckpointReadError` (a ``RuntimeError``) naming it
    and what the reader said;
  - a checkpoint of another architecture: if not a single tensor of the model can be loaded
    from it, :class:`CheckpointMismatch` (a ``ValueError``) listing what is missing,
    unexpected and of the wrong shape. A partial match stays a warning (with the same
    listing), because initialising from a backbone-only or another detector's checkpoint is
    normal;
  - resuming (``--resume`` with a ``last_checkpoint``), and loading for inference
    (``for_inference=True``: evaluation, the demo, export, analysis): the file must match the
    model exactly (every parameter and persistent buffer loaded from it, nothing left over),
    else :class:`CheckpointMismatch` naming the file, with the listing and the likely cause
    (e.g. another class count: ``MODEL.RETINANET.NUM_CLASSES``). A tensor left at its random
    initialisation would give wrong detections without any error. Only
    ``pixel_mean``/``pixel_std`` (set from the config) and BatchNorm's
    ``num_batches_tracked`` (unused in eval mode) may be absent;
* **the class map travels with the model**: ``class_map`` (see
  :mod:`retina_focal.data.class_map`), when set, is written into every checkpoint as the
  ``class_map`` entry; :meth:`RetinaFocalCheckpointer.load` returns it with the file's other
  extra entries (checked to be a class map).

:class:`ModelAttributeState` checkpoints plain Python attributes of a model that are not in
its ``state_dict``, such as RetinaNet's EMA ``loss_normalizer``; keeping them out of the
state_dict keeps the parameters identical to Detectron2's ``RetinaNet``.
"""
import logging
import os
from collections import OrderedDict
from typing import (
    Any,
    Dict,
    Iterable,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Protocol,
    Sequence,
    Tuple,
)

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import hooks
from fvcore.common.checkpoint import _IncompatibleKeys
from torch import nn

from retina_focal.data.class_map import ClassMap, validate_class_map
from retina_focal.modeling.training_state import HasTrainingState
from retina_focal.utils.errors import UserError
from retina_focal.utils.file_io import atomic_write_bytes, is_local_path

__all__ = [
    "CLASS_MAP_KEY",
    "CheckpointMismatch",
    "CheckpointNotFound",
    "CheckpointReadError",
    "AllRanksPeriodicCheckpointer",
    "ModelAttributeState",
    "ProcessRngState",
    "RetinaFocalCheckpointer",
    "describe_mismatch",
    "unreadable_checkpoint_message",
    "likely_mismatch_cause",
    "is_exported_path",
    "ResumePoint",
    "read_resume_point",
]

# the checkpoint entry holding the class map of the data the model was trained on
CLASS_MAP_KEY = "class_map"

logger = logging.getLogger(__name__)


class CheckpointReadError(UserError, RuntimeError):
    """A checkpoint file that cannot be read (truncated, corrupt, not a checkpoint)."""


class CheckpointNotFound(UserError, FileNotFoundError):
    """A checkpoint file (MODEL.WEIGHTS, or the one last_checkpoint names) that does not exist."""


class CheckpointMismatch(UserError, ValueError):
    """A checkpoint that does not fit the model (another architecture or class count)."""


# exported models: what each file type is, and where it can be used instead
_EXPORTED_KINDS = {".onnx": "an ONNX model", ".pt2": "an exported program (torch.export)",
                   ".ts": "a TorchScript model"}


def is_exported_path(path: str) -> bool:
    """Whether ``path`` names an exported model by its extension (.onnx, .pt2, .ts): read by
    its runtime (``retina_focal.export.runtime``), not by the checkpointer."""
    return os.path.splitext(path)[1].lower() in _EXPORTED_KINDS


def unreadable_checkpoint_message(filename: str, error: BaseException) -> str:
    """Why ``filename`` cannot be loaded as a checkpoint, and what to do, in one message:
    an exported model (by its extension) or a text file are named as such; otherwise the
    file is truncated or corrupt. Only the first line of the reader's message is kept (torch's
    advice on ``weights_only`` does not apply to a file that is no checkpoint)."""
    size = os.path.getsize(filename) if os.path.isfile(filename) else "?"
    kind = _EXPORTED_KINDS.get(os.path.splitext(filename)[1].lower())
    if kind is not None and filename.lower().endswith(".ts"):
        return (f"MODEL.WEIGHTS {filename!r} is {kind} (written by retina-focal export), not a "
                "checkpoint: run it with torch.jit.load; the commands take the .pth it was "
                "exported from, or an .onnx / .pt2 export (retina-focal export --format onnx)")
    if kind is not None:
        return (f"MODEL.WEIGHTS {filename!r} is {kind} (written by retina-focal export), not a "
                "checkpoint: it cannot initialise training or be loaded by train --eval-only. "
                f"Evaluate it with `retina-focal eval --config-file CFG MODEL.WEIGHTS {filename}` "
                "or run it with `retina-focal demo`; to train, give the .pth it was exported "
                "from")
    head = b""
    if os.path.isfile(filename):
        with open(filename, "rb") as f:
            head = f.read(4096)
    if head and b"\0" not in head:
        try:
            head.decode("utf-8")
            return (f"MODEL.WEIGHTS {filename!r} ({size} bytes) is a text file, not a checkpoint "
                    "(a .pth or .pkl file of weights): give the model_final.pth of a training "
                    "run")
        except UnicodeDecodeError:
            pass
    # the reader's first sentence: torch's advice that follows (weights_only=False) is about
    # trusted pickles, not about a file that is damaged
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    said = f"{type(error).__name__}: {first.split('. ')[0]}"
    return (f"Cannot read checkpoint {filename!r} ({size} bytes): the file is truncated or "
            f"corrupt, or not a checkpoint. The reader said: {said}")


def _group(keys: Iterable[str], limit: int = 12) -> str:
    """A short, readable listing of state_dict keys: each of them when there are few, else
    grouped by their first two components."""
    keys = list(keys)
    if len(keys) <= 8:
        return ", ".join(keys)
    groups: "OrderedDict[str, int]" = OrderedDict()
    for k in keys:
        prefix = ".".join(k.split(".")[:2])
        groups[prefix] = groups.get(prefix, 0) + 1
    items = [f"{p}.* ({n})" if n > 1 else p for p, n in groups.items()]
    extra = f", ... and {len(items) - limit} more groups" if len(items) > limit else ""
    return ", ".join(items[:limit]) + extra


# a tensor of another shape in a checkpoint than in the model: (key, checkpoint's shape,
# model's shape), as fvcore's load lists it (``incorrect_shapes``)
ShapeMismatch = Tuple[str, Sequence[int], Sequence[int]]


def describe_mismatch(missing: List[str], unexpected: List[str],
                      shapes: List[ShapeMismatch]) -> str:
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


def _out_channels(shape: Sequence[int]) -> int:
    return int(tuple(shape)[0]) if len(tuple(shape)) else 0


def likely_mismatch_cause(missing: List[str], unexpected: List[str], shapes: List[ShapeMismatch],
                          model_state: Dict[str, Any],
                          num_classes_key: str = "MODEL.RETINANET.NUM_CLASSES") -> str:
    """The probable reason of a state_dict mismatch, in words ("" when none is recognised).

    A RetinaNet classifier ``*.cls_score`` has ``A x K`` output channels (A anchors per
    location, K classes) and its box regressor ``*.bbox_pred`` ``A x 4``; from the two the
    checkpoint's class count is told apart from the config's.
    """
    causes = []
    shape_of = {k: (tuple(a), tuple(b)) for k, a, b in shapes}
    cls_keys = [k for k in shape_of if k.endswith("cls_score.weight")]
    for key in cls_keys:
        ckpt, model = (_out_channels(s) for s in shape_of[key])
        box = model_state.get(key.replace("cls_score", "bbox_pred"))
        anchors = _out_channels(box.shape) // 4 if box is not None else 0
        name = key[: -len(".weight")]
        if anchors and ckpt % anchors == 0 and model % anchors == 0:
            k_ckpt, k_model = ckpt // anchors, model // anchors
            causes.append(
                f"{name}: the checkpoint has {k_ckpt} classes ({ckpt} = {anchors} anchors x "
                f"{k_ckpt}), the config {k_model} ({model} = {anchors} x {k_model}): set "
                f"{num_classes_key} {k_ckpt} to use this checkpoint (it was trained on "
                f"{k_ckpt} classes), or give the checkpoint of a model trained on the "
                f"config's {k_model} classes"
            )
        else:
            causes.append(f"{name}: {ckpt} output channels in the checkpoint, {model} in the "
                          f"model: another class count ({num_classes_key}) or anchor count")
    if any(k.endswith("bbox_pred.weight") for k in shape_of):
        causes.append("bbox_pred: another number of anchors per location "
                      "(MODEL.ANCHOR_GENERATOR.SIZES / ASPECT_RATIOS) than the checkpoint's")
    if missing and all(not k.startswith("backbone.") for k in unexpected) and \
            any(k.startswith("head.") for k in missing) and \
            not any(k.startswith("head.") for k in model_state if k not in missing):
        causes.append("the checkpoint has no detection head (head.*): it looks like backbone "
                      "(pre-training) weights, not a trained detector such as "
                      "OUTPUT_DIR/model_final.pth")
    if not causes and (missing or unexpected or shapes):
        causes.append("the checkpoint was written for another config (backbone depth, "
                      "MODEL.RETINANET.NUM_CONVS / NORM, ...): use the config it was trained "
                      "with")
    return "; ".join(causes)


class ProcessRngState:
    """Checkpointable holding the random generators (Python's ``random``, NumPy's, torch's CPU
    one and CUDA's where initialised) of every training process: the draws a model makes while
    training (Faster R-CNN's RoI sampling, the RPN's anchor sampling with ``SAMPLING
    "detectron2"``) continue on resume as if the run had not stopped. The data stream has its
    own seed (``train_data_stream``).

    Only the main process writes a checkpoint. In a run of one process its generators are
    saved as they are. In a run of several, every process hands its generators over in
    :meth:`gather` (a collective call, made by :class:`AllRanksPeriodicCheckpointer` on every
    process right before each save) and the checkpoint holds them all, by rank; on resume each
    process takes back its own. A checkpoint is restored only into a run of as many processes
    as wrote it; a multi-process checkpoint saved without :meth:`gather` (a ``save`` called on
    the main process alone) holds no generators, and the processes keep the ones Detectron2
    seeded."""

    def __init__(self) -> None:
        self._gathered: Optional[List[Dict[str, Any]]] = None

    @staticmethod
    def local_state() -> Dict[str, Any]:
        """This process's generators."""
        import random

        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state = {"python": random.getstate(),
                 "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                           "pos": int(pos), "has_gauss": int(has_gauss),
                           "cached_gaussian": float(cached)},
                 "torch": torch.get_rng_state()}
        if (torch.cuda.is_available()
                and torch.cuda.is_initialized()):  # type: ignore[no-untyped-call]  # unannotated
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    @staticmethod
    def restore_local(state: Dict[str, Any]) -> None:
        """Set this process's generators to ``state`` (a :meth:`local_state`)."""
        import random

        import numpy as np

        random.setstate(state["python"])
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                             n["has_gauss"], n["cached_gaussian"]))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def gather(self) -> None:
        """Collect every process's generators for the next :meth:`state_dict` (call it on
        every process at once; nothing to do in a run of one process)."""
        from detectron2.utils import comm

        if comm.get_world_size() > 1:
            self._gathered = comm.all_gather(self.local_state())

    def state_dict(self) -> Dict[str, Any]:
        """One process: ``{"world_size": 1, **local_state()}``; several: ``{"world_size": N,
        "ranks": [local_state() of rank 0 .. N-1]}`` as of the last :meth:`gather` (``None``
        without one, or when this process's torch generator has drawn since)."""
        from detectron2.utils import comm

        world_size = comm.get_world_size()
        if world_size == 1:
            return {"world_size": 1, **self.local_state()}
        ranks = self._gathered
        # the gathered generators are saved until this (saving) process draws again: then
        # they are stale, and none are saved
        if ranks is not None and not torch.equal(ranks[comm.get_rank()]["torch"],
                                                 torch.get_rng_state()):
            ranks = self._gathered = None
        return {"world_size": world_size, "ranks": ranks}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        from detectron2.utils import comm

        world_size = comm.get_world_size()
        if not state or state.get("world_size") != world_size:
            if state:
                logger.info(f"The checkpoint's random generators are of a run of "
                            f"{state.get('world_size')} process(es), this run has {world_size}: "
                            "they are not restored")
            return
        if world_size == 1:
            self.restore_local(state)
        elif state.get("ranks"):
            self.restore_local(state["ranks"][comm.get_rank()])


# Detectron2 has no type information: its classes are Any to mypy
class AllRanksPeriodicCheckpointer(hooks.PeriodicCheckpointer):  # type: ignore[misc]
    """Detectron2's ``PeriodicCheckpointer`` hook, registered on every process (Detectron2
    registers it on the main process only): before each periodic save every process hands its
    random generators to ``checkpointer``'s :class:`ProcessRngState`
    (:meth:`ProcessRngState.gather`),
    so a resumed multi-process run draws what the uninterrupted run would. Only the main
    process writes (and deletes old checkpoints: ``max_to_keep`` applies there only)."""

    def __init__(self, checkpointer: "RetinaFocalCheckpointer", period: int,
                 max_iter: Optional[int] = None, max_to_keep: Optional[int] = None,
                 file_prefix: str = "model") -> None:
        from detectron2.utils import comm

        super().__init__(checkpointer, period, max_iter=max_iter,
                         max_to_keep=max_to_keep if comm.is_main_process() else None,
                         file_prefix=file_prefix)
        self._rng = [obj for obj in checkpointer.checkpointables.values()
                     if isinstance(obj, ProcessRngState)]

    def step(self, iteration: int, **kwargs: Any) -> None:
        # the iterations at which fvcore's PeriodicCheckpointer.step saves
        if (int(iteration) + 1) % self.period == 0 or (
                self.max_iter is not None and int(iteration) >= self.max_iter - 1):
            for rng in self._rng:
                rng.gather()  # collective: every process runs this hook at this iteration
        super().step(iteration, **kwargs)


class ModelAttributeState:
    """Checkpointable holding the plain (non-tensor) training state of a model: the
    ``training_state_attributes`` of every submodule that is a
    :class:`~retina_focal.modeling.training_state.HasTrainingState` (the model itself:
    ``loss_normalizer``; a submodule: ``proposal_generator.loss_normalizer``). An attribute
    not set yet is saved as ``None`` and left alone on load, as is one a checkpoint lacks."""

    def __init__(self, model: nn.Module):
        self._model = model

    def _attributes(self) -> Iterator[Tuple[str, HasTrainingState, str]]:
        """(checkpoint key, module, attribute name) of every piece of training state."""
        for name, module in self._model.named_modules():
            if isinstance(module, HasTrainingState):
                for attr in module.training_state_attributes:
                    yield (f"{name}.{attr}" if name else attr), module, attr

    def state_dict(self) -> Dict[str, Any]:
        return {key: vars(module).get(attr) for key, module, attr in self._attributes()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        for key, module, attr in self._attributes():
            if state.get(key) is not None:
                setattr(module, attr, state[key])


class Checkpointable(Protocol):
    """What a checkpointer saves besides the model (an optimizer, a scheduler, a trainer,
    :class:`ProcessRngState`, ...): an object with torch's ``state_dict`` pair."""

    def state_dict(self) -> Dict[str, Any]: ...

    def load_state_dict(self, state: Dict[str, Any], /) -> object: ...


# Detectron2 has no type information: its classes are Any to mypy
class RetinaFocalCheckpointer(DetectionCheckpointer):  # type: ignore[misc]
    """:class:`DetectionCheckpointer` with atomic saves, clear load errors and the class map
    (module doc).

    Args:
        model, save_dir, save_to_disk, checkpointables: as :class:`DetectionCheckpointer`.
        for_inference: every load must fit the model exactly (evaluation, demo, export);
            ``False`` (training initialisation) loads what fits and warns about the rest.
        class_map: the classes the model is trained on (:mod:`retina_focal.data.class_map`),
            written into every checkpoint saved; settable later as ``.class_map``.
        num_classes_key: the config key of the class count, named in the advice of a
            mismatch (``model.num_classes`` for a LazyConfig).
    """

    def __init__(self, model: nn.Module, save_dir: str = "", *,
                 save_to_disk: Optional[bool] = None, for_inference: bool = False,
                 class_map: Optional[ClassMap] = None,
                 num_classes_key: str = "MODEL.RETINANET.NUM_CLASSES",
                 **checkpointables: Checkpointable) -> None:
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.for_inference = for_inference
        self.class_map = class_map
        self.num_classes_key = num_classes_key
        self._resuming = False  # set while resuming: the file must match the model exactly
        self._path = ""

    # ---- saving ----------------------------------------------------------------------------
    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        if not is_local_path(self.save_dir):
            if self.class_map is not None:
                kwargs.setdefault(CLASS_MAP_KEY, [dict(c) for c in self.class_map])
            super().save(name, **kwargs)
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        if self.class_map is not None:
            data[CLASS_MAP_KEY] = [dict(c) for c in self.class_map]
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_write_bytes(save_file, lambda f: torch.save(data, f), durable=True)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not is_local_path(self.save_dir):
            super().tag_last_checkpoint(last_filename_basename)
            return
        atomic_write_bytes(os.path.join(self.save_dir, "last_checkpoint"),
                           last_filename_basename.encode(), durable=True)

    # ---- loading ---------------------------------------------------------------------------
    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        self._resuming = bool(resume and self.has_checkpoint())
        try:
            extra: Dict[str, Any] = super().resume_or_load(path, resume=resume)
            return extra
        finally:
            self._resuming = False

    def load(self, path: str, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        """Detectron2's ``load`` (weights, then the checkpointables asked for); returns the
        file's other entries, ``class_map`` (checked) among them when it has one."""
        if path and is_local_path(path) and not os.path.isfile(path):
            what = "the last checkpoint named in last_checkpoint" if self._resuming else \
                "the checkpoint (MODEL.WEIGHTS)"
            raise CheckpointNotFound(f"Cannot load {what}: file {path!r} does not exist")
        self._path = path
        extra: Dict[str, Any] = super().load(path, *args, **kwargs)
        if extra.get(CLASS_MAP_KEY) is not None:
            extra[CLASS_MAP_KEY] = validate_class_map(extra[CLASS_MAP_KEY], f"checkpoint {path!r}")
        return extra

    def read_file(self, path: str) -> Dict[str, Any]:
        """The content of the checkpoint file ``path`` as :meth:`load` reads it (``.pth``,
        Detectron2's ``.pkl``), without loading anything into the model: for checks made
        before a run writes anything. An unreadable file is a :class:`CheckpointReadError`."""
        from urllib.parse import urlparse

        # official Detectron2 reads a file only inside load(), which parses its URL first
        inside_load = hasattr(self, "_parsed_url_during_load")
        if inside_load:
            self._parsed_url_during_load = urlparse(path)
        try:
            return self._load_file(path)
        finally:
            if inside_load:
                self._parsed_url_during_load = None  # type: ignore[assignment]

    def _load_file(self, filename: str) -> Dict[str, Any]:
        try:
            data: Dict[str, Any] = super()._load_file(filename)
            return data
        except FileNotFoundError:
            raise
        except Exception as e:
            raise CheckpointReadError(unreadable_checkpoint_message(filename, e)) from e

    def _load_model(self, checkpoint: Any) -> _IncompatibleKeys:
        if not isinstance(checkpoint.get("model"), dict):
            raise CheckpointMismatch(
                f"The checkpoint holds no state_dict under 'model' (found "
                f"{type(checkpoint.get('model')).__name__}); keys: {sorted(checkpoint)[:10]}"
            )
        incompatible = super()._load_model(checkpoint)
        # BatchNorm's counter is filled in silently when absent: it does not count as loaded
        model_keys = {k for k in self.model.state_dict() if not k.endswith("num_batches_tracked")}
        # (BatchNorm's counter is unused in eval mode: not a tensor that matters either)
        shapes = list(incompatible.incorrect_shapes)
        reshaped = {k for k, _, _ in shapes}  # listed once, as a shape mismatch
        missing = [k for k in incompatible.missing_keys
                   if not k.endswith("num_batches_tracked") and k not in reshaped]
        unexpected = list(incompatible.unexpected_keys)
        not_loaded = set(missing) | {k for k, _, _ in shapes} | {"pixel_mean", "pixel_std"}
        num_loaded = len(model_keys - not_loaded)
        if not (missing or unexpected or shapes):
            return incompatible
        listing = describe_mismatch(missing, unexpected, shapes)
        if num_loaded == 0:
            raise CheckpointMismatch(
                f"The checkpoint {self._path!r} does not fit this model: none of the model's "
                f"{len(model_keys)} tensors could be loaded from it (is it a checkpoint of "
                f"another architecture?)\n{listing}"
            )
        if self._resuming or self.for_inference:
            cause = likely_mismatch_cause(missing, unexpected, shapes, self.model.state_dict(),
                                          self.num_classes_key)
            what = ("Cannot resume: the last checkpoint" if self._resuming else
                    "Cannot run inference: the checkpoint")
            raise CheckpointMismatch(
                f"{what} {self._path!r} does not match the model exactly ({num_loaded} of its "
                f"{len(model_keys)} tensors fit; the others would keep their random "
                f"initialisation and give wrong detections).\nLikely cause: {cause}\n{listing}"
            )
        self.logger.warning(
            f"Loaded {num_loaded} of the model's {len(model_keys)} tensors from the "
            f"checkpoint; the others keep their initialisation.\n{listing}"
        )
        return incompatible


class ResumePoint(NamedTuple):
    """What a resumed run in an output directory would load (:func:`read_resume_point`)."""

    path: str  # the checkpoint last_checkpoint names ("" when there is none)
    class_map: Optional[ClassMap]  # its classes; None when it records none
    iteration: Optional[int]  # the last finished iteration it holds


def read_resume_point(output_dir: str) -> ResumePoint:
    """The checkpoint a resumed run in ``output_dir`` would load (the one ``last_checkpoint``
    names), its class map and iteration; an empty point when there is none (or the file named
    is missing: resuming says so). An unreadable file is a :class:`CheckpointReadError`."""
    checkpointer = RetinaFocalCheckpointer(nn.Module(), save_dir=output_dir)
    if not checkpointer.has_checkpoint():
        return ResumePoint("", None, None)
    path = checkpointer.get_checkpoint_file()
    if not os.path.isfile(path):
        return ResumePoint(path, None, None)
    data = checkpointer.read_file(path)
    saved = data.get(CLASS_MAP_KEY)
    class_map = None if saved is None else validate_class_map(saved, f"checkpoint {path!r}")
    iteration = data.get("iteration")
    return ResumePoint(path, class_map, iteration if isinstance(iteration, int) else None)
