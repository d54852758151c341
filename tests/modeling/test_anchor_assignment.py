"""Assigners on hand-built IoU matrices and boxes, against Detectron2's Matcher, the original
Detectron's labelling order and a loop re-implementation of ATSS; a training smoke with each."""
import math
import statistics

import numpy as np
import pytest
import torch
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, Instances
from helpers import crowded, pair

from retina_focal import AnchorAssigner, ATSSAssigner, IoUThresholdMatcher
from retina_focal.modeling.meta_arch import anchor_targets


def targets(assigner, anchors, gt, num_classes):
    """The assigner's matches as RetinaFocal trains with them: (R,) class labels in
    {-1, 0..K-1, K} and (R, 4) matched boxes."""
    return anchor_targets(*assigner(anchors, gt), gt, num_classes)


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
                                               ([0.5], [0, 1]), ([0.5, 0.5], [0, -1, 1]),
                                               ([0.3, 0.5, 0.7], [0, -1, 0, 1])])
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
    matched, match_labels = m(anchors, gt)
    assert matched.tolist()[:2] == [0, 1] and match_labels.tolist() == [1, 1, 0, 0]
    labels, boxes = targets(m, anchors, gt, num_classes=5)
    # anchor 1 vs gt 1: IoU = 81 / 119 = 0.68 -> positive class 1; anchor 3: IoU 100/1600
    assert labels.tolist() == [3, 1, 5, 5]
    assert torch.equal(boxes[0], gt.gt_boxes.tensor[0])
    assert torch.equal(boxes[1], gt.gt_boxes.tensor[1])


def test_image_without_ground_truth_is_all_background():
    anchors = [Boxes(torch.rand(7, 4) * 10 + torch.tensor([0, 0, 20, 20.]))]
    gt = Instances((64, 64))
    gt.gt_boxes = Boxes(torch.zeros(0, 4))
    gt.gt_classes = torch.zeros(0, dtype=torch.int64)
    matched, match_labels = IoUThresholdMatcher()(anchors, gt)
    assert matched.tolist() == [0] * 7 and match_labels.tolist() == [0] * 7  # all negative
    labels, boxes = targets(IoUThresholdMatcher(), anchors, gt, num_classes=6)
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


# ---------------------------------------------------------------- low-quality match variants

DOC_IOU = torch.tensor([[0.9, 0.45, 0.10, 0.0, 0.00],
                        [0.0, 0.30, 0.35, 0.2, 0.00],
                        [0.0, 0.00, 0.00, 0.1, 0.42]])


@pytest.mark.parametrize("kwargs,expected", [
    ({"allow_low_quality_matches": False}, [1, -1, 0, 0, -1]),
    ({}, [1, -1, 1, 0, 1]),
    ({"low_quality_match_order": "detectron"}, [1, -1, 0, 0, 1]),
    ({"low_quality_min_iou": 0.4}, [1, -1, 0, 0, 1]),
    ({"low_quality_min_iou": 0.35}, [1, -1, 1, 0, 1]),  # inclusive bound
])
def test_docstring_example(kwargs, expected):
    matched, labels = IoUThresholdMatcher(**kwargs).match(DOC_IOU)
    assert matched.tolist() == [0, 0, 1, 1, 2]
    assert labels.tolist() == expected


def detectron_retinanet_labels(iou: np.ndarray, neg: float, pos: float) -> np.ndarray:
    """The original Detectron's RetinaNet labelling, step by step (label 1 = foreground)."""
    labels = np.full(iou.shape[1], -1)
    anchor_max = iou.max(axis=0)
    gt_max = iou.max(axis=1)
    for g in range(iou.shape[0]):  # 1) every anchor tied for a gt's best IoU -> foreground
        labels[iou[g] == gt_max[g]] = 1
    labels[anchor_max >= pos] = 1  # 2) above the positive threshold -> foreground
    labels[anchor_max < neg] = 0  # 3) below the negative threshold -> background, last
    return labels


@pytest.mark.parametrize("neg,pos", [(0.4, 0.5), (0.3, 0.7)])
def test_detectron_order_equals_the_original_detectron(neg, pos):
    g = torch.Generator().manual_seed(1)
    ours = IoUThresholdMatcher(thresholds=[neg, pos], labels=[0, -1, 1],
                               low_quality_match_order="detectron")
    promoted_from_ignored = 0
    for m in (1, 2, 5):
        for _ in range(20):
            scale = torch.rand(m, 1, generator=g) * 0.8  # some gts whose best IoU is low
            iou = (torch.rand(m, 60, generator=g) * scale).round(decimals=2)
            ref = detectron_retinanet_labels(iou.numpy(), neg, pos)
            _, labels = ours.match(iou)
            assert labels.tolist() == ref.tolist()
            best = iou.max(dim=0).values
            promoted_from_ignored += int(((labels == 1) & (best < pos)).sum())
    assert promoted_from_ignored > 0  # the low-quality path was exercised


def test_min_iou_bounds_reduce_to_detectron2_on_and_off():
    g = torch.Generator().manual_seed(2)
    on = Matcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=True)
    off = Matcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=False)
    for _ in range(10):
        iou = torch.rand(4, 200, generator=g) * 0.6
        assert torch.equal(IoUThresholdMatcher(low_quality_min_iou=0.0).match(iou)[1], on(iou)[1])
        assert torch.equal(IoUThresholdMatcher(low_quality_min_iou=0.61).match(iou)[1],
                           off(iou)[1])


def test_gt_overlapping_no_anchor_behaves_as_detectron2_unless_min_iou():
    iou = torch.tensor([[0.9, 0.0, 0.0], [0.0, 0.0, 0.0]])  # gt 1 touches no anchor
    ref = Matcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=True)(iou)
    ours = IoUThresholdMatcher().match(iou)
    assert ours[1].tolist() == ref[1].tolist() == [1, 1, 1]  # Detectron2's (odd) result
    assert IoUThresholdMatcher(low_quality_min_iou=0.01).match(iou)[1].tolist() == [1, 0, 0]


@pytest.mark.parametrize("kwargs,match", [
    ({"low_quality_match_order": "d2"}, "low_quality_match_order='d2'.*'detectron2', 'detectron'"),
    ({"low_quality_min_iou": 1.5}, r"low_quality_min_iou=1.5.*\[0.0, 1.0\]"),
])
def test_bad_low_quality_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IoUThresholdMatcher(**kwargs)


@pytest.mark.parametrize("topk", [0, 2.5, -3])
def test_bad_atss_topk(topk):
    with pytest.raises(ValueError, match=f"topk={topk!r}"):
        ATSSAssigner(topk=topk)


# ---------------------------------------------------------------- hand-built boxes, both kinds

def grid_anchors(image_size=64, sizes=((16,), (32,)), ratios=((1.0,),), strides=(8, 16)):
    """Detectron2's own anchors for a square image (offset 0: centres at 0, s, 2s, ...)."""
    gen = DefaultAnchorGenerator(sizes=[list(s) for s in sizes],
                                 aspect_ratios=[list(r) for r in ratios],
                                 strides=list(strides), offset=0.0)
    feats = [torch.zeros(1, 1, math.ceil(image_size / s), math.ceil(image_size / s))
             for s in strides]
    return gen(feats), gen


def gt_instances(boxes, classes, size=64):
    gt = Instances((size, size))
    gt.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    gt.gt_classes = torch.tensor(classes, dtype=torch.int64)
    return gt


def anchor_index(anchors, cx, cy, size):
    """Index (in the concatenation) of the square anchor of side ``size`` centred at (cx, cy)."""
    t = Boxes.cat(anchors).tensor
    hit = ((t - torch.tensor([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]))
           .abs().max(dim=1).values < 1e-4).nonzero().flatten().tolist()
    assert len(hit) == 1
    return hit[0]


ASSIGNERS = {
    "iou": IoUThresholdMatcher(),
    "iou_no_low_quality": IoUThresholdMatcher(allow_low_quality_matches=False),
    "iou_detectron_order": IoUThresholdMatcher(low_quality_match_order="detectron"),
    "atss": ATSSAssigner(),
}


@pytest.mark.parametrize("name", list(ASSIGNERS))
def test_no_ground_truth(name):
    anchors, _ = grid_anchors()
    labels, boxes = targets(ASSIGNERS[name], anchors, gt_instances([], []), num_classes=3)
    assert labels.tolist() == [3] * sum(len(a) for a in anchors)
    assert boxes.shape == (len(labels), 4)


@pytest.mark.parametrize("name,expect_positive", [
    ("iou", True),                   # 16/256 < 0.4 yet promoted: Detectron2's order
    ("iou_no_low_quality", False),
    ("iou_detectron_order", False),  # the negative band wins in Detectron's order
    ("atss", True),
])
def test_gt_smaller_than_every_anchor(name, expect_positive):
    anchors, _ = grid_anchors()
    gt = gt_instances([[30, 30, 34, 34]], [2])  # 4x4, every anchor is 16x16 or 32x32
    labels, boxes = targets(ASSIGNERS[name], anchors, gt, num_classes=3)
    positive = (labels >= 0) & (labels < 3)
    if expect_positive:
        # the only anchor of best IoU (16/256) is the 16-px one centred at (32, 32)
        assert positive.nonzero().flatten().tolist() == [anchor_index(anchors, 32, 32, 16)]
        assert labels[positive].tolist() == [2]
        assert boxes[positive].tolist() == [[30, 30, 34, 34]]
    else:
        assert not positive.any()
    if name == "atss":
        assert not (labels == -1).any()


def test_atss_candidate_with_iou_equal_to_the_threshold_is_positive():
    # docs/assignment.md: positive if IoU >= t_g. One level and topk = 1: t_g is the single
    # candidate's own IoU, so only ">=" (not ">") makes the best anchor positive.
    anchors, _ = grid_anchors(sizes=((16,),), strides=(16,))
    gt = gt_instances([[26, 26, 38, 38]], [1])
    labels, _ = targets(ATSSAssigner(topk=1), anchors, gt, num_classes=3)
    assert ((labels >= 0) & (labels < 3)).nonzero().flatten().tolist() == [
        anchor_index(anchors, 32, 32, 16)]


@pytest.mark.parametrize("name", list(ASSIGNERS))
def test_two_gts_competing_for_one_anchor(name):
    anchors, _ = grid_anchors(sizes=((16,),), strides=(8,))
    # both boxes overlap the anchor centred at (32, 32) most: IoU 240/256 vs 224/256
    gt = gt_instances([[24, 24, 40, 39], [24, 24, 40, 38]], [0, 1])
    labels, boxes = targets(ASSIGNERS[name], anchors, gt, num_classes=3)
    centre = anchor_index(anchors, 32, 32, 16)
    positive = ((labels >= 0) & (labels < 3)).nonzero().flatten().tolist()
    assert positive == [centre]  # the only positive, and it goes to the higher IoU
    assert labels[centre].item() == 0
    assert boxes[centre].tolist() == [24, 24, 40, 39]


@pytest.mark.parametrize("name", list(ASSIGNERS))
def test_boxes_touching_the_image_border(name):
    anchors, _ = grid_anchors()
    # top-left and bottom-right corners of a 64x64 image
    gt = gt_instances([[0, 0, 12, 12], [52, 52, 64, 64]], [1, 2])
    labels, boxes = targets(ASSIGNERS[name], anchors, gt, num_classes=3)
    positive = ((labels >= 0) & (labels < 3)).nonzero().flatten().tolist()
    # IoU 144/256 = 0.5625 for these two; for ATSS the anchors centred on x = 0 or y = 0 (IoU
    # 96/304 = 0.316, above mean + std) are excluded because their centre lies on the border
    expected = sorted([anchor_index(anchors, 8, 8, 16), anchor_index(anchors, 56, 56, 16)])
    assert positive == expected
    assert labels[expected].tolist() == [1, 2]
    assert boxes[expected].tolist() == [[0, 0, 12, 12], [52, 52, 64, 64]]
    if name.startswith("iou"):
        # IoU in [0.4, 0.5) is ignored: none here, and every other anchor is background
        assert set(labels.tolist()) == {1, 2, 3}


@pytest.mark.parametrize("name", list(ASSIGNERS))
@pytest.mark.parametrize("num_gt", [0, 1, 5])
def test_every_assigner_keeps_the_contract(name, num_gt):
    """AnchorAssigner's contract: (R,) int64 indices into gt, (R,) int8 labels in {-1, 0, 1},
    whatever the classes (they are not read); no ground truth: every anchor negative."""
    assigner = ASSIGNERS[name]
    assert isinstance(assigner, AnchorAssigner)
    anchors, _ = grid_anchors()
    g = torch.Generator().manual_seed(num_gt)
    xy = torch.rand(num_gt, 2, generator=g) * 40
    boxes = torch.cat([xy, xy + 8 + torch.rand(num_gt, 2, generator=g) * 16], dim=1)
    gt = gt_instances(boxes.tolist(), [7] * num_gt)
    matched, match_labels = assigner(anchors, gt)
    r = sum(len(a) for a in anchors)
    assert matched.shape == match_labels.shape == (r,)
    assert matched.dtype == torch.int64 and match_labels.dtype == torch.int8
    assert set(match_labels.tolist()) <= {-1, 0, 1}
    if num_gt == 0:
        assert not match_labels.any() and not matched.any()
    else:
        assert 0 <= matched.min() and matched.max() < num_gt
        assert (match_labels == 1).any()
        gt.gt_classes = torch.tensor([3] * num_gt)  # classes never change the matches
        again = assigner(anchors, gt)
        assert torch.equal(again[0], matched) and torch.equal(again[1], match_labels)


# ---------------------------------------------------------------- ATSS vs a loop re-implementation

def atss_by_loops(anchor_levels, per_location, gt_boxes, gt_classes, num_classes, topk):
    """ATSS written out with Python loops and floats, from the paper's algorithm."""
    anchors = [b for level in anchor_levels for b in level]

    def centre(b):
        return ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)

    def iou(a, b):
        iw = min(a[2], b[2]) - max(a[0], b[0])
        ih = min(a[3], b[3]) - max(a[1], b[1])
        if iw <= 0 or ih <= 0:
            return 0.0
        inter = iw * ih
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    best = [(-1.0, None)] * len(anchors)  # (iou, gt index) of the positive assignment
    for g, box in enumerate(gt_boxes):
        gx, gy = centre(box)
        candidates, start = [], 0
        for level, a_per_loc in zip(anchor_levels, per_location):
            dist = []
            for i, b in enumerate(level):
                cx, cy = centre(b)
                dist.append(((cx - gx) ** 2 + (cy - gy) ** 2, start + i))
            dist.sort()
            candidates += [i for _, i in dist[:topk * a_per_loc]]
            start += len(level)
        ious = [iou(anchors[i], box) for i in candidates]
        thresh = statistics.mean(ious) + (statistics.stdev(ious) if len(ious) > 1 else 0.0)
        for i, v in zip(candidates, ious):
            cx, cy = centre(anchors[i])
            inside = min(cx - box[0], cy - box[1], box[2] - cx, box[3] - cy) > 0.01
            if v >= thresh and inside and v > best[i][0]:
                best[i] = (v, g)
    return [num_classes if g is None else gt_classes[g] for _, g in best], \
        [None if g is None else gt_boxes[g] for _, g in best]


@pytest.mark.parametrize("sizes,ratios,topk", [
    (((16, 20, 25), (32, 40, 50), (64, 80, 101)), ((0.5, 1.0, 2.0),), 9),  # the paper's 9
    (((16,), (32,), (64,)), ((1.0,),), 9),  # one anchor per location
    (((16,), (32,), (64,)), ((1.0,),), 3),
])
def test_atss_equals_a_loop_reimplementation(sizes, ratios, topk):
    g = torch.Generator().manual_seed(3)
    image = 96
    anchors, gen = grid_anchors(image, sizes=sizes, ratios=ratios, strides=(8, 16, 32))
    anchors = [Boxes(a.tensor.double()) for a in anchors]
    levels = [a.tensor.tolist() for a in anchors]
    assigner = ATSSAssigner(topk=topk)
    num_pos = 0
    for m in (1, 2, 4, 7):
        wh = torch.exp(torch.rand(m, 2, generator=g) * math.log(60.0)) + 2  # 3..62 px
        xy = torch.rand(m, 2, generator=g) * (image - wh)
        boxes = torch.cat([xy, xy + wh], dim=1).double()
        classes = torch.randint(0, 4, (m,), generator=g)
        gt = Instances((image, image), gt_boxes=Boxes(boxes), gt_classes=classes)
        labels, matched = targets(assigner, anchors, gt, num_classes=4)
        ref_labels, ref_boxes = atss_by_loops(levels, gen.num_cell_anchors, boxes.tolist(),
                                              classes.tolist(), 4, topk)
        assert labels.tolist() == ref_labels
        for i in (labels < 4).nonzero().flatten().tolist():
            assert matched[i].tolist() == ref_boxes[i]
        num_pos += int((labels < 4).sum())
    assert num_pos > 0


# ---------------------------------------------------------------- training smoke via RetinaFocal

SMOKE = {
    "iou_detectron_order_min_iou": ["MODEL.RETINA_FOCAL.LOW_QUALITY_MATCH_ORDER", "detectron",
                                    "MODEL.RETINA_FOCAL.LOW_QUALITY_MIN_IOU", "0.2",
                                    "MODEL.RETINANET.IOU_THRESHOLDS", "[0.3, 0.5, 0.7]",
                                    "MODEL.RETINANET.IOU_LABELS", "[0, -1, -1, 1]"],
    "atss_9_anchors": ["MODEL.RETINA_FOCAL.ASSIGNER_NAME", "ATSSAssigner"],
    "atss_1_anchor": ["MODEL.RETINA_FOCAL.ASSIGNER_NAME", "ATSSAssigner",
                      "MODEL.ANCHOR_GENERATOR.SIZES", "[[16], [32], [64], [128], [256]]",
                      "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[1.0]]",
                      "MODEL.RETINA_FOCAL.ATSS_TOPK", "5"],
}


@pytest.mark.parametrize("name", list(SMOKE))
def test_training_smoke_with_each_assigner(tiny_cfg, name):
    from detectron2.data import DatasetCatalog
    from detectron2.data import detection_utils as utils
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    tiny_cfg.merge_from_list(SMOKE[name])
    torch.manual_seed(0)
    model = build_model(tiny_cfg)
    expected = "ATSSAssigner" if "atss" in name else "IoUThresholdMatcher"
    assert type(model.assigner).__name__ == expected
    batch = []
    for d in DatasetCatalog.get("synthetic_shapes_tiny_train")[:2]:
        image = utils.read_image(d["file_name"], format="BGR")
        inst = utils.annotations_to_instances(d["annotations"], image.shape[:2])
        batch.append({"image": torch.as_tensor(image.transpose(2, 0, 1).copy()).float(),
                      "instances": inst})
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    with EventStorage() as storage:
        for _ in range(2):
            losses = model(batch)
            assert all(math.isfinite(v.item()) and v.item() > 0 for v in losses.values())
            opt.zero_grad()
            sum(losses.values()).backward()
            assert all(torch.isfinite(p.grad).all() for p in model.parameters()
                       if p.grad is not None)
            opt.step()
        assert storage.history("num_pos_anchors").latest() > 0
        ignored = storage.history("num_ignored_anchors").latest()
        assert ignored == 0 if "atss" in name else ignored > 0


# ---------------------------------------------------------------- config keys

def test_config_keys_reach_the_assigners(tiny_cfg):
    from retina_focal import build_assigner

    default = build_assigner(tiny_cfg)
    assert (default.allow_low_quality_matches, default.low_quality_match_order,
            default.low_quality_min_iou) == (True, "detectron2", 0.0)  # Detectron2's defaults
    tiny_cfg.merge_from_list(["MODEL.RETINA_FOCAL.LOW_QUALITY_MATCH_ORDER", "detectron",
                              "MODEL.RETINA_FOCAL.LOW_QUALITY_MIN_IOU", "0.25",
                              "MODEL.RETINANET.IOU_THRESHOLDS", "[0.5, 0.5]"])
    m = build_assigner(tiny_cfg)
    assert (m.low_quality_match_order, m.low_quality_min_iou, m.thresholds) == \
        ("detectron", 0.25, [0.5, 0.5])
    tiny_cfg.merge_from_list(["MODEL.RETINA_FOCAL.ASSIGNER_NAME", "ATSSAssigner",
                              "MODEL.RETINA_FOCAL.ATSS_TOPK", "4"])
    a = build_assigner(tiny_cfg)
    assert isinstance(a, ATSSAssigner) and a.topk == 4


@pytest.mark.parametrize("opts,fragment", [
    (["MODEL.RETINA_FOCAL.LOW_QUALITY_MATCH_ORDER", "detectron1"],
     "MODEL.RETINA_FOCAL.LOW_QUALITY_MATCH_ORDER='detectron1' is invalid: use one of "
     "'detectron2', 'detectron'"),
    (["MODEL.RETINA_FOCAL.LOW_QUALITY_MIN_IOU", "-0.1"],
     "MODEL.RETINA_FOCAL.LOW_QUALITY_MIN_IOU=-0.1 is invalid"),
    (["MODEL.RETINA_FOCAL.ASSIGNER_NAME", "ATSSAssigner", "MODEL.RETINA_FOCAL.ATSS_TOPK", "0"],
     "MODEL.RETINA_FOCAL.ATSS_TOPK=0 is invalid: use an integer"),
])
def test_bad_assigner_keys_are_clear_errors(tiny_cfg, opts, fragment):
    from detectron2.modeling import build_model

    tiny_cfg.merge_from_list(opts)
    with pytest.raises(ValueError) as info:
        build_model(tiny_cfg)
    assert fragment in str(info.value)


@pytest.mark.parametrize("thresholds,labels", [("[0.5, 0.5]", "[0, -1, 1]"),
                                               ("[0.3, 0.5, 0.7]", "[0, -1, 0, 1]"),
                                               ("[0.3, 0.7]", "[0, -1, 1]")])
def test_label_anchors_equal_detectron2_retinanet(tiny_cfg, thresholds, labels):
    """Non-default bands through the model: RetinaFocal.label_anchors == RetinaNet's."""

    tiny_cfg.merge_from_list(["MODEL.RETINANET.IOU_THRESHOLDS", thresholds,
                              "MODEL.RETINANET.IOU_LABELS", labels])
    ref, ours = pair(tiny_cfg)
    inst = crowded()["instances"]
    empty = gt_instances([], [], size=128)
    feats = [torch.zeros(1, 1, 128 // s, 128 // s) for s in (8, 16, 32, 64, 128)]
    anchors = ours.anchor_generator(feats)
    a_labels, a_boxes = ref.label_anchors(anchors, [inst, empty])
    b_labels, b_boxes = ours.label_anchors(anchors, [inst, empty])
    for x, y in zip(a_labels + a_boxes, b_labels + b_boxes):
        assert torch.equal(x, y)
    assert (a_labels[0] == -1).any() == (thresholds != "[0.5, 0.5]")
