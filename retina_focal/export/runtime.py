"""Running an exported model: ONNX with onnxruntime, or a torch.export program, behind the
eager model's interface (``model([{"image", "height", "width"}]) -> [{"instances"}]``), so
evaluation (``retina-focal eval``), the demo and the :class:`~retina_focal.export.predictor.
Predictor` take ``MODEL.WEIGHTS model.onnx`` / ``model.pt2`` as they take a checkpoint.

Who does what (the same split for both formats; ``docs/export.md``):

* resizing to the test size (``INPUT.MIN_SIZE_TEST``/``MAX_SIZE_TEST``): the caller, as for the
  eager model (Detectron2's test data loader, or the predictor's ``ResizeShortestEdge``);
* normalisation (``PIXEL_MEAN``/``PIXEL_STD``) and padding to the size divisibility: inside the
  ONNX graph; for the exported program, the runtime, with the eager ``preprocess_image``
  (:mod:`retina_focal.export.exported_program` says why);
* backbone and head: the exported graph;
* scoring, per-level top-k, box decoding, NMS and the detection cap: inside a whole-detector
  ONNX graph (``--graph detector``, :mod:`retina_focal.export.detector_graph`; a config's
  higher score threshold or lower cap is applied here, exactly); for a head graph and the
  exported program, the eager model's own ``forward_inference``, run here on the graph's
  outputs, so the detections are the eager model's;
* the resize to the original image: Detectron2's ``detector_postprocess``, here.

The eager model is built from the config for this (:func:`load_exported`); its weights are not
read. The config keys the graph and the post-processing depend on are stored in the file at
export and checked against the config at load (:func:`check_export_config`).

Images run one at a time (batch 1), as evaluation and the predictor run the eager model.
"""
import json
import logging
import os
from typing import Any, Callable, Dict, List, Optional

import detectron2.utils.comm as comm
import torch
from detectron2.modeling.meta_arch.retinanet import RetinaNet
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from torch import Tensor, nn

from retina_focal.config.loading import ConfigError
from retina_focal.engine.defaults import (
    LoadedModel,
    build_model,
    evaluate_checkpoint,
    evaluate_loaded,
)
from retina_focal.engine.output_dir import (
    release_output_dir,
    rollback_output_dir,
    start_output_dir,
)
from retina_focal.evaluation import REPORT_FILE
from retina_focal.export.detector_graph import INPUT_DTYPES
from retina_focal.export.exported_program import CLASS_MAP_FILE, INFO_FILE, test_size_too_small
from retina_focal.export.graph import split_outputs
from retina_focal.utils.environment import require_packages
from retina_focal.utils.errors import UserError

__all__ = [
    "EXPORTED_FORMATS",
    "ExportedModel",
    "ExportedModelError",
    "ORT_OPT_LEVELS",
    "check_export_config",
    "evaluate_exported",
    "evaluate_weights",
    "export_config",
    "is_exported_model",
    "load_exported",
    "onnx_backend",
    "program_backend",
]

logger = logging.getLogger(__name__)
# the logger of retina-focal eval's report paths (its name, as the command has always logged)
_eval_logger = logging.getLogger("retina_focal")

# file extension -> format name
EXPORTED_FORMATS = {".onnx": "onnx", ".pt2": "exported-program"}
# onnxruntime's graph optimisation levels by name
ORT_OPT_LEVELS = ("disable", "basic", "extended", "all")
# the config keys the post-processing (outside the graph) and the preprocessing depend on:
# the file's values must equal the config's (the test-time thresholds may differ: they are
# applied here, not frozen in the file)
EXPORT_CONFIG_KEYS = (
    "MODEL.META_ARCHITECTURE",
    "MODEL.RETINANET.NUM_CLASSES",
    "MODEL.RETINANET.IN_FEATURES",
    "MODEL.RETINANET.BBOX_REG_WEIGHTS",
    "MODEL.ANCHOR_GENERATOR.SIZES",
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS",
    "MODEL.ANCHOR_GENERATOR.OFFSET",
    "MODEL.PIXEL_MEAN",
    "MODEL.PIXEL_STD",
    "MODEL.RETINA_FOCAL.LOSS_NAME",
    "INPUT.FORMAT",
)
# ... and those the whole-detector graph holds as constants (``--graph detector``)
DETECTOR_CONFIG_KEYS = (
    "MODEL.RETINANET.SCORE_THRESH_TEST",
    "MODEL.RETINANET.TOPK_CANDIDATES_TEST",
    "MODEL.RETINANET.NMS_THRESH_TEST",
    "TEST.DETECTIONS_PER_IMAGE",
)


class ExportedModelError(UserError, ValueError):
    """An exported model file that cannot be used: unreadable, not written by
    ``retina-focal export``, or exported from another configuration. Names the file; for a
    configuration that differs, ``key``, ``stored`` (the file's value) and ``value`` (the
    config's) say where."""

    def __init__(self, message: str, key: Optional[str] = None, stored=None, value=None):
        super().__init__(message)
        self.key, self.stored, self.value = key, stored, value


def is_exported_model(path: str) -> bool:
    """Whether ``path`` names an exported model (``.onnx`` or ``.pt2``) rather than a
    checkpoint."""
    return os.path.splitext(str(path))[1].lower() in EXPORTED_FORMATS


def _cfg_value(cfg, key: str):
    node = cfg
    for part in key.split("."):
        if part not in node:
            return None  # e.g. MODEL.RETINA_FOCAL in a Detectron2 RetinaNet's config
        node = node[part]
    return json.loads(json.dumps(node))  # tuples as lists, as stored


def export_config(cfg, graph: str = "head") -> Dict:
    """``{key: value}`` of :data:`EXPORT_CONFIG_KEYS` in ``cfg`` (JSON types), and of
    :data:`DETECTOR_CONFIG_KEYS` for a whole-detector ``graph``, stored in the exported
    file."""
    keys = EXPORT_CONFIG_KEYS + (DETECTOR_CONFIG_KEYS if graph == "detector" else ())
    return {key: _cfg_value(cfg, key) for key in keys}


# whole-detector keys a config may tighten: a higher score threshold or fewer detections per
# image select exactly the graph's detections that pass them (every candidate above the higher
# threshold, its suppressors and the best N are among the graph's), so the runtime applies them
TIGHTENING = {"MODEL.RETINANET.SCORE_THRESH_TEST": 1, "TEST.DETECTIONS_PER_IMAGE": -1}


def check_export_config(stored: Dict, cfg, path: str) -> None:
    """ExportedModelError naming the file, the key and both values where ``cfg`` differs
    from the configuration the file was exported with (where a whole-detector graph's
    :data:`TIGHTENING` key only tightens, the runtime applies it)."""
    for key, value in stored.items():
        now = _cfg_value(cfg, key)
        if now == value:
            continue
        if key in TIGHTENING and now is not None and value is not None \
                and (now - value) * TIGHTENING[key] > 0:
            continue
        frozen = ""
        if key in DETECTOR_CONFIG_KEYS:
            frozen = (" (the whole-detector graph holds the test-time keys; a config may only "
                      "raise SCORE_THRESH_TEST or lower DETECTIONS_PER_IMAGE: export again with "
                      "the new value, or export --graph head to keep them config keys)")
        raise ExportedModelError(
            f"The exported model {path!r} was exported with {key}={value!r} but the config "
            f"has {key}={now!r}: use it with the config it was exported from{frozen}",
            key=key, stored=value, value=now)


def _read_info(text: Optional[str], path: str) -> Dict:
    if not text:
        raise ExportedModelError(
            f"{path!r} has no retina_focal export info: it was not written by `retina-focal "
            f"export` (export the checkpoint with `retina-focal export --format onnx` or "
            f"`--format exported-program`)")
    return json.loads(text)


class _Backend:
    """A loaded exported graph: ``__call__(image) -> list of tensors`` (2L for a head graph,
    boxes / scores / classes for a whole-detector graph, ``graph``); ``raw_input``: whether it
    takes the raw (3, H, W) image (ONNX) or the preprocessed (1, 3, H, W) batch (exported
    program)."""

    def __init__(self, fn: Callable[[Tensor], List[Tensor]], raw_input: bool, info: Dict,
                 class_map: Optional[list], path: str, min_side: int = 0,
                 providers: Optional[List[str]] = None):
        self.fn, self.raw_input, self.info = fn, raw_input, info
        self.class_map, self.path, self.min_side = class_map, path, min_side
        self.providers = providers or []  # onnxruntime's execution providers
        self.graph = info.get("graph", "head")  # files from before the detector graph: head

    def __call__(self, image: Tensor) -> List[Tensor]:
        return self.fn(image)


def onnx_backend(path: str, threads: int = 0, opt_level: str = "all",
                 providers: Optional[List[str]] = None, spinning: bool = True) -> _Backend:
    """An onnxruntime session of ``path`` (CUDAExecutionProvider where onnxruntime has it,
    then CPUExecutionProvider, unless ``providers``).

    Args:
        threads: onnxruntime's intra-op threads (0: its default, one per core).
        opt_level: graph optimisation level, one of :data:`ORT_OPT_LEVELS`.
        spinning: onnxruntime's worker threads spin, waiting for work, after a run (its
            default: lower latency). ``False`` when something else runs in between on the same
            cores (a benchmark alternating with eager models): the spinning threads would
            take their cores and be counted in their CPU time.
    """
    require_packages(f"running the ONNX file {path}", ("onnxruntime",))
    import onnxruntime as ort

    if opt_level not in ORT_OPT_LEVELS:
        raise ValueError(f"opt_level={opt_level!r} is invalid: use one of {ORT_OPT_LEVELS}")
    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[opt_level]
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    available = ort.get_available_providers()
    if providers is None:
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in available]
    try:
        session = ort.InferenceSession(path, options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types
        raise ExportedModelError(f"cannot read the ONNX model {path!r}: "
                                 f"{type(e).__name__}: {e}") from e
    meta = session.get_modelmeta().custom_metadata_map
    info = _read_info(meta.get("retina_focal"), path)
    input_name = session.get_inputs()[0].name
    dtype = INPUT_DTYPES[info.get("input_dtype", "float32")]

    def run(image: Tensor) -> List[Tensor]:
        outs = session.run(None, {input_name: image.detach().cpu().to(dtype).numpy()})
        return [torch.from_numpy(o) for o in outs]

    return _Backend(run, True, info, json.loads(meta.get("class_map", "null")), path,
                    providers=session.get_providers())


def program_backend(path: str) -> _Backend:
    """The module of a ``torch.export.save`` file (``torch.export.load(path).module()``)."""
    extra = {CLASS_MAP_FILE: "", INFO_FILE: ""}
    try:
        module = torch.export.load(path, extra_files=extra).module()
    except Exception as e:  # a zip / pickle / version error of torch.export's own kind
        raise ExportedModelError(f"cannot read the exported program {path!r}: "
                                 f"{type(e).__name__}: {e}") from e
    info = _read_info(extra[INFO_FILE], path)

    def run(image: Tensor) -> List[Tensor]:
        with torch.no_grad():
            return list(module(image))

    return _Backend(run, False, info, json.loads(extra[CLASS_MAP_FILE] or "null"), path,
                    min_side=info["min_side"])


class ExportedModel(nn.Module):
    """An exported graph (``backend``) with what it leaves out around it: called like the
    eager model in eval mode (``[{"image": (3, H, W), "height", "width"}] -> [{"instances":
    Instances}]``).

    Args:
        model: the eager model (Detectron2 ``RetinaNet`` or ``RetinaFocal``) of the config the
            graph was exported from, for its test-time thresholds and, with a head graph or an
            exported program, ``preprocess_image`` and ``forward_inference`` (anchors,
            scoring, top-k, decoding, NMS); its weights are not used.
        backend: :func:`onnx_backend` or :func:`program_backend`.
    """

    def __init__(self, model: RetinaNet, backend: _Backend):
        super().__init__()
        self.model = model
        self.backend = backend
        self.eval()

    def forward(self, batched_inputs: List[Dict]) -> List[Dict]:
        if self.training:
            raise RuntimeError("an exported model runs inference only: call .eval()")
        return [self._one(x) for x in batched_inputs]

    def _one(self, x: Dict) -> Dict:
        image = x["image"]
        height = x.get("height", image.shape[-2])
        width = x.get("width", image.shape[-1])
        if self.backend.graph == "detector":  # final detections in the input's pixels
            boxes, scores, classes = self.backend(image)
            # the config's tighter threshold / cap (TIGHTENING): the graph's output is sorted
            keep = torch.nonzero(scores > self.model.test_score_thresh).view(-1)
            keep = keep[: self.model.max_detections_per_image]
            boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
            result = Instances(tuple(image.shape[-2:]), pred_boxes=Boxes(boxes), scores=scores,
                               pred_classes=classes)
            return {"instances": detector_postprocess(result, height, width)}
        image = image.to(torch.float32)
        if self.backend.raw_input:
            images = ImageList(image[None], [tuple(image.shape[-2:])])
            outputs = self.backend(image)
        else:
            images = self.model.preprocess_image([x])
            size = tuple(images.tensor.shape[-2:])
            if min(size) < self.backend.min_side:
                raise ExportedModelError(
                    f"The exported program {self.backend.path!r} takes padded images of at "
                    f"least {self.backend.min_side} pixels a side (every FPN level 2 pixels "
                    f"or more); this one is {size[0]}x{size[1]}: use the ONNX model, or a "
                    f"larger INPUT.MIN_SIZE_TEST")
            outputs = self.backend(images.tensor)
        logits, deltas = split_outputs(outputs)
        with torch.no_grad():
            result = self.model.forward_inference(images, logits, [logits, deltas])[0]
        return {"instances": detector_postprocess(result, height, width)}


def load_exported(cfg, path: Optional[str] = None, *, threads: int = 0,
                  opt_level: str = "all"):
    """The exported model ``path`` (default ``cfg.MODEL.WEIGHTS``) behind the eager model's
    interface, as a :class:`~retina_focal.engine.defaults.LoadedModel` (model, class map,
    file).

    ``threads`` and ``opt_level``: onnxruntime's (see :func:`onnx_backend`). A missing file is
    a FileNotFoundError, an unreadable or foreign one, or one exported with another
    configuration, an :class:`ExportedModelError`; each names the file.
    """
    path = cfg.MODEL.WEIGHTS if path is None else path
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXPORTED_FORMATS:
        raise ExportedModelError(f"{path!r} is not an exported model: its extension must be one "
                                 f"of {sorted(EXPORTED_FORMATS)}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"exported model {path!r} does not exist")
    if EXPORTED_FORMATS[ext] == "onnx":
        backend = onnx_backend(path, threads=threads, opt_level=opt_level)
    else:
        backend = program_backend(path)
    check_export_config(backend.info["config"], cfg, path)
    with torch.random.fork_rng():  # the unused initial weights: leave the global RNG alone
        model = build_model(cfg)
    if not backend.raw_input:
        backbone: Any = model.backbone  # a Detectron2 Backbone (untyped)
        too_small = test_size_too_small(cfg, backend.min_side, backbone.size_divisibility)
        if too_small:
            raise ExportedModelError(f"{path!r}: {too_small}")
    return LoadedModel(ExportedModel(model.to("cpu"), backend), backend.class_map, path)


def evaluate_exported(cfg):
    """Evaluate the exported model ``cfg.MODEL.WEIGHTS`` on every ``DATASETS.TEST``, as
    :func:`~retina_focal.engine.defaults.evaluate_checkpoint` evaluates a checkpoint (same
    evaluator, report and class-map matching); return Detectron2's results."""
    return evaluate_loaded(cfg, load_exported(cfg), "exported model")


def evaluate_weights(cfg):
    """Evaluate ``cfg.MODEL.WEIGHTS`` on every ``DATASETS.TEST``: a checkpoint
    (:func:`~retina_focal.engine.defaults.evaluate_checkpoint`) or an exported model
    (:func:`evaluate_exported`), with their reports in ``OUTPUT_DIR/inference/<dataset>/``
    (logged by the main process). What ``retina-focal eval`` runs in each of its processes,
    once :func:`~retina_focal.engine.defaults.setup_cfg` has taken ``OUTPUT_DIR``.

    A refused run (a :class:`~retina_focal.utils.errors.UserError`, e.g. an empty
    ``MODEL.WEIGHTS``) leaves ``OUTPUT_DIR`` as it was; the directory is released either way.
    Returns Detectron2's results.
    """
    try:
        if not cfg.MODEL.WEIGHTS:
            raise ConfigError("MODEL.WEIGHTS is empty: give the checkpoint to evaluate, e.g. "
                              "`MODEL.WEIGHTS output/model_final.pth` at the end of the command")
        if is_exported_model(cfg.MODEL.WEIGHTS):
            results = evaluate_exported(cfg)
        else:
            results = evaluate_checkpoint(cfg)
        if comm.is_main_process():
            for name in cfg.DATASETS.TEST:
                path = os.path.join(cfg.OUTPUT_DIR, "inference", name, REPORT_FILE)
                if os.path.exists(path):
                    _eval_logger.info(f"{name}: report {path} (PR curves pr_*.png next to it)")
        return results
    except UserError:
        rollback_output_dir(cfg.OUTPUT_DIR)  # refused: nothing changed there
        raise
    finally:
        start_output_dir(cfg.OUTPUT_DIR)
        release_output_dir(cfg.OUTPUT_DIR)
