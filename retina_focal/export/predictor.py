"""One image in, detections out: Detectron2's :class:`DefaultPredictor` on the package's own
model path, for a checkpoint or an exported model (so it lives above both ``engine`` and the
exported-model runtime)."""
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.engine import DefaultPredictor

from retina_focal.engine.defaults import load_model_for_inference
from retina_focal.export.runtime import is_exported_model, load_exported

__all__ = ["Predictor"]


class Predictor(DefaultPredictor):
    """:class:`DefaultPredictor` (BGR ``(H, W, 3)`` image in, ``{"instances": ...}`` out, at the
    config's test size) whose model is built and loaded by :func:`load_model_for_inference`, as
    every command builds it (device speed-ups, clear checkpoint errors) rather than by
    Detectron2's bare ``build_model``. Its ``__call__`` is Detectron2's.

    ``MODEL.WEIGHTS`` may also name an exported model (``.onnx``, run with onnxruntime, or a
    torch.export ``.pt2``): :func:`~retina_focal.export.runtime.load_exported` loads it
    behind the same interface (the config's resize; the eager post-processing)."""

    def __init__(self, cfg):  # DefaultPredictor.__init__ would build a second model
        self.cfg = cfg.clone()
        if is_exported_model(self.cfg.MODEL.WEIGHTS):
            loaded = load_exported(self.cfg)
        else:
            loaded = load_model_for_inference(self.cfg)  # every tensor from the checkpoint
        self.model = loaded.model
        # the checkpoint's classes (retina_focal.data.class_map); None: it records none
        self.class_map = loaded.class_map
        if len(cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        self.aug = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        self.input_format = cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT={self.input_format!r} is invalid for the predictor: "
                             "use one of RGB, BGR")
