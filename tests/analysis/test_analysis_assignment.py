"""The assignment statistics and tools/analyze_assignment.py, checked against Detectron2's own
data path, backbone and anchor generator and a direct call of the assigner."""
import copy
import json
import os

import numpy as np
import pytest
import torch
from conftest import REPO, TINY_CONFIG, run_tool
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.structures import ImageList, pairwise_iou
from PIL import Image

from retina_focal.analysis import (
    feature_grid_sizes,
    resized_image_size,
    size_bucket,
    summarize,
)

RESIZE = ["INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "112"]
COMPARE = {
    "B": ["MODEL.RETINA_FOCAL.ASSIGNER_NAME", "ATSSAssigner"],
    "C": ["MODEL.RETINA_FOCAL.ALLOW_LOW_QUALITY_MATCHES", "False"],
}


def test_size_buckets_are_cocos():
    assert size_bucket(0.0) == "small" and size_bucket(32 ** 2 - 0.01) == "small"
    assert size_bucket(32 ** 2) == "medium" and size_bucket(96 ** 2 - 0.01) == "medium"
    assert size_bucket(96 ** 2) == "large"
    with pytest.raises(ValueError, match="area"):
        size_bucket(float("nan"))


@pytest.mark.parametrize("hw", [(128, 128), (100, 130), (77, 45)])
def test_grid_sizes_equal_the_backbones_feature_maps(tiny_cfg, hw):
    model = build_model(tiny_cfg).eval()
    images = ImageList.from_tensors([torch.zeros(3, *hw)], model.backbone.size_divisibility)
    with torch.no_grad():
        feats = model.backbone(images.tensor)
    real = [tuple(feats[f].shape[-2:]) for f in model.head_in_features]
    strides = [model.backbone.output_shape()[f].stride for f in model.head_in_features]
    assert feature_grid_sizes(hw, strides, model.backbone.size_divisibility) == real


@pytest.mark.parametrize("hw,short,longest", [((480, 640), 200, 1000), ((480, 640), 200, 250),
                                              ((33, 100), 64, 64), ((50, 60), 0, 100)])
def test_resized_size_equals_detectron2s_transform(hw, short, longest):
    image = np.zeros((*hw, 3), dtype=np.uint8)
    out = T.ResizeShortestEdge(short, longest).get_transform(image).apply_image(image) \
        if short else image
    assert resized_image_size(*hw, short, longest) == out.shape[:2]


def test_summarize_counts_by_hand():
    records = [
        {"num_positive": 3, "num_negative": 10, "num_ignored": 1, "gt_class": [0, 1],
         "gt_area": [100.0, 5000.0], "gt_positives": [3, 0], "gt_best_iou": [0.72, 0.31],
         "gt_best_level": [0, 1]},
        {"num_positive": 0, "num_negative": 14, "num_ignored": 0, "gt_class": [], "gt_area": [],
         "gt_positives": [], "gt_best_iou": [], "gt_best_level": []},
        {"num_positive": 0, "num_negative": 13, "num_ignored": 1, "gt_class": [1],
         "gt_area": [20000.0], "gt_positives": [0], "gt_best_iou": [0.45],
         "gt_best_level": [1]},
    ]
    s = summarize(records, ["a", "b"], ["p3", "p4"], iou_bins=10)
    assert s["num_images"] == 3 and s["num_gt"] == 3
    assert s["per_image"]["positive"]["mean"] == 1.0
    assert s["per_image"]["ignored"]["p50"] == 1.0
    assert s["zero_positive"] == {"count": 2, "share": 2 / 3}
    assert s["zero_positive_by_size"]["small"] == {"num_gt": 1, "zero": 0, "share": 0.0}
    assert s["zero_positive_by_size"]["medium"] == {"num_gt": 1, "zero": 1, "share": 1.0}
    assert s["zero_positive_by_size"]["large"] == {"num_gt": 1, "zero": 1, "share": 1.0}
    assert s["zero_positive_by_class"]["b"]["share"] == 1.0
    assert s["zero_positive_by_level"]["p3"]["share"] == 0.0
    assert s["best_iou"]["histogram"]["counts"] == [0, 0, 0, 1, 1, 0, 0, 1, 0, 0]
    assert s["positives_per_gt"]["histogram"]["counts"][:4] == [2, 0, 0, 1]


def reference_count(cfg, model, d):
    """One image through Detectron2's own data path, backbone, anchor generator, then the
    model's own labelling of its anchors (``label_anchors``: its assigner, class labels and
    matched boxes); returns counts and per-gt positives and best IoU."""
    image = utils.read_image(d["file_name"], format="BGR")
    tfm = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST) \
        .get_transform(image)
    image = tfm.apply_image(image)
    annos = [utils.transform_instance_annotations(copy.deepcopy(a), T.TransformList([tfm]),
                                                  image.shape[:2])
             for a in d["annotations"] if not a.get("iscrowd", 0)]  # it edits in place
    inst = utils.filter_empty_instances(utils.annotations_to_instances(annos, image.shape[:2]))
    images = ImageList.from_tensors([torch.as_tensor(image.transpose(2, 0, 1).copy()).float()],
                                    model.backbone.size_divisibility)
    with torch.no_grad():
        feats = model.backbone(images.tensor)
        anchors = model.anchor_generator([feats[f] for f in model.head_in_features])
        (labels,), (matched,) = model.label_anchors(anchors, [inst])
    k = model.num_classes
    pos = (labels >= 0) & (labels < k)
    gt = inst.gt_boxes.tensor
    per_gt = [0] * len(gt)
    for box in matched[pos]:
        per_gt[int((gt == box).all(dim=1).nonzero()[0])] += 1
    best = pairwise_iou(inst.gt_boxes, type(inst.gt_boxes).cat(anchors)).max(dim=1).values
    return {"num_positive": int(pos.sum()), "num_negative": int((labels == k).sum()),
            "num_ignored": int((labels == -1).sum()), "gt_positives": per_gt,
            "gt_best_iou": best.tolist()}


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis")
    DatasetCatalog.get("synthetic_shapes_tiny_val")  # generates the files
    meta = MetadataCatalog.get("synthetic_shapes_tiny_val")
    spec = f"mytiny={meta.json_file}:{meta.image_root}"
    args = ["tools/analyze_assignment.py", "--config-file", TINY_CONFIG, "--dataset", spec,
            "--output", str(out)] + RESIZE
    for opts in COMPARE.values():
        args += ["--compare", TINY_CONFIG] + RESIZE + opts
    proc = run_tool(args, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "assignment.json") as f:
        return out, proc.stdout, json.load(f)


def test_tool_json_agrees_with_a_direct_count(analysis, tiny_cfg):
    out, stdout, result = analysis
    assert result["dataset"] == "mytiny"
    assert [s["name"] for s in result["settings"]] == ["A", "B", "C"]
    dicts = DatasetCatalog.get("synthetic_shapes_tiny_val")  # the same JSON file
    for setting in result["settings"]:
        assert len(setting["images"]) == len(dicts) == setting["summary"]["num_images"]
    checked = 0
    for name, opts in [("A", []), ("B", COMPARE["B"]), ("C", COMPARE["C"])]:
        cfg = tiny_cfg.clone()
        cfg.merge_from_list(RESIZE + opts)
        setting = next(s for s in result["settings"] if s["name"] == name)
        model = build_model(cfg).eval()
        for index in (0, 3):
            d = dicts[index]
            if not d["annotations"]:
                continue
            rec = setting["images"][index]
            assert rec["file_name"] == os.path.basename(d["file_name"])
            assert rec["image_size"] == [96, 96]
            ref = reference_count(cfg, model, d)
            for key in ("num_positive", "num_negative", "num_ignored", "gt_positives"):
                assert rec[key] == ref[key], (name, index, key)
            assert rec["gt_best_iou"] == pytest.approx(ref["gt_best_iou"], abs=1e-6)
            checked += 1
    assert checked >= 3


def test_tool_summaries_are_consistent(analysis):
    out, stdout, result = analysis
    by_name = {s["name"]: s for s in result["settings"]}
    for s in result["settings"]:
        summ, images = s["summary"], s["images"]
        gt_pos = [p for r in images for p in r["gt_positives"]]
        assert summ["num_gt"] == len(gt_pos) > 0
        assert summ["zero_positive"]["count"] == sum(p == 0 for p in gt_pos)
        assert summ["per_image"]["positive"]["mean"] == pytest.approx(
            np.mean([r["num_positive"] for r in images]))
        for group in ("size", "class", "level"):
            entries = summ[f"zero_positive_by_{group}"].values()
            assert sum(e["num_gt"] for e in entries) == summ["num_gt"]
            assert sum(e["zero"] for e in entries) == summ["zero_positive"]["count"]
        assert sum(summ["best_iou"]["histogram"]["counts"]) == summ["num_gt"]
        assert sum(summ["positives_per_gt"]["histogram"]["counts"]) == summ["num_gt"]
        # every image has the same number of anchors
        totals = {r["num_positive"] + r["num_negative"] + r["num_ignored"] for r in images}
        assert len(totals) == 1
    assert by_name["B"]["summary"]["per_image"]["ignored"]["max"] == 0  # ATSS ignores nothing
    assert "ATSSAssigner" in by_name["B"]["assigner"]
    # without low-quality matches, fewer positives and at least as many objects left without
    a, c = by_name["A"]["summary"], by_name["C"]["summary"]
    assert c["per_image"]["positive"]["mean"] <= a["per_image"]["positive"]["mean"]
    assert c["zero_positive"]["count"] >= a["zero_positive"]["count"]
    assert "gt with 0 positives" in stdout and "| A " in stdout.replace("|  A", "| A")


def test_tool_pngs_are_real_plots(analysis):
    out, _, _ = analysis
    for name in ("best_iou_hist.png", "zero_positive_share.png", "positives_per_gt.png",
                 "anchors_per_image.png"):
        path = out / name
        assert path.stat().st_size > 10_000, name
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
        assert arr.shape[0] >= 300 and arr.shape[1] >= 600
        assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 20  # drawn, not blank
        assert (arr < 128).any(axis=2).mean() > 0.005


@pytest.mark.parametrize("spec,fragment", [
    ("nojson", "expected NAME=JSON:IMAGE_DIR"),
    ("x={tmp}/missing.json:{tmp}", "missing.json' does not exist"),
    ("x={tmp}/a.json:{tmp}/nodir", "nodir' does not exist"),
])
def test_bad_dataset_argument_is_explained(tmp_path, spec, fragment):
    from retina_focal.analysis.settings import register_dataset_arg

    (tmp_path / "a.json").write_text("{}")
    with pytest.raises((ValueError, FileNotFoundError), match=fragment):
        register_dataset_arg(spec.format(tmp=tmp_path))


def test_a_compare_without_a_config_is_one_error_line(tmp_path):
    """`analyze ... --compare` with nothing after it ends like every other bad option: one
    `error:` line, status 1, nothing written."""
    from retina_focal.cli import analyze

    with pytest.raises(SystemExit, match=r"^error: --compare needs a config file"):
        analyze.run(["--config-file", TINY_CONFIG, "--output", str(tmp_path / "out"),
                     "--compare"])
    assert not (tmp_path / "out").exists()


def test_anchor_count_is_the_anchor_generators():
    """RetinaNet's anchor count of a padded image, against the anchors the paper's RetinaNet
    config's own anchor generator makes for it (and by hand: P3-P7 of 800x1344 are 100x168 +
    50x84 + 25x42 + 13x21 + 7x11 locations)."""
    from retina_focal.analysis.assignment import anchor_count
    from retina_focal.analysis.settings import AssignmentSetting, load_cfg

    config = os.path.join(REPO, "configs", "COCO-Detection", "retina_focal_R_50_FPN_1x.yaml")
    setting = AssignmentSetting(load_cfg(config, []))
    for size in ((800, 1344), (512, 640), (96, 160)):
        assert anchor_count(*size) == sum(len(b) for b in setting.anchors(size))
    assert anchor_count(800, 1344) == 9 * (16800 + 4200 + 1050 + 273 + 77)
    assert anchor_count(800, 1344, images=2) == 2 * anchor_count(800, 1344)
