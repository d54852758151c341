"""retina_focal.data.class_map: class maps from metadata / COCO categories, and the matching of
a model's classes with a dataset's by name (the count alone passes permuted categories)."""
import logging

import pytest
from detectron2.data import MetadataCatalog

from retina_focal.data.checks import check_lazy_num_classes, check_num_classes
from retina_focal.data.class_map import (
    class_map_from_categories,
    class_map_from_metadata,
    class_map_of_datasets,
    format_class_map,
    match_class_maps,
    validate_class_map,
)

# the user's hand-made dataset: non-contiguous ids 3 / 7 / 12
TRAIN = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 12, "name": "bird"}]


def test_class_map_from_metadata_and_categories():
    assert class_map_from_metadata(["cat", "dog", "bird"], {3: 0, 7: 1, 12: 2}) == TRAIN
    assert class_map_from_metadata(["a", "b"]) == [{"id": None, "name": "a"},
                                                   {"id": None, "name": "b"}]
    assert class_map_from_metadata(None) is None
    with pytest.raises(ValueError, match="inconsistent"):
        class_map_from_metadata(["a", "b"], {1: 0, 2: 2})
    # Detectron2 numbers a JSON's categories in the order of their ids
    cats = [{"id": 12, "name": "bird"}, {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    assert class_map_from_categories(cats) == TRAIN


def test_same_classes_same_order_is_identity():
    assert match_class_maps(TRAIN, [dict(c) for c in TRAIN]) is None
    # same names in the same order under other ids: outputs need no renumbering (the
    # evaluator writes the dataset's own ids)
    other_ids = [{"id": i, "name": c["name"]} for i, c in zip((1, 2, 3), TRAIN)]
    assert match_class_maps(TRAIN, other_ids) is None
    # no ids (older metadata): names decide
    assert match_class_maps([{"id": None, "name": c["name"]} for c in TRAIN], TRAIN) is None


def test_same_classes_under_other_ids_are_matched_by_name(caplog):
    # the validation JSON of the report: the same three classes, ids in another order
    val = class_map_from_categories([{"id": 3, "name": "dog"}, {"id": 7, "name": "bird"},
                                     {"id": 12, "name": "cat"}])
    with caplog.at_level(logging.WARNING, logger="retina_focal.data.class_map"):
        perm = match_class_maps(TRAIN, val, model_desc="checkpoint 'm.pth'",
                                data_desc="dataset 'val'")
    # model output 0 (cat) is the dataset's class 2 (id 12), dog -> 0 (id 3), bird -> 1 (id 7)
    assert perm == [2, 0, 1]
    assert [val[j]["name"] for j in perm] == ["cat", "dog", "bird"]
    assert "in another order: matched by name" in caplog.text


def test_different_names_are_an_error_showing_both_lists():
    other = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 12, "name": "horse"}]
    with pytest.raises(ValueError) as info:
        match_class_maps(TRAIN, other, model_desc="checkpoint 'm.pth'",
                         data_desc="dataset 'val'")
    msg = str(info.value)
    assert "The classes of checkpoint 'm.pth' and dataset 'val' differ" in msg
    assert "only in checkpoint 'm.pth': ['bird']; only in dataset 'val': ['horse']" in msg
    assert "checkpoint 'm.pth' (3): [3: cat, 7: dog, 12: bird]" in msg
    assert "dataset 'val' (3): [3: cat, 7: dog, 12: horse]" in msg
    with pytest.raises(ValueError, match="differ"):  # a count mismatch too
        match_class_maps(TRAIN, TRAIN[:2])
    with pytest.raises(ValueError, match="appears twice"):  # names cannot identify classes
        match_class_maps([{"id": 1, "name": "a"}, {"id": 2, "name": "a"}, {"id": 3, "name": "b"}],
                         [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "a"}])


def test_validate_and_format():
    assert validate_class_map(TRAIN, "x") == TRAIN
    assert validate_class_map([{"id": None, "name": "a"}], "x") == [{"id": None, "name": "a"}]
    for bad in ("cat", [{"id": "3", "name": "cat"}], [{"id": 3}], {"id": 3, "name": "c"}):
        with pytest.raises(ValueError, match="checkpoint 'w.pth': 'class_map' is not a list"):
            validate_class_map(bad, "checkpoint 'w.pth'")
    assert format_class_map(TRAIN) == "[3: cat, 7: dog, 12: bird]"
    long = [{"id": i, "name": f"c{i}"} for i in range(30)]
    assert format_class_map(long, limit=2) == "[0: c0, 1: c1, ... (30 in all)]"


def _register(name, classes, id_map=None):
    meta = MetadataCatalog.get(name)
    if meta.get("thing_classes") is None:
        meta.set(thing_classes=classes)
        if id_map:
            meta.set(thing_dataset_id_to_contiguous_id=id_map)


def test_class_map_of_datasets_reads_the_catalog():
    _register("cm_train_a", ["cat", "dog", "bird"], {3: 0, 7: 1, 12: 2})
    _register("cm_train_b", ["cat", "dog", "bird"], {3: 0, 8: 1, 12: 2})
    _register("cm_train_other", ["cat", "dog", "horse"])
    assert class_map_of_datasets(["cm_train_a"]) == TRAIN
    # ids the datasets disagree on are not recorded; names are
    assert class_map_of_datasets(["cm_train_a", "cm_train_b"]) == [
        {"id": 3, "name": "cat"}, {"id": None, "name": "dog"}, {"id": 12, "name": "bird"}]
    assert class_map_of_datasets(["cm_no_metadata"]) is None
    with pytest.raises(ValueError, match="'cm_train_a' and 'cm_train_other' have different"):
        class_map_of_datasets(["cm_train_a", "cm_train_other"])


def test_eval_only_count_check_reads_the_test_sets_only(tiny_cfg):
    """The reported trap: checking NUM_CLASSES against DATASETS.TRAIN in an evaluation gave,
    once fixed as told, a second error advising the opposite value."""
    _register("cm_train_80", [f"c{i}" for i in range(80)])
    _register("cm_val_3", ["cat", "dog", "bird"], {3: 0, 7: 1, 12: 2})
    tiny_cfg.DATASETS.TRAIN = ("cm_train_80",)
    tiny_cfg.DATASETS.TEST = ("cm_val_3",)
    tiny_cfg.MODEL.RETINANET.NUM_CLASSES = 80
    with pytest.raises(ValueError, match=r"NUM_CLASSES=80 but dataset 'cm_val_3' has 3 "
                                         r"categories \(cat, dog, bird\); set "
                                         r"MODEL.RETINANET.NUM_CLASSES 3"):
        check_num_classes(tiny_cfg, evaluation_only=True)
    tiny_cfg.MODEL.RETINANET.NUM_CLASSES = 3  # fixed as told: no second, opposite error
    check_num_classes(tiny_cfg, evaluation_only=True)
    # training reads both, and says first that they are at odds (a stranger's find: advice to
    # set NUM_CLASSES to one dataset's count, then to the other's, in a loop)
    with pytest.raises(ValueError, match=r"The classes of DATASETS.TRAIN \(cm_train_80\) and "
                                         r"DATASETS.TEST 'cm_val_3' differ"):
        check_num_classes(tiny_cfg)
    tiny_cfg.DATASETS.TEST = ("cm_train_80",)
    with pytest.raises(ValueError, match="'cm_train_80' has 80"):  # then the count
        check_num_classes(tiny_cfg)


def test_training_stops_before_it_starts_when_test_classes_differ(tiny_cfg):
    _register("cm_t_train", ["cat", "dog", "bird"], {3: 0, 7: 1, 12: 2})
    _register("cm_t_val_perm", ["dog", "bird", "cat"], {3: 0, 7: 1, 12: 2})
    _register("cm_t_val_other", ["cat", "dog", "horse"], {3: 0, 7: 1, 12: 2})
    tiny_cfg.MODEL.RETINANET.NUM_CLASSES = 3
    tiny_cfg.DATASETS.TRAIN = ("cm_t_train",)
    tiny_cfg.DATASETS.TEST = ("cm_t_val_perm",)
    check_num_classes(tiny_cfg)  # another id order: evaluation renumbers by name
    tiny_cfg.DATASETS.TEST = ("cm_t_val_other",)
    with pytest.raises(ValueError, match=r"The classes of DATASETS.TRAIN \(cm_t_train\) and "
                                         r"DATASETS.TEST 'cm_t_val_other' differ") as refused:
        check_num_classes(tiny_cfg)
    # the fix is the test set's (a stranger's find: the advice was the evaluation's)
    assert str(refused.value).endswith("Set DATASETS.TEST to a dataset with the training set's "
                                       "classes (e.g. a split of the same COCO file), or train "
                                       "on one with the test set's")
    check_num_classes(tiny_cfg, evaluation_only=True)  # a checkpoint's side is not TRAIN

    lazy = {"model": {"num_classes": 3},
            "dataloader": {"train": {"dataset": {"names": "cm_t_train"}},
                           "test": {"dataset": {"names": ["cm_t_val_other"]}}}}
    with pytest.raises(ValueError, match="dataloader.test.dataset.names 'cm_t_val_other'"):
        check_lazy_num_classes(lazy)
    check_lazy_num_classes(lazy, evaluation_only=True)
