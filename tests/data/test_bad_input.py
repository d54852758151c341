"""Bad input: messy boxes, unknown categories, unreadable or unusual images, bad checkpoints,
unknown config keys. Real files throughout; the corrupt-image and truncated-checkpoint runs
are real processes."""
import json
import logging
import os
import re
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO, TINY_CONFIG, run_tool
from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode
from PIL import Image

from retina_focal.data.checks import sanitize_dataset_dicts
from retina_focal.data.datasets.coco import register_coco_dataset
from retina_focal.data.mapper import RobustDatasetMapper, UnreadableImageError, read_image_any
from retina_focal.engine.checkpoint import RetinaFocalCheckpointer
from retina_focal.utils.errors import DataError


# ---- boxes and categories --------------------------------------------------------------------
def test_boxes_are_clipped_or_dropped_and_counted_once(caplog):
    def rec(i, annos):
        return {"file_name": f"{i}.png", "width": 100, "height": 80, "image_id": i,
                "annotations": [{"bbox": b, "bbox_mode": m, "category_id": 1} for b, m in annos]}

    xyxy, xywh = BoxMode.XYXY_ABS, BoxMode.XYWH_ABS
    dicts = [
        rec(0, [([10, 10, 30, 40], xyxy),        # fine
                ([-5, 70, 20, 20], xywh),        # x0 < 0, y1 = 90 > 80: clipped
                ([50, 50, 50, 60], xyxy),        # zero width: dropped
                ([60, 10, 40, 30], xyxy)]),      # negative size: dropped
        rec(1, [([120, 10, 150, 30], xyxy)]),    # entirely right of the image: dropped
        rec(2, []),                              # an image without objects stays
    ]
    with caplog.at_level(logging.WARNING, logger="retina_focal"):
        out = sanitize_dataset_dicts(dicts, "messy", num_classes=3)
    assert [len(r["annotations"]) for r in out] == [2, 0, 0]
    assert out[0]["annotations"][0]["bbox"] == [10, 10, 30, 40]
    assert out[0]["annotations"][1]["bbox"] == [0, 70, 15, 80]  # XYWH -> XYXY, clipped
    assert all(a["bbox_mode"] == xyxy for a in out[0]["annotations"])
    assert dicts[0]["annotations"][1]["bbox"] == [-5, 70, 20, 20]  # the input is not modified
    msgs = [r.getMessage() for r in caplog.records if "messy" in r.getMessage()]
    assert len(msgs) == 1, msgs  # once per dataset
    assert "clipped 1 box(es)" in msgs[0] and "dropped 3 box(es)" in msgs[0]


# A non-finite box used to be dropped and counted; like any malformed box it is now an error.
MALFORMED_BOXES = [
    ([1.0, 2.0, 3.0], "has 3 values, not 4"),
    (["10", "10", "20", "20"], "has the value '10' of type str, not a number"),
    (None, "is a NoneType, not a list of 4 numbers"),
    ([0, 0, float("nan"), 5], "has the non-finite value nan"),
    ([0, 0, float("inf"), 5], "has the non-finite value inf"),
    ([True, 0, 5, 5], "has the value True of type bool, not a number"),
]


@pytest.mark.parametrize("bbox,problem", MALFORMED_BOXES, ids=lambda v: repr(v)[:20])
def test_a_malformed_box_is_an_error_naming_dataset_json_image_annotation_and_value(
        bbox, problem, tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    name = "malformed_box_test"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [])
        MetadataCatalog.get(name).set(json_file="/data/ann.json", image_root="/data/img")
    good = {"id": 5, "bbox": [1, 1, 4, 4], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}
    dicts = [{"file_name": "/data/img/a.png", "width": 10, "height": 10, "image_id": 31,
              "annotations": [good, dict(good, id=6, bbox=bbox), dict(good, id=7, bbox=bbox)]}]
    expected = (f"Dataset '{name}' (/data/ann.json), image '/data/img/a.png' (image_id 31), "
                f"annotation id 6: bbox {bbox!r} (XYWH_ABS) {problem}; fix or remove the "
                "annotation; 1 more annotation(s) of this dataset have a malformed box")
    with pytest.raises(ValueError) as err:
        sanitize_dataset_dicts(dicts, name, num_classes=1)
    assert str(err.value) == expected


def test_a_box_without_bbox_mode_is_named():
    dicts = [{"file_name": "b.png", "image_id": 2,
              "annotations": [{"id": 9, "bbox": [0, 0, 1, 1], "category_id": 0}]}]
    with pytest.raises(ValueError, match=r"Dataset 'd', image 'b.png' \(image_id 2\), "
                                         r"annotation id 9: bbox \[0, 0, 1, 1\] has no "
                                         r"'bbox_mode'"):
        sanitize_dataset_dicts(dicts, "d", num_classes=1)


@pytest.mark.parametrize("bbox,problem", MALFORMED_BOXES, ids=lambda v: repr(v)[:20])
def test_a_malformed_box_in_a_coco_json_is_named_at_registration(bbox, problem, tmp_path):
    root = str(tmp_path)
    json_path = _write_tiny_coco(root, n=3)
    with open(json_path) as f:
        coco = json.load(f)
    coco["annotations"][1]["bbox"] = bbox
    coco["annotations"][2]["bbox"] = bbox
    with open(json_path, "w") as f:
        json.dump(coco, f)
    name = f"malformed_json_{abs(hash(repr(bbox)))}"
    with pytest.raises(ValueError) as err:
        register_coco_dataset(name, json_path, root)
    assert str(err.value) == (
        f"Dataset '{name}' ({json_path}), image '1.png' (image_id 2), annotation id 2: bbox "
        f"{bbox!r} {problem} ([x, y, width, height]); fix or remove the annotation; 1 more "
        "annotation(s) in this file have a malformed bbox")


def test_training_with_a_malformed_box_in_its_json_stops_naming_it(tmp_path):
    from retina_focal.cli import command_module

    root = str(tmp_path / "data")
    json_path = _write_tiny_coco(root, n=2)
    with open(json_path) as f:
        coco = json.load(f)
    del coco["annotations"][0]["bbox"][3]
    with open(json_path, "w") as f:
        json.dump(coco, f)
    # one error line (SystemExit), no traceback
    with pytest.raises(SystemExit, match=r"^error: Dataset 'malformed_train' \(.*data\.json\), "
                                         r"image '0\.png' \(image_id 1\), annotation id 1: bbox "
                                         r"\[8, 8, 20\] has 3 values, not 4"):
        command_module("train").run([
            "--config-file", TINY_CONFIG, "--dataset", f"malformed_train={json_path}:{root}",
            "DATASETS.TRAIN", "('malformed_train',)", "DATASETS.TEST", "()",
            "MODEL.RETINANET.NUM_CLASSES", "1", "OUTPUT_DIR", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_category_id_outside_the_classes_is_a_clear_error():
    dicts = [{"file_name": "a.png", "width": 10, "height": 10,
              "annotations": [{"bbox": [0, 0, 5, 5], "bbox_mode": BoxMode.XYXY_ABS,
                               "category_id": 6}]}]
    with pytest.raises(ValueError, match=r"'a.png'.*category_id=6.*\[0, 6\)"):
        sanitize_dataset_dicts(dicts, "d", num_classes=6)


def _coco_with(tmp_path, **changes):
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [0, 0, 4, 4],
                             "area": 16, "iscrowd": 0}],
            "categories": [{"id": 2, "name": "x"}, {"id": 7, "name": "y"}]}
    for key, value in changes.items():
        coco[key] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(coco))
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    return str(path)


_ANN = {"id": 4, "image_id": 1, "category_id": 2, "bbox": [0, 0, 4, 4], "area": 16,
        "iscrowd": 0}


@pytest.mark.parametrize("changes,message", [
    # Detectron2's load_coco_json: a KeyError traceback when the dataset is first loaded
    ({"annotations": [_ANN, dict(_ANN, id=5, category_id=9), dict(_ANN, id=6, category_id=3)]},
     r"image 'a.png' \(image_id 1\), annotation id 5: category_id 9 is not defined in the "
     r"file's 'categories' \(ids \[2, 7\]\); add it there or fix the annotation; 1 more "
     r"annotation\(s\) in this file have a category_id not in 'categories'"),
    # Detectron2 drops an annotation of an unknown image without a word
    ({"annotations": [_ANN, dict(_ANN, id=5, image_id=3)]},
     r"image None \(image_id 3\), annotation id 5: image_id 3 is not defined in the file's "
     r"'images' \(ids \[1\]\); add it there or fix the annotation$"),
    ({"categories": [{"id": 2, "name": "x"}, {"id": 2, "name": "y"}]},
     r"category id\(s\) \[2\] are defined more than once"),
    ({"categories": [{"id": 2, "name": "x"}, {"id": "7", "name": "y"}]},
     r"category \{'id': '7', 'name': 'y'\} needs an integer 'id' and a string 'name'"),
    ({"categories": [{"id": 2}]}, r"category \{'id': 2\} needs an integer 'id' and a string"),
    # two images under one id: the annotations of one would go to the other
    ({"images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 8},
                 {"id": 1, "file_name": "a.png", "width": 8, "height": 8}]},
     r"image id\(s\) \[1\] are used by more than one entry of 'images'"),
], ids=["unknown-category-id", "unknown-image-id", "repeated-category-id",
        "string-category-id", "category-without-name", "repeated-image-id"])
def test_a_coco_json_whose_references_do_not_resolve_is_refused_at_registration(
        changes, message, tmp_path):
    name = f"bad_refs_{abs(hash(repr(changes)))}"
    path = _coco_with(tmp_path, **changes)
    with pytest.raises(DataError, match=rf"^Dataset '{name}' \({re.escape(path)}\)"):
        register_coco_dataset(name, path, str(tmp_path))
    with pytest.raises(DataError, match=message):
        register_coco_dataset(name, path, str(tmp_path))
    assert name not in DatasetCatalog.list()


def test_a_coco_json_whose_image_files_are_not_in_the_folder_is_refused_at_registration(
        tmp_path):
    """Stranger test: a wrong image folder was found iterations into training, and skipping
    unreadable images then trained on wrong pictures."""
    from retina_focal.utils.errors import DataFileNotFound

    path = _coco_with(tmp_path, images=[
        {"id": 1, "file_name": "a.png", "width": 8, "height": 8},
        {"id": 2, "file_name": "b.png", "width": 8, "height": 8}])
    with pytest.raises(DataFileNotFound, match=r"--dataset no_files: 1 of the 2 images of "
                                               r".*bad\.json are not files in the image folder "
                                               r".*, e\.g\. 'b\.png'"):
        register_coco_dataset("no_files", path, str(tmp_path))
    assert "no_files" not in DatasetCatalog.list()


def test_an_image_folder_that_is_a_file_is_named_as_such(tmp_path):
    path = _coco_with(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"image folder '.*a\.png' is a file, not a folder"):
        register_coco_dataset("folder_is_file", path, str(tmp_path / "a.png"))
    # and the other way round: a folder given as the annotation file
    with pytest.raises(FileNotFoundError, match=r"annotation file '.*' is a folder, not a file"):
        register_coco_dataset("json_is_folder", str(tmp_path), str(tmp_path))


def test_a_coco_json_whose_references_resolve_registers_with_its_class_names(tmp_path):
    name = "good_refs"
    path = _coco_with(tmp_path, annotations=[_ANN, dict(_ANN, id=5, category_id=7)])
    assert register_coco_dataset(name, path, str(tmp_path)) == ["x", "y"]
    assert [a["category_id"] for a in DatasetCatalog.get(name)[0]["annotations"]] == [0, 1]


# ---- images ----------------------------------------------------------------------------------
def _mapper(tiny_cfg, is_train, size=48, skip=False):
    cfg = tiny_cfg.clone()
    cfg.merge_from_list(["INPUT.MIN_SIZE_TEST", size, "INPUT.MAX_SIZE_TEST", size,
                         "MODEL.RETINA_FOCAL.SKIP_UNREADABLE_IMAGES", skip])
    return RobustDatasetMapper(cfg, is_train)


def test_grayscale_rgba_palette_and_16bit_images_read_as_their_8bit_bgr(tiny_cfg, tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (48, 48), dtype=np.uint8)
    bgr = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    files = {}
    files["gray8"] = (gray, np.repeat(gray[:, :, None], 3, 2))
    files["gray16"] = (gray.astype(np.uint16) * 257, np.repeat(gray[:, :, None], 3, 2))
    files["bgra"] = (np.dstack([bgr, rng.integers(0, 256, (48, 48), dtype=np.uint8)]), bgr)
    mapper = _mapper(tiny_cfg, is_train=False)
    for name, (pixels, expected) in files.items():
        path = str(tmp_path / f"{name}.png")
        assert cv2.imwrite(path, pixels)
        out = mapper({"file_name": path, "width": 48, "height": 48, "image_id": name})
        got = out["image"].permute(1, 2, 0).numpy()
        assert got.shape == (48, 48, 3) and np.array_equal(got, expected), name
    # palette image: PIL's own RGB conversion is the reference
    pal = Image.fromarray(bgr[:, :, ::-1].copy()).convert("P")
    pal.save(tmp_path / "pal.png")
    out = mapper({"file_name": str(tmp_path / "pal.png"), "width": 48, "height": 48})
    ref = np.asarray(pal.convert("RGB"))[:, :, ::-1]
    assert np.array_equal(out["image"].permute(1, 2, 0).numpy(), ref)
    # the 16-bit file really is 16-bit, and Detectron2's reader would saturate it
    from detectron2.data.detection_utils import read_image

    assert Image.open(tmp_path / "gray16.png").mode.startswith("I")
    assert (read_image(str(tmp_path / "gray16.png"), "BGR") == 255).mean() > 0.9


def test_16bit_images_scale_by_1_over_257_rounded(tiny_cfg, tmp_path):
    """Values that are not multiples of 257, so that truncation, saturation or a /256 scale
    would each give another byte somewhere."""
    values = [0, 1, 128, 129, 300, 385, 386, 32767, 32768, 65278, 65534, 65535]
    pixels = np.tile(np.array(values, dtype=np.uint16), (12, 1))  # (12, 12)
    path = str(tmp_path / "ramp16.png")
    assert cv2.imwrite(path, pixels)
    assert Image.open(path).mode.startswith("I")
    got = read_image_any(path, "BGR")
    expected = np.array([int(v / 257 + 0.5) for v in values], dtype=np.uint8)  # no ties: 257 odd
    assert got.shape == (12, len(values), 3) and got.dtype == np.uint8
    for c in range(3):
        assert got[:, :, c].tolist() == [expected.tolist()] * 12
    assert expected.tolist() == [0, 0, 0, 1, 1, 1, 2, 127, 128, 254, 255, 255]
    out = _mapper(tiny_cfg, is_train=False, size=12)(
        {"file_name": path, "width": len(values), "height": 12, "image_id": "ramp16"})
    assert out["image"].shape == (3, 12, len(values))
    assert out["image"][0].tolist() == [expected.tolist()] * 12


def _write_tiny_coco(root, n=4, corrupt=(), missing=()):
    """n 48x48 PNG images with one box each; images in ``corrupt`` are truncated files and
    those in ``missing`` are absent."""
    os.makedirs(root, exist_ok=True)
    images, annos = [], []
    for i in range(n):
        name = f"{i}.png"
        if i not in missing:
            img = np.full((48, 48, 3), 40 * i, np.uint8)
            cv2.imwrite(os.path.join(root, name), img)
            if i in corrupt:
                data = open(os.path.join(root, name), "rb").read()
                open(os.path.join(root, name), "wb").write(data[: len(data) // 2])
        images.append({"id": i + 1, "file_name": name, "width": 48, "height": 48})
        annos.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [8, 8, 20, 20],
                      "area": 400, "iscrowd": 0})
    coco = {"images": images, "annotations": annos, "categories": [{"id": 1, "name": "a"}]}
    json_path = os.path.join(root, "data.json")
    with open(json_path, "w") as f:
        json.dump(coco, f)
    return json_path


def test_skip_option_must_be_a_bool(tiny_cfg):
    cfg = tiny_cfg.clone()
    cfg.MODEL.RETINA_FOCAL.SKIP_UNREADABLE_IMAGES = "yes"
    with pytest.raises(ValueError, match="SKIP_UNREADABLE_IMAGES='yes' is invalid"):
        RobustDatasetMapper(cfg, True)


def test_missing_or_corrupt_image_error_names_the_file(tiny_cfg, tmp_path):
    _write_tiny_coco(str(tmp_path), n=2, corrupt=(0,), missing=(1,))
    for is_train in (True, False):
        mapper = _mapper(tiny_cfg, is_train)
        for name in ("0.png", "1.png"):
            path = str(tmp_path / name)
            with pytest.raises(UnreadableImageError, match=path):
                mapper({"file_name": path, "width": 48, "height": 48, "annotations": []})


def test_skip_unreadable_images_in_training_with_a_logged_count(tiny_cfg, tmp_path, caplog):
    from detectron2.data.datasets import load_coco_json

    from retina_focal.data.build import build_resumable_train_loader

    dicts = load_coco_json(_write_tiny_coco(str(tmp_path), n=4, corrupt=(1,), missing=(2,)),
                           str(tmp_path), "skip_test")
    cfg = tiny_cfg.clone()
    cfg.merge_from_list(["MODEL.RETINA_FOCAL.SKIP_UNREADABLE_IMAGES", True, "SEED", 0,
                         "SOLVER.IMS_PER_BATCH", 2, "INPUT.MIN_SIZE_TRAIN", (48,)])
    loader = build_resumable_train_loader(cfg, dataset=dicts)
    with caplog.at_level(logging.WARNING, logger="retina_focal"):
        it = iter(loader)
        seen = [d["file_name"] for _ in range(6) for d in next(it)]
    assert len(seen) == 12 and {os.path.basename(f) for f in seen} == {"0.png", "3.png"}
    skips = [r.getMessage() for r in caplog.records if "Skipping an unreadable" in r.getMessage()]
    assert skips and "(1 so far" in skips[0] and f"({len(skips)} so far" in skips[-1]
    assert any("1.png" in m for m in skips) and any("2.png" in m for m in skips)


def test_evaluation_never_skips_an_unreadable_image_even_with_the_skip_option(tiny_cfg,
                                                                              tmp_path):
    """The test loader (what evaluation iterates) raises naming the file, with
    SKIP_UNREADABLE_IMAGES True, at the first unreadable image, which it does not pass over."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    from retina_focal.engine.defaults import Trainer

    root = str(tmp_path / "data")
    json_path = _write_tiny_coco(root, n=3, corrupt=(1,))
    name = "never_skip_in_evaluation_test"
    register_coco_instances(name, {}, json_path, root)
    try:
        cfg = tiny_cfg.clone()
        cfg.merge_from_list(["MODEL.RETINA_FOCAL.SKIP_UNREADABLE_IMAGES", True,
                             "DATALOADER.NUM_WORKERS", 0, "INPUT.MIN_SIZE_TEST", 48])
        loader = Trainer.build_test_loader(cfg, name)
        seen = []
        with pytest.raises(UnreadableImageError, match=os.path.join(root, "1.png")) as info:
            for inputs in loader:
                seen.extend(os.path.basename(d["file_name"]) for d in inputs)
        assert seen == ["0.png"]  # stopped at 1.png: nothing after it was evaluated
        assert "SKIP_UNREADABLE_IMAGES" not in str(info.value)  # no hint: it cannot be skipped
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


_TRAIN_ON_COCO = textwrap.dedent("""
    import sys
    from detectron2.data.datasets import register_coco_instances
    import retina_focal
    from retina_focal.engine.defaults import Trainer, setup_cfg
    from detectron2.engine import default_argument_parser

    register_coco_instances("corrupt_test", {}, sys.argv[1], sys.argv[2])
    args = default_argument_parser().parse_args(sys.argv[3:])
    trainer = Trainer(setup_cfg(args.config_file, args.opts))
    trainer.resume_or_load(resume=False)
    trainer.train()
""")


def test_training_on_a_corrupt_image_stops_naming_it_real_process(tmp_path):
    root = str(tmp_path / "data")
    json_path = _write_tiny_coco(root, n=2, corrupt=(0, 1))
    proc = subprocess.run(
        [sys.executable, "-c", _TRAIN_ON_COCO, json_path, root, "--config-file", TINY_CONFIG,
         "DATASETS.TRAIN", "('corrupt_test',)", "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "1",
         "MODEL.RETINANET.NUM_CLASSES", "1", "OUTPUT_DIR", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "UnreadableImageError: Cannot read image" in last
    assert os.path.join(root, "0.png") in last or os.path.join(root, "1.png") in last
    assert "SKIP_UNREADABLE_IMAGES" in last


# ---- checkpoints -----------------------------------------------------------------------------
@pytest.fixture
def tiny_model(tiny_cfg):
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    return build_model(tiny_cfg)


def test_missing_checkpoint_file_is_named(tiny_model, tmp_path):
    path = str(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth.*does not exist"):
        RetinaFocalCheckpointer(tiny_model).load(path)


def test_checkpoint_of_another_architecture_lists_what_did_not_match(tiny_model, tmp_path):
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    torch.save({"model": other.state_dict()}, tmp_path / "other.pth")
    with pytest.raises(ValueError) as info:
        RetinaFocalCheckpointer(tiny_model).load(str(tmp_path / "other.pth"))
    msg = str(info.value)
    assert "none of the model's" in msg
    assert "in the checkpoint but not in the model (7)" in msg and "0.weight" in msg
    assert "in the model but not in the checkpoint" in msg and "head.cls_score" in msg


def test_partial_checkpoint_loads_what_fits_and_warns(tiny_cfg, tiny_model, tmp_path, caplog):
    from detectron2.modeling import build_model

    cfg = tiny_cfg.clone()
    cfg.MODEL.RETINANET.NUM_CLASSES = 3  # another class count: only cls_score differs
    other = build_model(cfg)
    torch.save({"model": other.state_dict()}, tmp_path / "c3.pth")
    with caplog.at_level(logging.WARNING):
        RetinaFocalCheckpointer(tiny_model).load(str(tmp_path / "c3.pth"))
    sd, ref = tiny_model.state_dict(), other.state_dict()
    assert torch.equal(sd["head.bbox_pred.weight"], ref["head.bbox_pred.weight"])
    assert sd["head.cls_score.weight"].shape != ref["head.cls_score.weight"].shape
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "different shapes (2): head.cls_score.weight" in text
    # resuming demands an exact match
    torch.save({"model": other.state_dict(), "iteration": 5}, tmp_path / "model_0000005.pth")
    (tmp_path / "last_checkpoint").write_text("model_0000005.pth")
    with pytest.raises(ValueError, match="Cannot resume"):
        RetinaFocalCheckpointer(tiny_model, str(tmp_path)).resume_or_load("", resume=True)


def test_truncated_checkpoint_gives_a_clear_error_real_process(tiny_model, tmp_path):
    full = tmp_path / "full.pth"
    torch.save({"model": tiny_model.state_dict()}, full)
    data = full.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 3])
    proc = run_tool(["tools/train_net.py", "--config-file", TINY_CONFIG, "--eval-only",
                     "MODEL.WEIGHTS", str(tmp_path / "cut.pth"), "OUTPUT_DIR",
                     str(tmp_path / "out")], cwd=REPO)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "cut.pth" in last and "truncated or corrupt" in last, proc.stderr[-2000:]


# ---- config ----------------------------------------------------------------------------------
def get_cfg_with_ours():
    from detectron2.config import get_cfg

    from retina_focal import add_retina_focal_config

    cfg = get_cfg()
    add_retina_focal_config(cfg)
    return cfg


def test_yaml_with_an_unknown_key_fails_naming_the_file_key_and_closest_keys(tmp_path):
    from detectron2.config import get_cfg

    from retina_focal import add_retina_focal_config
    from retina_focal.config.loading import ConfigError, merge_yaml_config

    path = tmp_path / "bad.yaml"
    path.write_text(f'_BASE_: "{TINY_CONFIG}"\nMODEL:\n  RETINA_FOCAL:\n    LOSS_NAMEE: "x"\n')
    cfg = get_cfg()
    add_retina_focal_config(cfg)
    with pytest.raises(KeyError, match="Non-existent config key: MODEL.RETINA_FOCAL.LOSS_NAMEE"):
        cfg.merge_from_file(str(path))  # Detectron2's own error
    with pytest.raises(ConfigError, match=rf"^{path}: unknown config key "
                                          r"MODEL\.RETINA_FOCAL\.LOSS_NAMEE\. Did you mean "
                                          r"MODEL\.RETINA_FOCAL\.LOSS_NAME\b"):
        merge_yaml_config(get_cfg_with_ours(), str(path))
