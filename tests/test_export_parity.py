"""The parity check of exported models: detections whose scores tie may come in either order,
any other difference is reported."""
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
