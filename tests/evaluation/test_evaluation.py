"""The COCO report (retina_focal.evaluation.coco_report) against pycocotools itself, on
hand-made data."""
import json

import numpy as np
import pytest
from helpers import CLASSES, assert_png, make_gt, noisy_detections, pycocotools_stats

from retina_focal.evaluation import REPORT_FILE, evaluate_results_file


def test_report_matches_pycocotools(tmp_path):
    gt, gt_path = make_gt(tmp_path)
    dets = noisy_detections(gt)
    res_path = tmp_path / "dets.json"
    res_path.write_text(json.dumps(dets))
    report = evaluate_results_file(str(res_path), gt_path, output_dir=str(tmp_path / "out"))

    stats = pycocotools_stats(gt_path, dets)
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
             "ARl"]
    for name, s in zip(names, stats):
        if s < 0:
            assert report["metrics"][name] is None, name
        else:
            assert report["metrics"][name] == pytest.approx(s * 100, abs=1e-9), name
    assert 0 < report["metrics"]["AP"] < 100

    # per category: pycocotools evaluating that category alone is the reference
    rows = {r["name"]: r for r in report["per_category"]}
    assert set(rows) == set(CLASSES)
    for cid, name in zip((3, 7), CLASSES):
        ref = pycocotools_stats(gt_path, dets, cat_ids=[cid])
        assert rows[name]["AP"] == pytest.approx(ref[0] * 100, abs=1e-9)
        assert rows[name]["AP50"] == pytest.approx(ref[1] * 100, abs=1e-9)
        assert rows[name]["AP75"] == pytest.approx(ref[2] * 100, abs=1e-9)
        assert rows[name]["num_gt"] == sum(a["category_id"] == cid for a in gt["annotations"])
    assert rows["bird"]["AP"] is None and rows["bird"]["num_gt"] == 0
    aps = [r["AP"] for r in report["per_category"]]
    assert aps[-1] is None and aps[:-1] == sorted(aps[:-1], reverse=True)  # sorted, NaN last
    assert "bird" in report["tables"]["per_category"]

    # the class-mean PR curve at IoU .50:.95 integrates (101-point mean) to AP
    curves = report["pr_curves"]
    assert len(curves["recall"]) == 101
    mean = np.array(curves["iou50-95"]["all"]["mean"], dtype=float)
    assert np.nanmean(mean) * 100 == pytest.approx(report["metrics"]["AP"], rel=1e-6)
    ap50 = np.array(curves["iou50"]["all"]["mean"], dtype=float)
    assert np.nanmean(ap50) * 100 == pytest.approx(report["metrics"]["AP50"], rel=1e-6)
    assert set(curves["iou75"]) == {"all", "small", "medium", "large"}

    # files: the JSON parses (no NaN tokens) and holds everything; PNGs are real images
    saved = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    assert saved["metrics"] == report["metrics"]
    assert saved["counts"] == {"images": 4, "categories": 3, "ground_truth": 12,
                               "detections": len(dets)}
    pngs = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert pngs == sorted(["pr_iou50.png", "pr_iou75.png", "pr_iou50-95.png", "pr_area_all.png",
                           "pr_area_small.png", "pr_area_medium.png", "pr_area_large.png"])
    for name in pngs:
        assert_png(tmp_path / "out" / name, min_size=(500, 400))


def test_perfect_and_empty_detections(tmp_path):
    gt, gt_path = make_gt(tmp_path)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                "score": 0.9} for a in gt["annotations"]]
    path = tmp_path / "perfect.json"
    path.write_text(json.dumps(perfect))
    report = evaluate_results_file(str(path), gt_path)
    assert report["metrics"]["AP"] == pytest.approx(100.0)
    assert all(p == 1.0 for p in report["pr_curves"]["iou75"]["all"]["mean"])

    path.write_text("[]")  # no detection at all: AP 0, not a crash
    report = evaluate_results_file(str(path), gt_path)
    assert report["metrics"]["AP"] == 0.0 and report["counts"]["detections"] == 0


def test_results_with_unknown_ids_are_named(tmp_path):
    gt, gt_path = make_gt(tmp_path)
    dets = noisy_detections(gt)
    path = tmp_path / "bad.json"

    path.write_text(json.dumps(dets + [dict(dets[0], image_id=4242), dict(dets[1], image_id=77)]))
    with pytest.raises(ValueError, match=r"image_id 77, 4242 not in .*gt\.json.*10, 11, 12, 13"):
        evaluate_results_file(str(path), gt_path)

    path.write_text(json.dumps(dets + [dict(dets[0], category_id=1)]))
    with pytest.raises(ValueError, match=r"category_id 1 not in .*category ids are 3, 7, 9"):
        evaluate_results_file(str(path), gt_path)

    path.write_text(json.dumps([{"image_id": 10, "bbox": [0, 0, 1, 1], "score": 1.0}]))
    with pytest.raises(ValueError, match=r"detection #0 lacks \['category_id'\]"):
        evaluate_results_file(str(path), gt_path)

    with pytest.raises(FileNotFoundError, match="nope.json"):
        evaluate_results_file(str(tmp_path / "nope.json"), gt_path)
