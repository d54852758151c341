"""retina_focal.engine.checkpoint for inference: every tensor must come from the checkpoint
(evaluation, demo, export, analysis), with an error naming the file, the tensors and the
likely cause; the class map written into checkpoints; and each inference tool's message for a
text file, a truncated file and a missing file given as weights."""
import json
import logging
import os

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG
from PIL import Image

from retina_focal.engine.checkpoint import (
    CLASS_MAP_KEY,
    CheckpointReadError,
    RetinaFocalCheckpointer,
)
from retina_focal.engine.defaults import build_cfg, build_model, load_model_for_inference

CLASS_MAP = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 12, "name": "bird"}]


def save_model(path, num_classes=None, class_map=None, drop=()):
    """A checkpoint of the tiny model (``num_classes`` classes), as the trainer writes it."""
    opts = ["MODEL.RETINANET.NUM_CLASSES", str(num_classes)] if num_classes else []
    torch.manual_seed(0)
    model = build_model(build_cfg(TINY_CONFIG, opts))
    state = {k: v for k, v in model.state_dict().items() if k not in drop}
    data = {"model": state, "iteration": 7}
    if class_map is not None:
        data[CLASS_MAP_KEY] = class_map
    torch.save(data, path)
    return model


def test_inference_load_of_another_class_count_is_an_error_with_the_fix(tmp_path):
    """The report: a 3-class model exported without MODEL.RETINANET.NUM_CLASSES 3 loaded with
    a warning lost among tracer warnings, its classifier random, and "equal to eager: True"."""
    path = str(tmp_path / "three.pth")
    save_model(path, num_classes=3)
    cfg = build_cfg(TINY_CONFIG)  # 6 classes
    with pytest.raises(ValueError) as info:
        load_model_for_inference(cfg, path)
    msg = str(info.value)
    assert msg.startswith(f"Cannot run inference: the checkpoint {path!r} does not match "
                          "the model exactly")
    assert ("head.cls_score: the checkpoint has 3 classes (27 = 9 anchors x 3), the config 6 "
            "(54 = 9 x 6): set MODEL.RETINANET.NUM_CLASSES 3 to use this checkpoint") in msg
    assert "different shapes (2): head.cls_score.weight (27, 64, 3, 3) vs model (54" in msg
    # as told: it loads, every tensor equal to the checkpoint's
    cfg3 = build_cfg(TINY_CONFIG, ["MODEL.RETINANET.NUM_CLASSES", "3"])
    loaded = load_model_for_inference(cfg3, path)
    ref = torch.load(path)["model"]
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_a_missing_or_unexpected_tensor_is_an_error_for_inference_only(tmp_path, caplog):
    path = str(tmp_path / "partial.pth")
    save_model(path, drop=("head.bbox_pred.bias",))
    torch.manual_seed(1)
    model = build_model(build_cfg(TINY_CONFIG))
    with pytest.raises(ValueError, match=r"(?s)Cannot run inference.*partial.pth.*in the model "
                                         r"but not in the checkpoint \(1\): head.bbox_pred.bias"):
        RetinaFocalCheckpointer(model, for_inference=True).load(path)
    # training initialisation: what fits loads, the rest is a warning
    with caplog.at_level(logging.WARNING):
        RetinaFocalCheckpointer(model).load(path)
    assert "the others keep their initialisation" in caplog.text

    extra = dict(torch.load(path), model=dict(torch.load(path)["model"]))
    extra["model"]["head.bbox_pred.bias"] = torch.zeros(36)
    extra["model"]["head.extra.weight"] = torch.zeros(1)
    torch.save(extra, path)
    with pytest.raises(ValueError, match=r"in the checkpoint but not in the model \(1\): "
                                         r"head.extra.weight"):
        RetinaFocalCheckpointer(model, for_inference=True).load(path)


def test_backbone_weights_are_not_a_detector(tmp_path):
    path = str(tmp_path / "backbone.pth")
    model = save_model(path)
    torch.save({"model": {k: v for k, v in model.state_dict().items()
                          if k.startswith("backbone.")}}, path)
    with pytest.raises(ValueError, match="no detection head .* backbone .*pre-training"):
        load_model_for_inference(build_cfg(TINY_CONFIG), path)


def test_class_map_is_written_into_checkpoints_and_read_back(tmp_path):
    cfg = build_cfg(TINY_CONFIG, ["MODEL.RETINANET.NUM_CLASSES", "3"])
    model = build_model(cfg)
    checkpointer = RetinaFocalCheckpointer(model, str(tmp_path), class_map=CLASS_MAP)
    checkpointer.save("model_final", iteration=3)
    data = torch.load(tmp_path / "model_final.pth")
    assert data[CLASS_MAP_KEY] == CLASS_MAP and data["iteration"] == 3
    loaded = load_model_for_inference(cfg, str(tmp_path / "model_final.pth"))
    assert loaded.class_map == CLASS_MAP and not loaded.model.training
    # a checkpoint without one (Detectron2's, older ones): None
    RetinaFocalCheckpointer(model, str(tmp_path)).save("plain")
    assert load_model_for_inference(cfg, str(tmp_path / "plain.pth")).class_map is None
    # a malformed one is an error naming the file
    data[CLASS_MAP_KEY] = ["cat", "dog", "bird"]
    torch.save(data, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="bad.pth'?: 'class_map' is not a list"):
        load_model_for_inference(cfg, str(tmp_path / "bad.pth"))


def test_trainer_writes_the_training_sets_class_map(tmp_path):
    from detectron2.data import MetadataCatalog

    from retina_focal.engine.defaults import Trainer

    cfg = build_cfg(TINY_CONFIG, ["OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "1",
                                  "DATASETS.TEST", "()"], freeze=False)
    trainer = Trainer(cfg)
    meta = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
    expected = [{"id": meta.thing_dataset_id_to_contiguous_id and
                 {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}[i],
                 "name": n} for i, n in enumerate(meta.thing_classes)]
    assert trainer.checkpointer.class_map == expected
    trainer.checkpointer.save("model_final")
    assert torch.load(tmp_path / "model_final.pth")[CLASS_MAP_KEY] == expected


# ---- each inference tool, with bad weights files ---------------------------------------------
def _bad_weights(kind, tmp_path):
    if kind == "text file":
        path = tmp_path / "weights.txt"
        path.write_text("these are not weights\n" * 20)
    elif kind == "truncated file":
        full = tmp_path / "full.pth"
        save_model(str(full))
        path = tmp_path / "cut.pth"
        path.write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    else:
        path = tmp_path / "missing.pth"
    return str(path)


def _run_tool(tool, weights, tmp_path):
    from retina_focal.cli import demo, evaluate, export

    image = tmp_path / "img.png"
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(image)
    common = ["--config-file", TINY_CONFIG]
    if tool == "eval":
        return evaluate.run(common + ["--output", str(tmp_path / "eval"), "MODEL.DEVICE", "cpu",
                                      "MODEL.WEIGHTS", weights])
    if tool == "demo":
        return demo.run(common + ["--input", str(image), "--output", str(tmp_path / "demo"),
                                  "--device", "cpu", "MODEL.WEIGHTS", weights])
    return export.run(common + ["--output", str(tmp_path / "export"), "MODEL.WEIGHTS", weights])


@pytest.mark.parametrize("tool", ["eval", "demo", "export"])
@pytest.mark.parametrize("kind", ["text file", "truncated file", "missing file"])
def test_bad_weights_file_gives_a_clear_error_naming_it(tool, kind, tmp_path):
    """Before issue 13, evaluate/demo/export bypassed the checkpoint checks: a text file gave
    ``KeyError: 101``, a truncated file a raw torch zip error."""
    weights = _bad_weights(kind, tmp_path)
    errors = (SystemExit, ValueError, FileNotFoundError, CheckpointReadError)
    with pytest.raises(errors) as info:
        _run_tool(tool, weights, tmp_path)
    msg = str(info.value)
    assert repr(weights) in msg, msg
    if kind == "missing file":
        assert "does not exist" in msg
    elif kind == "text file":
        assert "is a text file, not a checkpoint" in msg and "weights_only" not in msg
    else:
        assert "Cannot read checkpoint" in msg and "truncated or corrupt, or not a checkpoint" \
            in msg


@pytest.mark.parametrize("flags", [[], ["--eval-only"]])
@pytest.mark.parametrize("name,fragment", [
    ("model.onnx", "is an ONNX model (written by retina-focal export), not a checkpoint"),
    ("notes.txt", "is a text file, not a checkpoint"),
])
def test_train_names_an_exported_model_or_text_file_given_as_weights(
        tmp_path, flags, name, fragment):
    """Issue 28 (8): an .onnx file or a text file as MODEL.WEIGHTS of train (training or
    --eval-only) is one error line saying what the file is and what to do, without torch's
    weights_only advice or a traceback."""
    from conftest import REPO, run_tool

    weights = tmp_path / name
    weights.write_bytes(b"\x08\x07\x12\x0bretina\x80\xff" if name.endswith(".onnx")
                        else b"not weights\n")
    proc = run_tool(["-m", "retina_focal.cli", "train", "--config-file", TINY_CONFIG, *flags,
                     "MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(tmp_path / "out"),
                     "SOLVER.MAX_ITER", "1"], cwd=REPO)
    err = proc.stderr
    assert proc.returncode == 1, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and fragment in last and str(weights) in last, err[-2000:]
    assert "weights_only" not in err and "Traceback" not in err
    if name.endswith(".onnx"):
        assert "retina-focal eval" in last


@pytest.mark.parametrize("tool", ["eval", "demo", "export"])
def test_a_checkpoint_of_another_class_count_stops_every_tool(tool, tmp_path):
    weights = str(tmp_path / "three.pth")
    save_model(weights, num_classes=3, class_map=CLASS_MAP)
    with pytest.raises((SystemExit, ValueError)) as info:
        _run_tool(tool, weights, tmp_path)
    msg = str(info.value)
    if tool == "eval":  # evaluation checks the count against DATASETS.TEST first
        assert "NUM_CLASSES" in msg
    else:
        assert "set MODEL.RETINANET.NUM_CLASSES 3 to use this checkpoint" in msg, msg
    assert not os.path.exists(tmp_path / "export" / "model.ts")


def test_export_writes_the_class_map(tmp_path):
    from retina_focal.cli import export

    weights = str(tmp_path / "three.pth")
    save_model(weights, num_classes=3, class_map=CLASS_MAP)
    out = tmp_path / "export"
    assert export.run(["--config-file", TINY_CONFIG, "--output", str(out),
                       "MODEL.RETINANET.NUM_CLASSES", "3", "MODEL.WEIGHTS", weights]) == 0
    assert json.loads((out / "class_map.json").read_text()) == CLASS_MAP
    files = {"class_map.json": ""}
    torch.jit.load(str(out / "model.ts"), _extra_files=files)
    assert json.loads(files["class_map.json"]) == CLASS_MAP


@pytest.mark.parametrize("config,key", [
    (TINY_CONFIG, "loss_normalizer"),
    (os.path.join(os.path.dirname(TINY_CONFIG), "faster_rcnn_focal_rpn_R_18_FPN_synthetic.yaml"),
     "proposal_generator.loss_normalizer"),
])
def test_training_checkpoints_carry_every_ema_normaliser(tmp_path, config, key):
    """Issue 28 (14): a training checkpoint saves the EMA normaliser wherever it lives (a
    RetinaFocal's own, a Faster R-CNN's FocalRPN's) and resuming restores it; before, only
    the model's own attribute was saved, so a FocalRPN's restarted at 100."""
    from retina_focal.engine.checkpoint import ModelAttributeState, RetinaFocalCheckpointer

    cfg = build_cfg(config, ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    owner = model.proposal_generator if key.startswith("proposal_generator") else model
    owner.loss_normalizer = 42.5
    state = ModelAttributeState(model)
    assert state.state_dict() == {key: 42.5}
    RetinaFocalCheckpointer(model, str(tmp_path), model_training_state=state).save("model_1")

    fresh = build_model(cfg)
    fresh_owner = fresh.proposal_generator if key.startswith("proposal_generator") else fresh
    assert vars(fresh_owner).get("loss_normalizer") != 42.5  # (RetinaFocal: set at step 1)
    RetinaFocalCheckpointer(fresh, str(tmp_path),
                            model_training_state=ModelAttributeState(fresh)).resume_or_load(
        os.path.join(str(tmp_path), "model_1.pth"), resume=True)
    assert fresh_owner.loss_normalizer == 42.5
    ModelAttributeState(fresh).load_state_dict({key: None, "other": 1.0})  # not set: unchanged
    assert fresh_owner.loss_normalizer == 42.5


def test_a_torchscript_file_as_weights_is_not_sent_to_commands_that_refuse_it(tmp_path):
    """Stranger test: a .ts file's message advised eval and demo, which refuse it too."""
    from retina_focal.engine.checkpoint import unreadable_checkpoint_message

    ts, onnx = tmp_path / "model.ts", tmp_path / "model.onnx"
    ts.write_bytes(b"PK\x03\x04")
    onnx.write_bytes(b"\x08\x07")
    message = unreadable_checkpoint_message(str(ts), RuntimeError("not a zip"))
    assert "torch.jit.load" in message and "retina-focal eval" not in message
    assert "retina-focal eval" in unreadable_checkpoint_message(str(onnx), RuntimeError("x"))
