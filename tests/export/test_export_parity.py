"""The parity check of exported models: detections whose scores tie may come in either order,
any other difference is reported."""
import os

import pytest
import torch
from detectron2.structures import Boxes, Instances

from retina_focal.export.parity import compare_instances


def _instances(boxes, scores, classes):
    inst = Instances((64, 64))
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.scores = torch.tensor(scores)
    inst.pred_classes = torch.tensor(classes)
    return inst


BOXES = [[1.0, 2.0, 20.0, 30.0], [30.0, 5.0, 50.0, 40.0], [8.0, 8.0, 16.0, 16.0]]


def test_tied_scores_in_the_other_order_are_the_same_detections():
    eager = _instances(BOXES, [0.9, 0.5, 0.5], [1, 2, 2])
    swapped = _instances([BOXES[0], BOXES[2], BOXES[1]], [0.9, 0.5, 0.5 + 1e-6], [1, 2, 2])
    diff = compare_instances(eager, swapped)
    assert diff["same"] and diff["same_classes"] and diff["max_box_difference"] == 0.0


def test_a_swap_without_a_tie_or_a_moved_box_is_a_difference():
    eager = _instances(BOXES, [0.9, 0.6, 0.5], [1, 2, 2])
    swapped = _instances([BOXES[0], BOXES[2], BOXES[1]], [0.9, 0.6, 0.5], [1, 2, 2])
    assert not compare_instances(eager, swapped)["same"]
    moved = _instances([BOXES[0], BOXES[1], [8.0, 8.0, 16.0, 17.0]], [0.9, 0.5, 0.5], [1, 2, 2])
    diff = compare_instances(_instances(BOXES, [0.9, 0.5, 0.5], [1, 2, 2]), moved)
    assert not diff["same"] and abs(diff["max_box_difference"] - 1.0) < 1e-6
    other_class = _instances(BOXES, [0.9, 0.5, 0.5], [1, 2, 3])
    assert not compare_instances(_instances(BOXES, [0.9, 0.5, 0.5], [1, 2, 2]),
                                 other_class)["same_classes"]


def test_dataset_parity_reads_16_bit_images_as_evaluation_does(trained, tmp_path):
    """A stranger's find: export --verify-dataset read a 16-bit PNG with Detectron2's reader
    (values above 255 saturate: all white), so eager and exported agreed on a wrong AP. The
    same picture as 8-bit and as 16-bit (x 257) now reaches the models as the same tensor."""
    import json
    import os

    import numpy as np
    from conftest import TINY_CONFIG
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from PIL import Image

    from retina_focal.data.datasets.coco import register_coco_dataset
    from retina_focal.engine.defaults import build_cfg
    from retina_focal.export.parity import parity_test_loader

    gt = json.load(open(trained["gt_json"]))
    image = gt["images"][0]
    rgb = np.asarray(Image.open(os.path.join(trained["image_dir"], image["file_name"]))
                     .convert("L"))
    Image.fromarray(rgb).save(tmp_path / "gray8.png")
    Image.fromarray(rgb.astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode.startswith("I")
    annotations = [a for a in gt["annotations"] if a["image_id"] == image["id"]]
    cfg = build_cfg(TINY_CONFIG)
    images = {}
    for bits in ("gray8", "gray16"):  # one dataset each: the same picture, the same boxes
        data = dict(gt, images=[dict(image, id=1, file_name=f"{bits}.png")],
                    annotations=[dict(a, id=i + 1, image_id=1) for i, a in enumerate(annotations)])
        (tmp_path / f"{bits}.json").write_text(json.dumps(data))
        name = f"parity_{bits}"
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_coco_dataset(name, str(tmp_path / f"{bits}.json"), str(tmp_path))
        (batch,) = list(parity_test_loader(cfg, name))
        images[bits] = batch[0]["image"]
    assert images["gray8"].float().mean() < 250  # not saturated
    assert torch.equal(images["gray8"], images["gray16"])


def test_an_export_clears_the_earlier_exports_files_from_its_folder(tmp_path):
    """Stranger test: an export into a folder of an earlier one left its verify/ report (and
    other formats' files), which then described another model."""
    from retina_focal.export.checked import clear_earlier_export

    for name in ("model.onnx", "model.pt2", "class_map.json", "notes.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "verify").mkdir()
    (tmp_path / "verify" / "parity.json").write_text("{}")
    clear_earlier_export(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_compare_results_pairs_ties_and_finds_each_kind_of_difference():
    """compare_results (scripts/compare_coco_results.py): COCO results of two runtimes."""
    from retina_focal.export.parity import compare_results

    def det(image_id, cat, box, score):
        return {"image_id": image_id, "category_id": cat, "bbox": box, "score": score}

    ref = [det(1, 3, [0, 0, 10, 10], 0.9), det(1, 7, [5, 5, 10, 10], 0.5),
           det(1, 7, [20, 20, 5, 5], 0.5), det(2, 12, [1, 1, 4, 4], 0.3)]
    tied = [ref[0], ref[2], ref[1], ref[3]]  # the exact tie in the other order
    assert compare_results(ref, tied, atol=1e-5, box_atol=1e-3, box_rtol=0)["all_same"]
    moved = [ref[0], ref[1], det(1, 7, [20, 20, 5.01, 5], 0.5), ref[3]]
    report = compare_results(ref, moved, atol=1e-5, box_atol=1e-3, box_rtol=0)
    assert not report["all_same"] and report["max_box_difference"] == pytest.approx(0.01, abs=1e-6)
    missing = compare_results(ref, ref[:3], atol=1e-5, box_atol=1e-3, box_rtol=0)
    assert not missing["all_same"] and missing["max_box_difference"] is None
    other_class = [ref[0], ref[1], ref[2], det(2, 3, [1, 1, 4, 4], 0.3)]
    assert not compare_results(ref, other_class)["all_same"]
