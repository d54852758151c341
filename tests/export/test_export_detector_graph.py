"""The whole-detector graph (retina_focal.export.detector_graph, `export --format onnx --graph
detector`): image in, final detections out, against the eager model's own inference (RetinaFocal
with sigmoid and softmax scores, Detectron2's RetinaNet) in PyTorch and in onnxruntime, at
several sizes, in float32 and uint8, with no detection at all, and the keys it freezes."""
import json

import pytest
import torch
from conftest import TINY_CONFIG
from detectron2.layers import batched_nms
from detectron2.structures import Boxes, Instances

from retina_focal.engine.defaults import build_cfg, build_model
from retina_focal.export.detector_graph import (
    DetectorGraph,
    check_whole_detector,
    level_anchors,
    multiclass_nms,
)
from retina_focal.export.graph import ExportUnsupported
from retina_focal.export.parity import compare_instances

SIZES = [(128, 128), (100, 150), (224, 96), (20, 30)]  # traced size, not /32, one tiny
THRESH0 = ["MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"]  # every candidate: top-k, NMS, cap busy
MODELS = {
    "sigmoid": [],
    "softmax": ["MODEL.RETINA_FOCAL.LOSS_NAME", "SoftmaxFocalLoss"],
    "detectron2": ["MODEL.META_ARCHITECTURE", "RetinaNet", "MODEL.RETINANET.NORM", ""],
}


def _image(h, w, seed, dtype=torch.uint8):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8).to(dtype)


def _model(kind, extra=()):
    cfg = build_cfg(TINY_CONFIG, THRESH0 + MODELS[kind] + list(extra))
    torch.manual_seed(0)
    return cfg, build_model(cfg).eval()


def _instances(size, boxes, scores, classes):
    return Instances(size, pred_boxes=Boxes(torch.as_tensor(boxes)),
                     scores=torch.as_tensor(scores), pred_classes=torch.as_tensor(classes))


def _eager(model, image):
    with torch.no_grad():
        return model([{"image": image.float()}])[0]["instances"]


@pytest.mark.parametrize("kind", list(MODELS))
def test_graph_in_pytorch_is_the_eager_inference_bit_for_bit(kind):
    """Same candidates, boxes, scores and classes as Detectron2's inference +
    detector_postprocess, in the same order up to detections whose scores are exactly equal:
    the graph restates it with the model's own scoring and decoding."""
    cfg, model = _model(kind)
    graph = DetectorGraph(model).eval()
    for i, size in enumerate(SIZES):
        image = _image(*size, seed=i)
        with torch.no_grad():
            ours = _instances(size, *graph(image.float()))
        eager = _eager(model, image)
        assert len(eager) == 100  # the cap, so top-k and NMS both cut
        diff = compare_instances(eager, ours, atol=0.0, box_rtol=0.0)  # exact ties may swap
        assert diff["same"] and diff["max_box_difference"] == 0.0, (kind, size, diff)


def test_level_anchors_are_the_anchor_generators():
    cfg, model = _model("sigmoid")
    gen = model.anchor_generator
    features = [torch.zeros(1, 1, h, w) for h, w in ((13, 7), (7, 4), (4, 2), (2, 1), (1, 1))]
    expected = gen(features)
    cells = list(gen.cell_anchors)
    for level, feature in enumerate(features):
        ours = level_anchors(cells[level], float(gen.strides[level]), gen.offset, feature)
        assert torch.equal(ours, expected[level].tensor)


def test_multiclass_nms_keeps_what_batched_nms_keeps():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(300, 2, generator=g) * 40], dim=1)
    scores = torch.rand(300, generator=g)
    classes = torch.randint(0, 4, (300,), generator=g)
    keep = multiclass_nms(boxes, scores, classes, 4, 0.5, 1000)
    expected = batched_nms(boxes, scores, classes, 0.5)
    assert sorted(keep.tolist()) == sorted(expected.tolist()) and len(expected) < 300


def test_a_model_with_other_inference_is_refused():
    """A subclass that changes the inference the graph restates would be exported wrong:
    refused, naming the method and the alternative."""
    cfg, model = _model("sigmoid")

    class Other(type(model)):
        def inference_single_image(self, *args):
            return super().inference_single_image(*args)

    model.__class__ = Other
    with pytest.raises(ExportUnsupported, match="overrides inference_single_image.*--graph head"):
        check_whole_detector(model)
    # (RetinaFocal refuses it when built; Detectron2's RetinaNet takes it)
    cfg, model = _model("detectron2", ["MODEL.RETINANET.SCORE_THRESH_TEST", "-0.1"])
    with pytest.raises(ExportUnsupported, match="SCORE_THRESH_TEST=-0.1 is negative"):
        check_whole_detector(model)


pytest.importorskip("onnxruntime", reason="the ONNX runtime is the `deploy` extra: "
                                          "pip install -e .[deploy]")
onnx = pytest.importorskip("onnx", reason="the `deploy` extra: pip install -e .[deploy]")

from retina_focal.export.files import export_file  # noqa: E402
from retina_focal.export.runtime import ExportedModelError, load_exported  # noqa: E402

# the tolerances for the whole graph in onnxruntime against eager
BOX_ATOL, SCORE_ATOL = 1e-3, 1e-5


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """{(kind, dtype): (cfg, model, path)}: randomly initialised tiny models exported whole."""
    out = {}
    for kind, dtype in (("sigmoid", "float32"), ("sigmoid", "uint8"), ("softmax", "float32"),
                        ("detectron2", "float32")):
        cfg, model = _model(kind)
        folder = str(tmp_path_factory.mktemp(f"{kind}_{dtype}"))
        path = export_file(cfg, model, _image(128, 128, 0).float(), "onnx", folder,
                           [{"id": 3 + k, "name": f"c{k}"} for k in range(6)],
                           input_dtype=dtype)
        out[kind, dtype] = cfg, model, path
    return out


@pytest.mark.parametrize("key", [("sigmoid", "float32"), ("sigmoid", "uint8"),
                                 ("softmax", "float32"), ("detectron2", "float32")])
def test_onnx_graph_gives_eager_detections_at_every_size(exports, key):
    import onnxruntime as ort

    cfg, model, path = exports[key]
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "classes"]
    assert session.get_inputs()[0].type == f"tensor({key[1].replace('float32', 'float')})"
    for i, size in enumerate(SIZES):
        image = _image(*size, seed=10 + i)
        feed = image.numpy() if key[1] == "uint8" else image.float().numpy()
        boxes, scores, classes = session.run(None, {"image": feed})
        assert classes.dtype.name == "int64" and boxes.shape == (len(scores), 4)
        diff = compare_instances(_eager(model, image), _instances(size, boxes, scores, classes),
                                 atol=SCORE_ATOL, box_rtol=0, box_atol=BOX_ATOL)
        assert diff["same"] and diff["detections"][0] >= 90, (key, size, diff)
        assert diff["max_box_difference"] <= BOX_ATOL


def test_metadata_names_graph_dtype_format_classes_and_frozen_keys(exports):
    cfg, model, path = exports["sigmoid", "uint8"]
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    info = json.loads(meta["retina_focal"])
    assert (info["graph"], info["input_dtype"], info["input_format"]) == ("detector", "uint8",
                                                                          "BGR")
    assert info["config"]["MODEL.RETINANET.TOPK_CANDIDATES_TEST"] == 1000
    assert info["config"]["TEST.DETECTIONS_PER_IMAGE"] == 100
    assert json.loads(meta["class_map"])[2] == {"id": 5, "name": "c2"}


def test_an_image_without_detections_gives_empty_outputs(tmp_path):
    """Nothing above the threshold: every step of the graph takes empty tensors."""
    import onnxruntime as ort

    cfg, model = _model("sigmoid", ["MODEL.RETINANET.SCORE_THRESH_TEST", "0.999"])
    path = export_file(cfg, model, _image(128, 128, 0).float(), "onnx", str(tmp_path), None)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    image = _image(96, 64, seed=3)
    assert len(_eager(model, image)) == 0
    boxes, scores, classes = session.run(None, {"image": image.float().numpy()})
    assert boxes.shape == (0, 4) and scores.shape == (0,) and classes.shape == (0,)


def test_runtime_applies_a_tighter_threshold_and_cap_and_refuses_the_rest(exports):
    """A whole-detector file exported at threshold 0 evaluated with a higher threshold or a
    lower cap gives eager's detections under those keys; a lower threshold, another top-k or
    NMS threshold is refused naming the key (they are constants of the graph)."""
    cfg, model, path = exports["sigmoid", "float32"]
    images = [_image(*size, seed=20 + i) for i, size in enumerate(SIZES[:2])]
    # a threshold inside this young model's scores (all near the prior, 0.01)
    threshold = float(_eager(model, images[0]).scores[60])
    tight = ["MODEL.RETINANET.SCORE_THRESH_TEST", repr(threshold),
             "TEST.DETECTIONS_PER_IMAGE", "40"]
    tight_cfg, tight_model = _model("sigmoid", tight)
    exported = load_exported(tight_cfg, path).model
    for image in images:
        with torch.no_grad():
            ours = exported([{"image": image}])[0]["instances"]
        eager = _eager(tight_model, image)
        diff = compare_instances(eager, ours)
        assert diff["same"] and 0 < len(eager) <= 40 and eager.scores.min() > threshold, diff
    assert len(eager) == 40 or len(_eager(tight_model, images[0])) == 40  # the cap cut
    for key, value in (("MODEL.RETINANET.TOPK_CANDIDATES_TEST", "500"),
                       ("MODEL.RETINANET.NMS_THRESH_TEST", "0.6"),
                       ("TEST.DETECTIONS_PER_IMAGE", "101")):
        other = build_cfg(TINY_CONFIG, THRESH0 + [key, value])
        with pytest.raises(ExportedModelError, match=f"exported with {key}=.*--graph head"):
            load_exported(other, path)
    lower = build_cfg(TINY_CONFIG, ["MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"])
    load_exported(lower, path)  # equal: fine
    raised = build_cfg(TINY_CONFIG, [])  # 0.05 > 0.0: tighter, fine
    load_exported(raised, path)


def test_head_graph_stays_an_option(tmp_path):
    cfg, model = _model("sigmoid")
    path = export_file(cfg, model, _image(128, 128, 0).float(), "onnx", str(tmp_path), None,
                       graph="head")
    proto = onnx.load(path)
    assert [o.name for o in proto.graph.output][:2] == ["logits_p3", "logits_p4"]
    info = json.loads({p.key: p.value for p in proto.metadata_props}["retina_focal"])
    assert info["graph"] == "head"
    assert "MODEL.RETINANET.TOPK_CANDIDATES_TEST" not in info["config"]
    # the head graph keeps the test-time keys as config keys
    other = build_cfg(TINY_CONFIG, ["MODEL.RETINANET.TOPK_CANDIDATES_TEST", "500"])
    load_exported(other, path)


def test_demo_names_score_thresh_below_the_graphs_threshold(exports, tmp_path, capsys):
    """A stranger's finding: `demo --score-thresh` under the threshold a whole-detector graph
    was exported with named MODEL.RETINANET.SCORE_THRESH_TEST, a key the user never set. Now
    the option is named, with both fixes, and nothing is written."""
    from retina_focal.cli import main

    cfg, model, path = exports["sigmoid", "float32"]
    export_file(build_cfg(TINY_CONFIG, ["MODEL.RETINANET.SCORE_THRESH_TEST", "0.2"]), model,
                _image(128, 128, 0).float(), "onnx", str(tmp_path), None)
    import numpy as np
    from PIL import Image

    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    out = tmp_path / "demo"
    assert main(["demo", "--config-file", TINY_CONFIG, "--input", str(image), "--output",
                 str(out), "--score-thresh", "0.1", "MODEL.WEIGHTS",
                 str(tmp_path / "model.onnx")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: --score-thresh 0.1 is below the score threshold the "
                          "whole-detector graph"), err
    assert "(0.2): use --score-thresh 0.2 or more" in err and not out.exists()
