"""RobustDatasetMapper against Detectron2's DatasetMapper: the same training inputs, value for
value, although it skips resizes to the same size and transforms box-only annotations as one
array (retina_focal/data/mapper.py)."""
import copy

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from PIL import Image

from retina_focal.data import mapper as mapper_module
from retina_focal.data.mapper import RobustDatasetMapper


def _map_both(dicts, augmentations, seed=0):
    ours = RobustDatasetMapper(True, augmentations=augmentations, image_format="BGR")
    reference = DatasetMapper(True, augmentations=augmentations, image_format="BGR")
    outputs = []
    for mapper in (ours, reference):
        np.random.seed(seed)  # the same flips and sizes for both
        outputs.append([mapper(copy.deepcopy(d)) for d in dicts])
    return outputs


def _assert_same(ours, reference):
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference):
        assert torch.equal(a["image"], b["image"])
        assert a["instances"].image_size == b["instances"].image_size
        assert torch.equal(a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor)
        assert torch.equal(a["instances"].gt_classes, b["instances"].gt_classes)
        assert sorted(a["instances"].get_fields()) == sorted(b["instances"].get_fields())
        assert "annotations" not in a and "annotations" not in b


@pytest.mark.parametrize("sizes", [(256,), (200, 320)], ids=["same-size", "resized"])
def test_synthetic_training_inputs_equal_detectron2s(sizes):
    import retina_focal  # noqa: F401  (registers the synthetic datasets)

    dicts = DatasetCatalog.get("synthetic_shapes_tiny_train")[:12]
    augmentations = [T.ResizeShortestEdge(sizes, max_size=400, sample_style="choice"),
                     T.RandomFlip()]
    ours, reference = _map_both(dicts, augmentations)
    _assert_same(ours, reference)
    assert sum(len(o["instances"]) for o in ours) > 0
    flipped = [not torch.equal(o["image"], r["image"]) for o, r in
               zip(_map_both(dicts, [T.RandomFlip(prob=0.0)])[0], ours)]
    assert any(flipped)  # some images really were flipped (or resized)


def test_edge_cases_of_box_annotations_equal_detectron2s(tmp_path):
    image = (np.arange(40 * 60 * 3) % 251).astype(np.uint8).reshape(40, 60, 3)
    path = str(tmp_path / "image.png")
    Image.fromarray(image).save(path)
    annotations = [
        {"bbox": [10.3, 5.7, 20.1, 9.9], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 2},
        {"bbox": [1.1, 2.2, 30.05, 33.3], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0},
        {"bbox": [50.0, 30.0, 25.0, 25.0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1},
        {"bbox": [-5.0, -3.0, 12.5, 8.25], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 3},
        {"bbox": [70.0, 10.0, 5.0, 5.0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1},
        {"bbox": [5.0, 5.0, 0.0, 10.0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 4},
        {"bbox": [3.0, 4.0, 10.0, 10.0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 5,
         "iscrowd": 1},
        # int boxes: Detectron2 transforms them as int arrays (a resize truncates)
        {"bbox": [7, 9, 13, 11], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0},
        {"bbox": (31, 3, 59, 17), "bbox_mode": BoxMode.XYXY_ABS, "category_id": 2},
    ]
    record = {"file_name": path, "height": 40, "width": 60, "image_id": 0,
              "annotations": annotations}
    no_boxes = dict(record, annotations=[])
    for augmentations in ([T.ResizeShortestEdge((40,), 1000, "choice")],
                          [T.ResizeShortestEdge((57,), 1000, "choice"), T.RandomFlip(prob=1.0)],
                          [T.RandomFlip(prob=1.0, horizontal=False, vertical=True)]):
        ours, reference = _map_both([record, no_boxes], augmentations)
        _assert_same(ours, reference)
        assert len(ours[0]["instances"]) == 6  # outside, empty and crowd boxes removed
        assert len(ours[1]["instances"]) == 0


def test_the_fast_paths_are_taken_and_masks_keep_detectron2s_path(monkeypatch):
    import retina_focal  # noqa: F401

    calls = []
    real = mapper_module._transform_box_annotations
    monkeypatch.setattr(mapper_module, "_transform_box_annotations",
                        lambda *a: calls.append(real(*a)) or calls[-1])
    dicts = DatasetCatalog.get("synthetic_shapes_tiny_train")[:2]
    identity = [T.ResizeShortestEdge((256,), 256, "choice")]
    mapper = RobustDatasetMapper(True, augmentations=identity, image_format="BGR")
    transforms = mapper_module._apply_skipping_identity_resizes(
        mapper.augmentations, T.AugInput(np.zeros((256, 256, 3), np.uint8)))
    assert [type(t) for t in transforms.transforms] == [T.NoOpTransform]
    mapper(copy.deepcopy(dicts[0]))
    assert calls == [True]
    # other dtypes take Detectron2's path
    for odd in ([np.float64(1.5), 2.0, 30.0, 40.0], [True, 2, 30, 40]):
        record = dict(copy.deepcopy(dicts[0]))
        record["annotations"][0]["bbox"] = odd
        out = mapper(record)
        assert calls[-1] is False and len(out["instances"]) == len(record["annotations"])
    masks = RobustDatasetMapper(True, augmentations=identity, image_format="BGR",
                                use_instance_mask=True)
    assert not masks._boxes_only()


def test_decoded_image_cache_gives_the_same_inputs_and_keeps_to_its_size(tmp_path, monkeypatch):
    import retina_focal  # noqa: F401

    dicts = DatasetCatalog.get("synthetic_shapes_tiny_train")[:6]

    def bump(image):  # writes into the image it is given when it may
        image = image if image.flags.writeable else image.copy()
        image += 1
        return image

    in_place = T.ColorTransform(bump)  # so the cache must hand out copies
    augmentations = [T.RandomFlip(), in_place]
    reads = []
    real = mapper_module.read_image_any
    monkeypatch.setattr(mapper_module, "read_image_any",
                        lambda name, format: reads.append(name) or real(name, format))
    image_mb = real(dicts[0]["file_name"], "BGR").nbytes / 2**20
    uncached = RobustDatasetMapper(True, augmentations=augmentations, image_format="BGR")
    cached = RobustDatasetMapper(True, augmentations=augmentations, image_format="BGR",
                                 decoded_image_cache_mb=4.5 * image_mb)
    for epoch in range(3):
        np.random.seed(epoch)
        expected = [uncached(copy.deepcopy(d)) for d in dicts]
        np.random.seed(epoch)
        reads.clear()
        got = [cached(copy.deepcopy(d)) for d in dicts]
        _assert_same(got, expected)
        # 4 images fit: from the second epoch on, only the other 2 are decoded again
        assert len(reads) == (6 if epoch == 0 else 2)
    test_mapper = RobustDatasetMapper(False, augmentations=[], image_format="BGR",
                                      decoded_image_cache_mb=100)
    test_mapper(copy.deepcopy(dicts[0]))
    assert test_mapper._cache == {}  # evaluation reads every image from its file


@pytest.mark.parametrize("value", [-1, "64", True, float("nan")])
def test_decoded_image_cache_size_must_be_a_number_of_mib(value):
    with pytest.raises(ValueError, match=r"DECODED_IMAGE_CACHE_MB=.*use a number of MiB"):
        RobustDatasetMapper(True, augmentations=[], image_format="BGR",
                            decoded_image_cache_mb=value)
