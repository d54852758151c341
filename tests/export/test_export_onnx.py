"""ONNX export (retina_focal.export.onnx) and its onnxruntime runtime
(retina_focal.export.runtime): dynamic image sizes, the eager model's detections and AP, the
class map in the file, the tools taking ``MODEL.WEIGHTS model.onnx``, and clear errors for a
wrong file."""
import json
import os

import pytest
import torch
from conftest import TINY_CONFIG

pytest.importorskip("onnxruntime", reason="the ONNX runtime is the `deploy` extra: "
                                          "pip install -e .[deploy]")
onnx = pytest.importorskip("onnx", reason="the `deploy` extra: pip install -e .[deploy]")

from retina_focal.engine.defaults import (  # noqa: E402,E501
    build_cfg,
    build_model,
    load_model_for_inference,
)
from retina_focal.export.files import export_file  # noqa: E402
from retina_focal.export.onnx import OPSET  # noqa: E402
from retina_focal.export.parity import compare_instances, parity_on_dataset  # noqa: E402
from retina_focal.export.runtime import (  # noqa: E402
    ExportedModelError,
    load_exported,
)

VAL = "synthetic_shapes_tiny_val"
SIZES = [(128, 128), (100, 150), (224, 96)]  # the traced size and two others, not /32
CLASS_MAP = [{"id": k + 1, "name": n} for k, n in enumerate("abcdef")]


def _image(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


@pytest.fixture(scope="module", params=["detector", "head"])
def random_export(tmp_path_factory, request):
    """A randomly initialised tiny model, its cfg and its ONNX file, the whole detector or the
    head graph (score threshold 0: every candidate survives, so top-k and NMS are
    exercised)."""
    cfg = build_cfg(TINY_CONFIG, ["MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    out = str(tmp_path_factory.mktemp("onnx"))
    path = export_file(cfg, model, _image(128, 128, 0).float(), "onnx", out, CLASS_MAP,
                       graph=request.param)
    return cfg, model, path


def test_onnx_file_opset_metadata_and_dynamic_axes(random_export):
    cfg, model, path = random_export
    proto = onnx.load(path)
    assert proto.opset_import[0].version == OPSET
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["class_map"]) == CLASS_MAP
    info = json.loads(meta["retina_focal"])
    assert info["config"]["MODEL.RETINANET.NUM_CLASSES"] == 6 and "TorchScript" in info["exporter"]
    assert info["graph"] in ("detector", "head")
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [3, "height", "width"]


@pytest.mark.parametrize("size", SIZES)
def test_onnx_runtime_gives_eager_detections_at_three_sizes(random_export, size):
    """Either graph (the fixture's two) at the traced size and two others, with the resize to
    an original image of twice the size."""
    cfg, model, path = random_export
    exported = load_exported(cfg, path).model
    inputs = [{"image": _image(*size, seed=sum(size)), "height": 2 * size[0],
               "width": 2 * size[1]}]
    with torch.no_grad():
        eager = model(inputs)[0]["instances"]
        ours = exported(inputs)[0]["instances"]
    diff = compare_instances(eager, ours)
    assert diff["same"] and len(eager) > 50, diff
    assert tuple(ours.image_size) == (2 * size[0], 2 * size[1])


def test_onnx_parity_on_the_val_split_and_tools(trained, tmp_path):
    """The trained tiny model: every val image's detections and the COCO AP equal eager's;
    `retina-focal eval` and `demo` take MODEL.WEIGHTS model.onnx as they take the .pth."""
    from retina_focal.cli import demo, evaluate

    opts = ["MODEL.WEIGHTS", trained["weights"], "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"]
    cfg = build_cfg(TINY_CONFIG, opts)
    loaded = load_model_for_inference(cfg)
    path = export_file(cfg, loaded.model, _image(128, 128, 0).float(), "onnx", str(tmp_path),
                       loaded.class_map)
    exported = load_exported(cfg, path)
    assert exported.class_map == loaded.class_map is not None
    report = parity_on_dataset(cfg, loaded.model, exported.model, VAL, loaded.class_map,
                               str(tmp_path / "verify"))
    assert report["num_images"] >= 4 and report["all_same"], report["images"]
    assert report["max_score_difference"] <= 1e-4
    assert abs(report["ap"]["eager"] - report["ap"]["exported"]) <= 0.1
    assert report["ap"]["eager"] == pytest.approx(trained["eval"]["bbox/AP"], abs=1e-6)

    assert evaluate.run(["--config-file", TINY_CONFIG, "--output", str(tmp_path / "eval"),
                         "MODEL.WEIGHTS", path, "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"]) == 0
    assert os.path.isfile(tmp_path / "eval" / "inference" / VAL / "coco_report.json")
    image_dir = trained["image_dir"]  # the val split's images
    runs = {}
    for name, weights in (("pth", trained["weights"]), ("onnx", path)):
        out = tmp_path / f"demo_{name}"
        assert demo.run(["--config-file", TINY_CONFIG, "--input", image_dir, "--output",
                         str(out), "--score-thresh", "0.05", "MODEL.WEIGHTS", weights]) == 0
        runs[name] = json.loads((out / "results.json").read_text())
    assert len(runs["pth"]) == len(runs["onnx"]) > 0
    for a, b in zip(runs["pth"], runs["onnx"]):
        assert a["category_id"] == b["category_id"] and a["image_id"] == b["image_id"]
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
        assert a["bbox"] == pytest.approx(b["bbox"], abs=2e-3)


def test_detectron2_retinanet_exports(tmp_path):
    """Detectron2's own RetinaNet (no RetinaFocal keys) exports and runs the same way."""
    cfg = build_cfg(TINY_CONFIG, ["MODEL.META_ARCHITECTURE", "RetinaNet",
                                  "MODEL.RETINANET.NORM", "", "MODEL.RETINANET.SCORE_THRESH_TEST",
                                  "0.0"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    path = export_file(cfg, model, _image(128, 128, 0).float(), "onnx", str(tmp_path), None)
    exported = load_exported(cfg, path).model
    for size in SIZES[1:]:
        inputs = [{"image": _image(*size, seed=1)}]
        with torch.no_grad():
            diff = compare_instances(model(inputs)[0]["instances"],
                                     exported(inputs)[0]["instances"])
        assert diff["same"] and diff["detections"][0] > 50, diff


def test_wrong_files_give_clear_errors(random_export, tmp_path):
    cfg, model, path = random_export
    bad = tmp_path / "model.onnx"
    bad.write_text("not an onnx model")
    with pytest.raises(ExportedModelError, match="cannot read the ONNX model .*model.onnx"):
        load_exported(cfg, str(bad))
    with pytest.raises(FileNotFoundError, match="exported model .*missing.onnx.* does not exist"):
        load_exported(cfg, str(tmp_path / "missing.onnx"))
    foreign = tmp_path / "foreign.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 3, 1), (torch.zeros(1, 3, 8, 8),), str(foreign),
                      dynamo=False)
    with pytest.raises(ExportedModelError, match="foreign.onnx.* was not written by"):
        load_exported(cfg, str(foreign))
    other = build_cfg(TINY_CONFIG, ["MODEL.RETINANET.NUM_CLASSES", "3"])
    with pytest.raises(ExportedModelError, match=r"exported with MODEL.RETINANET.NUM_CLASSES=6 "
                       r"but the config has MODEL.RETINANET.NUM_CLASSES=3"):
        load_exported(other, path)


def test_dataset_parity_verdict_explains_each_outcome():
    """Issue 28 (7): a model that detects nothing has AP nan on both sides: that is equality,
    said so; nan on one side, differing images or APs are differences, each with its reason."""
    from retina_focal.export.parity import dataset_parity_verdict

    def report(eager, exported, same=(True, True)):
        return {"num_images": len(same), "all_same": all(same), "ap": {
            "eager": eager, "exported": exported},
            "images": [{"image_id": 10 + i, "same": s} for i, s in enumerate(same)]}

    nan = float("nan")
    ok, why = dataset_parity_verdict(report(nan, nan), 0.1)
    assert ok and "neither model detected anything" in why
    ok, why = dataset_parity_verdict(report(nan, 3.0), 0.1)
    assert not ok and "eager model's COCO AP is undefined" in why
    ok, why = dataset_parity_verdict(report(3.0, nan), 0.1)
    assert not ok and "exported model's COCO AP is undefined" in why
    ok, why = dataset_parity_verdict(report(30.0, 30.2), 0.1)
    assert not ok and "differs by 0.200" in why
    assert dataset_parity_verdict(report(30.0, 30.25), 0.25)[0]  # the boundary is allowed
    ok, why = dataset_parity_verdict(report(nan, nan, same=(True, False)), 0.1)
    assert not ok and "differ on 1 of 2 images (image_id 11)" in why


def test_export_verify_dataset_of_a_model_that_detects_nothing(trained, tmp_path, capsys):
    """Issue 28 (7): `export --verify-dataset` on a model that detects nothing exits 0 and
    says why the APs are nan, instead of exit 1 with no reason."""
    from retina_focal.cli import export

    out = tmp_path / "export"
    status = export.run(["--config-file", TINY_CONFIG, "--format", "onnx", "--output", str(out),
                         "--verify-dataset", VAL, "MODEL.WEIGHTS", trained["weights"],
                         "MODEL.RETINANET.SCORE_THRESH_TEST", "1.0"])
    captured = capsys.readouterr()
    assert status == 0, captured.out[-2000:] + captured.err[-2000:]
    assert "neither model detected anything" in captured.out
    saved = json.loads((out / "verify" / "parity.json").read_text())
    assert saved["verdict"]["same"] is True


def test_export_verifies_on_a_dataset_registered_with_dataset(trained, tmp_path, capsys):
    """Issue 28 (5): `export --dataset NAME=JSON:IMAGE_DIR --verify-dataset NAME` checks the
    user's own COCO files; without --dataset the name is refused before anything is written."""
    from retina_focal.cli import main

    out = tmp_path / "export"
    base = ["export", "--config-file", TINY_CONFIG, "--format", "onnx", "--output", str(out),
            "--verify-dataset", "my_val", "--max-images", "2", "MODEL.WEIGHTS",
            trained["weights"], "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"]
    assert main(base) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --verify-dataset: dataset 'my_val' is not registered"), err
    assert "--dataset my_val=JSON:IMAGE_DIR" in err and "Traceback" not in err
    assert not out.exists()  # refused before model.onnx was written
    dataset = ["--dataset", f"my_val={trained['gt_json']}:{trained['image_dir']}"]
    assert main(base + dataset) == 1  # an option after the KEY VALUE overrides: named
    assert "option --dataset comes after the KEY VALUE" in capsys.readouterr().err
    try:
        status = main(base[:1] + dataset + base[1:])
    finally:  # registered in this process: later tests expect 'my_val' unregistered
        from detectron2.data import DatasetCatalog, MetadataCatalog

        for catalog in (DatasetCatalog, MetadataCatalog):
            if "my_val" in catalog.list():
                catalog.remove("my_val")
    captured = capsys.readouterr()
    assert status == 0, captured.out[-2000:] + captured.err[-2000:]
    assert "Exported equals eager on my_val" in captured.out
    assert json.loads((out / "verify" / "parity.json").read_text())["num_images"] == 2


@pytest.mark.parametrize("fmt", ["onnx", "exported-program"])
def test_a_two_stage_model_is_refused_naming_the_format_that_exports_it(fmt, tmp_path, capsys):
    """Issue 28 (6), issue 30 (5): ONNX / exported-program graphs are built from a dense head:
    the focal-RPN Faster R-CNN is refused with one error line naming what the graphs lack (its
    proposal selection and ROI heads) and pointing to --format torchscript (was an
    AttributeError on head_in_features), before the output folder is made."""
    from conftest import CONFIGS

    from retina_focal.cli import main

    out = tmp_path / "export"
    config = os.path.join(CONFIGS, "Synthetic", "faster_rcnn_focal_rpn_R_18_FPN_synthetic.yaml")
    assert main(["export", "--config-file", config, "--format", fmt, "--output", str(out),
                 "MODEL.DEVICE", "cpu"]) == 1
    # (the last line: an earlier in-process test's logging handler may complain before it)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: --format {fmt}") and "export supports one-stage " \
        "RetinaNet-style detectors" in err, err
    assert "GeneralizedRCNN, a two-stage detector" in err and "ROIAlign" in err
    assert "--format torchscript" in err
    assert not out.exists()


def test_onnx_sessions_spin_unless_told_not_to(random_export, monkeypatch):
    """``onnx_backend(spinning=False)`` (the export benchmark's): onnxruntime's idle worker
    threads do not spin between runs, so they do not take the cores of an eager model timed
    next (a stranger measured its CPU time doubled). By default they spin (lower latency)."""
    import onnxruntime as ort

    from retina_focal.export.runtime import onnx_backend

    sessions = []

    class Recorded(ort.InferenceSession):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            sessions.append(self)

    monkeypatch.setattr(ort, "InferenceSession", Recorded)
    _, _, path = random_export
    onnx_backend(path, threads=2)
    onnx_backend(path, threads=2, spinning=False)
    spin = [s.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
            for s in sessions]
    assert spin == ["1", "0"]
