"""The embedded synthetic dataset: deterministic, tight boxes, imbalanced, registered."""
import filecmp
import json
import os
from collections import Counter

import numpy as np
import pytest
from conftest import CONFIGS
from detectron2.data import DatasetCatalog, MetadataCatalog

from retina_focal.data import CLASS_NAMES, SyntheticConfig, generate_image, write_split
from retina_focal.data.datasets.synthetic import _background

SMALL = SyntheticConfig(num_train=40, num_val=10, seed=3)


def test_generating_twice_gives_identical_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        write_split(SMALL, "val", str(root), progress=False)
    names = sorted(os.listdir(a / "val"))
    assert len(names) == SMALL.num_val
    match, mismatch, errors = filecmp.cmpfiles(a / "val", b / "val", names, shallow=False)
    assert not mismatch and not errors
    assert (a / "val.json").read_bytes() == (b / "val.json").read_bytes()
    other = SyntheticConfig(num_train=40, num_val=10, seed=4)
    image, other_image = generate_image(SMALL, "val", 0)[0], generate_image(other, "val", 0)[0]
    assert not np.array_equal(image, other_image)


def test_parallel_generation_writes_the_same_bytes(tmp_path):
    # 3 worker processes over 40 images (chunks arrive out of order): the files and the JSON
    # (image and annotation ids) equal those drawn in this process
    one, many = tmp_path / "one", tmp_path / "many"
    write_split(SMALL, "train", str(one), progress=False, workers=1)
    write_split(SMALL, "train", str(many), progress=False, workers=3)
    names = sorted(os.listdir(one / "train"))
    assert len(names) == SMALL.num_train
    match, mismatch, errors = filecmp.cmpfiles(one / "train", many / "train", names,
                                               shallow=False)
    assert not mismatch and not errors
    assert (one / "train.json").read_bytes() == (many / "train.json").read_bytes()


def test_statistics_make_it_a_fair_dense_detection_test():
    cfg = SyntheticConfig(seed=1)
    counts, sides, per_image = Counter(), [], []
    for i in range(150):
        img, objects = generate_image(cfg, "train", i)
        assert img.shape == (256, 256, 3) and img.dtype == np.uint8
        per_image.append(len(objects))
        for o in objects:
            counts[o["category_id"]] += 1
            sides.append(max(o["bbox"][2], o["bbox"][3]))
    assert len(CLASS_NAMES) >= 5 and set(counts) == set(range(len(CLASS_NAMES)))
    assert max(counts.values()) >= 4 * min(counts.values())  # designed ratio 6 (sampling noise)
    assert min(sides) <= 16 and max(sides) >= 100 and min(sides) >= 10 and max(sides) <= 130
    assert max(per_image) >= 6


def boxes_overlap(a, b):
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def test_boxes_are_tight_and_objects_overlap():
    """Each box edge row/column holds drawn pixels: compare with the background alone."""
    cfg = SyntheticConfig(seed=2)
    overlapping = 0
    for i in range(30):
        img, objects = generate_image(cfg, "train", i)
        rng = np.random.default_rng([cfg.seed, 1, i])  # same stream: background comes first
        bg = _background(rng, *cfg.image_size, cfg.num_clutter)
        changed = np.any(img != bg, axis=2)
        for o in objects:
            x, y, w, h = o["bbox"]
            assert w >= 1 and h >= 1 and x >= 0 and y >= 0
            assert x + w <= img.shape[1] and y + h <= img.shape[0]
            box = changed[y:y + h, x:x + w]
            assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()
        overlapping += sum(boxes_overlap(a["bbox"], b["bbox"])
                           for j, a in enumerate(objects) for b in objects[j + 1:])
    assert overlapping > 0


def test_registered_through_detectron2_coco_loader():
    dicts = DatasetCatalog.get("synthetic_shapes_tiny_val")
    meta = MetadataCatalog.get("synthetic_shapes_tiny_val")
    assert len(dicts) == 8 and meta.thing_classes == list(CLASS_NAMES)
    assert meta.evaluator_type == "coco" and os.path.exists(meta.json_file)
    with open(meta.json_file) as f:
        coco = json.load(f)
    assert len(coco["images"]) == 8
    for d in dicts:
        assert os.path.exists(d["file_name"])
        for a in d["annotations"]:
            assert 0 <= a["category_id"] < len(CLASS_NAMES)


@pytest.mark.parametrize("field,value", [("min_size", 1.0), ("max_size", 1000.0),
                                         ("max_occlusion", 1.0), ("num_train", -1),
                                         ("num_distractors", -1)])
def test_bad_dataset_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SyntheticConfig(**{field: value})


def test_distractors_are_object_like_shapes_that_leave_the_default_unchanged():
    """Issue 27: ``num_distractors`` draws saturated, object-sized polygons of no class after
    the background; with 0 (the default) nothing of the default dataset changes, its cache
    directory included."""
    import dataclasses

    import cv2

    # the default dataset's cache name, as before the field existed
    assert SyntheticConfig().fingerprint() == "365cfbd41e"
    assert SyntheticConfig(num_distractors=2).fingerprint() != "365cfbd41e"
    empty = SyntheticConfig(min_objects=0, max_objects=0, num_clutter=0, min_size=16.0,
                            max_size=48.0)
    for index in range(3):
        plain, no_objects = generate_image(empty, "val", index)
        drawn, still_none = generate_image(dataclasses.replace(empty, num_distractors=3),
                                           "val", index)
        assert no_objects == still_none == []  # distractors are no ground truth
        changed = np.any(plain != drawn, axis=2)
        # the same background (drawn first); only the distractors' pixels differ
        assert 0 < changed.sum() <= 3 * 48 ** 2
        count, _, stats, _ = cv2.connectedComponentsWithStats(changed.astype(np.uint8))
        sides = stats[1:, [cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT]].max(axis=1)
        assert sides.max() <= 48 + 2 and sides.max() >= 16 * 0.3


def test_imbalance_presets_raise_the_negatives_per_positive_anchor():
    """Issue 27: each imbalance preset has more negative anchors per positive than the one
    before (measured here on 24 validation images of each, with the synthetic config's
    anchors and assigner), on the same 256x256 images."""
    import dataclasses

    from retina_focal.analysis.imbalance import imbalance_row
    from retina_focal.analysis.settings import AssignmentSetting, load_cfg
    from retina_focal.data import IMBALANCE_PRESETS

    names = list(IMBALANCE_PRESETS)
    assert names == ["synthetic_shapes", "synthetic_shapes_sparse", "synthetic_shapes_sparser",
                     "synthetic_shapes_sparsest"]
    assert IMBALANCE_PRESETS["synthetic_shapes"] == SyntheticConfig()
    for name in names:
        assert name + "_train" in DatasetCatalog.list() and name + "_val" in DatasetCatalog.list()
        assert MetadataCatalog.get(name + "_val").synthetic_config == IMBALANCE_PRESETS[name]
    config = os.path.join(CONFIGS, "Synthetic", "retina_focal_R_18_FPN_synthetic.yaml")
    setting = AssignmentSetting(load_cfg(config, []))
    ratios = []
    for name in names:
        preset = IMBALANCE_PRESETS[name]
        assert preset.image_size == (256, 256) and preset.num_train == 1200
        records = []
        for index in range(24):
            _, objects = generate_image(dataclasses.replace(preset, num_val=24), "val", index)
            anns = [{"bbox": o["bbox"], "bbox_mode": 1, "category_id": o["category_id"],
                     "iscrowd": 0} for o in objects]
            records.append(setting.analyze({"height": 256, "width": 256, "annotations": anns}))
        ratios.append(imbalance_row(records, 6)["negatives_per_positive"])
    assert ratios == sorted(ratios) and ratios[-1] > 5 * ratios[0], ratios
