"""IoUThresholdMatcher on hand-built IoU matrices, and against Detectron2's Matcher."""
import pytest
import torch
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, Instances

from retina_focal import IoUThresholdMatcher


def test_bands_without_low_quality():
    m = IoUThresholdMatcher(thresholds=[0.4, 0.5], labels=[0, -1, 1],
                            allow_low_quality_matches=False)
    iou = torch.tensor([[0.9, 0.45, 0.10, 0.0, 0.5, 0.39999],
                        [0.0, 0.30, 0.20, 0.3, 0.1, 0.0]])
    matched, labels = m.match(iou)
    assert matched.tolist() == [0, 0, 1, 1, 0, 0]
    assert labels.tolist() == [1, -1, 0, 0, 1, 0]  # 0.5 is positive, 0.4- negative


def test_low_quality_matches_promote_each_gts_best_anchors_with_ties():
    m = IoUThresholdMatcher(thresholds=[0.4, 0.5], labels=[0, -1, 1],
                            allow_low_quality_matches=True)
    iou = torch.tensor([[0.9, 0.45, 0.10, 0.0, 0.0],
                        [0.0, 0.30, 0.20, 0.3, 0.1]])
    matched, labels = m.match(iou)
    # gt 1's best IoU is 0.3, reached by anchors 1 and 3 (a tie): both become positive.
    assert labels.tolist() == [1, 1, 0, 1, 0]
    # anchor 1 still regresses to the gt it overlaps most (gt 0), as in Detectron2
    assert matched.tolist() == [0, 0, 1, 1, 1]


def test_three_thresholds():
    m = IoUThresholdMatcher(thresholds=[0.3, 0.5, 0.7], labels=[0, -1, 0, 1],
                            allow_low_quality_matches=False)
    _, labels = m.match(torch.tensor([[0.1, 0.3, 0.6, 0.7, 0.99]]))
    assert labels.tolist() == [0, -1, 0, 1, 1]


@pytest.mark.parametrize("low_quality", [True, False])
@pytest.mark.parametrize("thresholds,labels", [([0.4, 0.5], [0, -1, 1]), ([0.3, 0.6], [0, -1, 1]),
                                               ([0.5], [0, 1])])
def test_equals_detectron2_matcher(low_quality, thresholds, labels):
    g = torch.Generator().manual_seed(0)
    ours = IoUThresholdMatcher(thresholds=thresholds, labels=labels,
                               allow_low_quality_matches=low_quality)
    ref = Matcher(thresholds, labels, allow_low_quality_matches=low_quality)
    for m in (0, 1, 3, 10):
        iou = (torch.rand(m, 500, generator=g) * 0.8).round(decimals=2)  # rounding -> ties
        a, b = ours.match(iou), ref(iou)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_call_gives_class_labels_and_boxes():
    anchors = [Boxes(torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30], [100, 100, 110, 110.]])),
               Boxes(torch.tensor([[0, 0, 40, 40.]]))]
    gt = Instances((128, 128))
    gt.gt_boxes = Boxes(torch.tensor([[0, 0, 10, 10], [21, 21, 31, 31.]]))
    gt.gt_classes = torch.tensor([3, 1])
    m = IoUThresholdMatcher(thresholds=[0.4, 0.5], labels=[0, -1, 1],
                            allow_low_quality_matches=False)
    labels, boxes = m(anchors, gt, num_classes=5)
    # anchor 1 vs gt 1: IoU = 81 / 119 = 0.68 -> positive class 1; anchor 3: IoU 100/1600
    assert labels.tolist() == [3, 1, 5, 5]
    assert torch.equal(boxes[0], gt.gt_boxes.tensor[0])
    assert torch.equal(boxes[1], gt.gt_boxes.tensor[1])


def test_image_without_ground_truth_is_all_background():
    anchors = [Boxes(torch.rand(7, 4) * 10 + torch.tensor([0, 0, 20, 20.]))]
    gt = Instances((64, 64))
    gt.gt_boxes = Boxes(torch.zeros(0, 4))
    gt.gt_classes = torch.zeros(0, dtype=torch.int64)
    labels, boxes = IoUThresholdMatcher()(anchors, gt, num_classes=6)
    assert labels.tolist() == [6] * 7 and boxes.shape == (7, 4)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"thresholds": [0.5, 0.4]}, "increasing"),
        ({"thresholds": [0.4, 0.5], "labels": [0, 1]}, "3 labels"),
        ({"thresholds": [0.4, 0.5], "labels": [0, 2, 1]}, "-1 .ignore."),
        ({"thresholds": [0.4, 1.5]}, r"\[0, 1\]"),
    ],
)
def test_bad_thresholds(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IoUThresholdMatcher(**kwargs)
