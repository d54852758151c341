"""Samplers select what they claim (against brute-force references written here), the
normaliser choice, and 2-iteration training smoke runs of the tiny model for every loss and
sampler."""
import math

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.structures import Boxes, pairwise_iou
from detectron2.utils.events import EventStorage
from helpers import batch, crowded, scripted_and_eager

from retina_focal import (
    SAMPLER_REGISTRY,
    AllAnchors,
    HardNegativeMiner,
    OHEMSampler,
    RetinaFocal,
    RetinaFocalHead,
    add_retina_focal_config,
    build_sampler,
)

K = 4


def sampling_problem(num_images=2, num_anchors=600, seed=0, no_positives_in_last=False):
    """Labels (N, R) in {-1, 0..K-1, K}, losses (N, R) and clustered boxes (N, R, 4), so that
    NMS has duplicates to remove."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.full((num_images, num_anchors), K)
    fg = torch.rand(num_images, num_anchors, generator=g) < 0.15
    labels[fg] = torch.randint(0, K, (int(fg.sum()),), generator=g)
    labels[torch.rand(num_images, num_anchors, generator=g) < 0.1] = -1
    if no_positives_in_last:
        labels[-1][labels[-1] < K] = K
    losses = torch.rand(num_images, num_anchors, generator=g)
    centers = torch.rand(num_images, 40, 2, generator=g) * 200
    which = torch.randint(0, 40, (num_images, num_anchors), generator=g)
    c = torch.gather(centers, 1, which[..., None].expand(-1, -1, 2))
    c = c + torch.randn(num_images, num_anchors, 2, generator=g) * 4
    wh = torch.rand(num_images, num_anchors, 2, generator=g) * 20 + 20
    boxes = torch.cat([c - wh / 2, c + wh / 2], dim=-1)
    return labels, losses, boxes


def greedy_ohem_reference(labels, losses, boxes, batch_size, thresh, fg_quota=None):
    """OHEM written out: visit anchors by decreasing loss, keep one unless it overlaps a kept
    one by IoU > thresh; take the first batch_size. With fg_quota: the same within the
    positives (first fg_quota) and within the negatives (fill up to batch_size)."""
    labels, losses = labels.tolist(), losses.tolist()
    iou = pairwise_iou(Boxes(boxes), Boxes(boxes)).tolist()

    def survivors(pool):
        kept = []
        for i in sorted(pool, key=lambda i: -losses[i]):
            if all(iou[i][j] <= thresh for j in kept):
                kept.append(i)
        return kept

    if fg_quota is None:
        return set(survivors([i for i, lab in enumerate(labels) if lab >= 0])[:batch_size])
    fg = survivors([i for i, lab in enumerate(labels) if 0 <= lab < K])[:fg_quota]
    bg = survivors([i for i, lab in enumerate(labels) if lab == K])[: batch_size - len(fg)]
    return set(fg + bg)


@pytest.mark.parametrize("batch_size,thresh,fg_ratio", [(16, 0.7, -1), (32, 0.5, -1),
                                                        (32, 0.5, 0.25), (200, 0.7, 0.25),
                                                        (16, 1.0, -1)])
def test_ohem_equals_brute_force_greedy_nms(batch_size, thresh, fg_ratio):
    labels, losses, boxes = sampling_problem()
    sampler = OHEMSampler(batch_size=batch_size, nms_thresh=thresh, fg_ratio=fg_ratio)
    weights = sampler(labels, K, anchor_losses=losses, boxes=boxes)
    assert weights.shape == labels.shape
    assert set(weights.unique().tolist()) <= {0.0, 1.0}
    quota = round(batch_size * fg_ratio) if fg_ratio > 0 else None
    for i in range(len(labels)):
        expected = greedy_ohem_reference(labels[i], losses[i], boxes[i], batch_size, thresh, quota)
        assert set(torch.nonzero(weights[i]).squeeze(1).tolist()) == expected
        sel = weights[i] > 0
        assert not (sel & (labels[i] < 0)).any()  # ignored anchors stay ignored
        assert int(sel.sum()) == min(batch_size, len(expected)) == len(expected)
        if quota is not None:
            assert int((sel & (labels[i] < K)).sum()) <= quota
        if thresh < 1:  # what NMS promises: no two selected boxes (of a pool) overlap more
            pools = [sel] if quota is None else [sel & (labels[i] < K), sel & (labels[i] == K)]
            for pool in pools:
                iou = pairwise_iou(Boxes(boxes[i][pool]), Boxes(boxes[i][pool]))
                iou.fill_diagonal_(0)
                assert iou.max() <= thresh


def test_ohem_fixed_ratio_counts():
    """Plenty of both kinds: exactly 1:3 positives to negatives, the hardest of each."""
    labels, losses, boxes = sampling_problem(num_anchors=3000, seed=1)
    sampler = OHEMSampler(batch_size=64, nms_thresh=1.0, fg_ratio=0.25)
    weights = sampler(labels, K, anchor_losses=losses, boxes=None)
    for i in range(len(labels)):
        sel = weights[i] > 0
        fg, bg = (labels[i] >= 0) & (labels[i] < K), labels[i] == K
        assert int((sel & fg).sum()) == 16 and int((sel & bg).sum()) == 48
        assert losses[i][sel & fg].min() >= losses[i][~sel & fg].max()
        assert losses[i][sel & bg].min() >= losses[i][~sel & bg].max()


def test_ohem_prefix_nms_is_exact_on_many_anchors():
    """The doubling-prefix NMS equals one NMS over all anchors (torchvision's, by loss)."""
    from torchvision.ops import nms

    labels, losses, boxes = sampling_problem(num_images=1, num_anchors=20000, seed=2)
    labels[:] = K  # all valid
    weights = OHEMSampler(batch_size=128, nms_thresh=0.5)(labels, K, losses, boxes)
    full = nms(boxes[0], losses[0], 0.5)[:128]
    assert set(torch.nonzero(weights[0]).squeeze(1).tolist()) == set(full.tolist())


@pytest.mark.parametrize("ratio,min_neg", [(3.0, 0), (1.5, 0), (3.0, 20)])
def test_hard_negative_miner_selects_positives_and_hardest_negatives(ratio, min_neg):
    labels, losses, _ = sampling_problem(num_images=3, seed=3, no_positives_in_last=True)
    weights = HardNegativeMiner(neg_pos_ratio=ratio, min_negatives=min_neg)(labels, K, losses)
    for i in range(len(labels)):
        sel = weights[i] > 0
        fg, bg = (labels[i] >= 0) & (labels[i] < K), labels[i] == K
        assert torch.equal(sel & fg, fg)  # every positive
        assert not (sel & (labels[i] < 0)).any()
        want = min(max(math.floor(ratio * int(fg.sum())), min_neg), int(bg.sum()))
        assert int((sel & bg).sum()) == want
        if 0 < want < int(bg.sum()):
            assert losses[i][sel & bg].min() >= losses[i][~sel & bg].max()
    assert int(labels[-1].lt(K).logical_and(labels[-1] >= 0).sum()) == 0
    assert int(weights[-1].sum()) == min_neg  # an image without positives


def test_all_anchors_returns_no_weights():
    labels, losses, boxes = sampling_problem()
    assert AllAnchors()(labels, K, losses, boxes) is None


# ---------------------------------------------------------------- config


def sampler_cfg(opts):
    cfg = get_cfg()
    add_retina_focal_config(cfg)
    cfg.merge_from_list(opts)
    return cfg


def test_registered_names_and_defaults():
    assert {"AllAnchors", "OHEMSampler", "HardNegativeMiner"} <= {k for k, _ in SAMPLER_REGISTRY}
    assert isinstance(build_sampler(sampler_cfg([])), AllAnchors)
    s = build_sampler(sampler_cfg(["MODEL.RETINA_FOCAL.SAMPLER_NAME", "OHEMSampler",
                                   "MODEL.RETINA_FOCAL.OHEM_BATCH_SIZE", "128",
                                   "MODEL.RETINA_FOCAL.OHEM_NMS_THRESH", "0.5",
                                   "MODEL.RETINA_FOCAL.OHEM_FG_RATIO", "0.25",
                                   "MODEL.RETINA_FOCAL.OHEM_NMS_BOXES", "anchors"]))
    assert (s.batch_size, s.nms_thresh, s.fg_ratio, s.nms_boxes) == (128, 0.5, 0.25, "anchors")
    s = build_sampler(sampler_cfg(["MODEL.RETINA_FOCAL.SAMPLER_NAME", "HardNegativeMiner",
                                   "MODEL.RETINA_FOCAL.HNM_NEG_POS_RATIO", "2.0",
                                   "MODEL.RETINA_FOCAL.HNM_MIN_NEGATIVES", "8"]))
    assert (s.neg_pos_ratio, s.min_negatives) == (2.0, 8)


@pytest.mark.parametrize(
    "opts,match",
    [
        (["MODEL.RETINA_FOCAL.SAMPLER_NAME", "OHEM"], "SAMPLER_NAME='OHEM'.*choices"),
        (["MODEL.RETINA_FOCAL.SAMPLER_NAME", "OHEMSampler",
          "MODEL.RETINA_FOCAL.OHEM_BATCH_SIZE", "0"], "OHEM_BATCH_SIZE"),
        (["MODEL.RETINA_FOCAL.SAMPLER_NAME", "OHEMSampler",
          "MODEL.RETINA_FOCAL.OHEM_NMS_THRESH", "0.0"], "OHEM_NMS_THRESH"),
        (["MODEL.RETINA_FOCAL.SAMPLER_NAME", "OHEMSampler",
          "MODEL.RETINA_FOCAL.OHEM_FG_RATIO", "1.5"], "OHEM_FG_RATIO"),
        (["MODEL.RETINA_FOCAL.SAMPLER_NAME", "OHEMSampler",
          "MODEL.RETINA_FOCAL.OHEM_NMS_BOXES", "gt"], "OHEM_NMS_BOXES"),
        (["MODEL.RETINA_FOCAL.SAMPLER_NAME", "HardNegativeMiner",
          "MODEL.RETINA_FOCAL.HNM_NEG_POS_RATIO", "0.0"], "HNM_NEG_POS_RATIO"),
        (["MODEL.RETINA_FOCAL.SAMPLER_NAME", "HardNegativeMiner",
          "MODEL.RETINA_FOCAL.HNM_MIN_NEGATIVES", "-1"], "HNM_MIN_NEGATIVES"),
    ],
)
def test_bad_sampler_values_name_the_key(opts, match):
    with pytest.raises(ValueError, match=match):
        build_sampler(sampler_cfg(opts))


def test_bad_normalizer_names_the_key(tiny_cfg):
    tiny_cfg.MODEL.RETINA_FOCAL.NORMALIZER = "mean"
    with pytest.raises(ValueError, match="MODEL.RETINA_FOCAL.NORMALIZER='mean'.*'ema', 'batch'"):
        RetinaFocal(tiny_cfg)
    with pytest.raises(ValueError, match="^normalizer='mean'.*'ema', 'batch'"):
        RetinaFocal(**dict(RetinaFocal.from_config(tiny_cfg), normalizer="mean"))


# ---------------------------------------------------------------- in the model


def two_iterations(cfg):
    """Build the tiny model, run 2 SGD iterations; return [(losses, storage values)]."""
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    out = []
    with EventStorage() as storage:
        for inputs in ([batch(True), crowded()], [batch(True), batch(False)]):
            losses = model(inputs)
            total = sum(losses.values())
            opt.zero_grad()
            total.backward()
            assert all(math.isfinite(v.item()) for v in losses.values()), losses
            assert all(torch.isfinite(p.grad).all() for p in model.parameters()
                       if p.grad is not None)
            opt.step()
            out.append(({k: v.item() for k, v in losses.items()},
                        {k: v.latest() for k, v in storage.histories().items()}))
            storage.step()
    return model, out


LOSS_OPTS = [
    ["MODEL.RETINA_FOCAL.ALPHA_PER_CLASS", "[0.25, 0.3, 0.2, 0.25, 0.5, 0.5]"],
    ["MODEL.RETINA_FOCAL.LOSS_NAME", "SigmoidFocalLossStar"],
    ["MODEL.RETINA_FOCAL.LOSS_NAME", "SoftmaxFocalLoss"],
    ["MODEL.RETINA_FOCAL.LOSS_NAME", "QualityFocalLoss"],
    ["MODEL.RETINA_FOCAL.LOSS_NAME", "VarifocalLoss"],
]


@pytest.mark.parametrize("opts", LOSS_OPTS, ids=lambda o: o[-1])
def test_training_smoke_every_loss(tiny_cfg, opts):
    tiny_cfg.merge_from_list(opts)
    model, steps = two_iterations(tiny_cfg)
    for losses, _ in steps:
        assert losses["loss_cls"] > 0 and losses["loss_box_reg"] > 0
    num_classes = tiny_cfg.MODEL.RETINANET.NUM_CLASSES
    num_logits = num_classes + 1 if "SoftmaxFocalLoss" in opts else num_classes
    assert model.head.cls_score.out_channels == model.anchor_generator.num_cell_anchors[0] * \
        num_logits
    model.eval()
    model.test_score_thresh = 0.0  # 2 iterations: scores are still near the prior
    with torch.no_grad():
        inst = model([batch(True)])[0]["instances"]
    assert len(inst) > 0 and inst.pred_classes.max() < num_classes
    assert 0 <= inst.scores.min() and inst.scores.max() <= 1


def test_sigmoid_model_starts_at_prior_probability(tiny_cfg):
    # README / focal loss paper: every class starts at foreground probability pi (PRIOR_PROB)
    tiny_cfg.MODEL.RETINANET.PRIOR_PROB = 0.02
    model = build_model(tiny_cfg)
    p = torch.sigmoid(model.head.cls_score.bias.double())
    torch.testing.assert_close(p, torch.full_like(p, 0.02))
    # the head built directly, without the loss's cls_prior_bias
    head = RetinaFocalHead(input_shape=[ShapeSpec(channels=8)], num_classes=3, num_anchors=2,
                           conv_dims=[8], prior_prob=0.02)
    p = torch.sigmoid(head.cls_score.bias.double())
    torch.testing.assert_close(p, torch.full_like(p, 0.02))


def test_softmax_model_starts_at_prior_and_scores_foreground_softmax(tiny_cfg):
    tiny_cfg.MODEL.RETINA_FOCAL.LOSS_NAME = "SoftmaxFocalLoss"
    tiny_cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0
    model = build_model(tiny_cfg).eval()
    K_ = tiny_cfg.MODEL.RETINANET.NUM_CLASSES
    bias = model.head.cls_score.bias.view(-1, K_ + 1)  # (A, K + 1)
    p = torch.softmax(bias.double(), dim=1)
    torch.testing.assert_close(p[:, :K_].sum(1), torch.full((len(p),), 0.01, dtype=p.dtype))
    logits = torch.randn(7, K_ + 1)
    torch.testing.assert_close(model._class_scores(logits),
                               torch.exp(logits)[:, :K_] / torch.exp(logits).sum(1, keepdim=True))


def test_head_and_loss_must_agree_on_the_number_of_scores(tiny_cfg):
    from retina_focal import SoftmaxFocalLoss

    kwargs = RetinaFocal.from_config(tiny_cfg)  # a head with K scores per anchor
    kwargs["cls_loss"] = SoftmaxFocalLoss()
    with pytest.raises(ValueError, match="predicts 6 class scores.*SoftmaxFocalLoss needs 7"):
        RetinaFocal(**kwargs)


def test_iou_targets_are_predicted_box_iou_with_matched_gt(tiny_cfg):
    """What RetinaFocal passes to an IoU-aware loss, recomputed here with Detectron2's
    pairwise_iou on the boxes decoded from the head's deltas."""
    tiny_cfg.MODEL.RETINA_FOCAL.LOSS_NAME = "QualityFocalLoss"
    torch.manual_seed(0)
    model = build_model(tiny_cfg).train()
    with torch.no_grad():
        model.head.bbox_pred.bias.normal_(0, 0.3)  # predicted boxes != anchors
    calls = []
    original = model.cls_loss.forward

    def spy(logits, labels, weights=None, iou_targets=None):
        calls.append((labels, iou_targets))
        return original(logits, labels, weights=weights, iou_targets=iou_targets)

    model.cls_loss.forward = spy
    inputs = [batch(True)]
    with EventStorage():
        model(inputs)
        images = model.preprocess_image(inputs)
        features = model.backbone(images.tensor)
        features = [features[f] for f in model.head_in_features]
        _, deltas = model.head(features)
        anchors = Boxes.cat(model.anchor_generator(features))
        labels, matched = model.label_anchors(model.anchor_generator(features),
                                              [inputs[0]["instances"]])
    # one call per FPN level, in level order (one image: the concatenation is its R anchors)
    assert len(calls) == len(features)
    seen = {"labels": torch.cat([c[0] for c in calls]),
            "iou_targets": torch.cat([c[1] for c in calls])}
    deltas = torch.cat([d.permute(0, 2, 3, 1).reshape(1, -1, 4) for d in deltas], 1)[0]
    pos = (labels[0] >= 0) & (labels[0] < tiny_cfg.MODEL.RETINANET.NUM_CLASSES)
    assert pos.sum() > 0 and torch.equal(seen["labels"], labels[0])
    pred = model.box2box_transform.apply_deltas(deltas[pos], anchors.tensor[pos])
    expected = torch.diag(pairwise_iou(Boxes(pred), Boxes(matched[0][pos])))
    iou = seen["iou_targets"]
    assert not iou.requires_grad
    torch.testing.assert_close(iou[pos], expected, rtol=1e-5, atol=1e-6)
    assert 0 < expected.min() and expected.max() < 1  # a real soft target, not 0/1


@pytest.mark.parametrize(
    "opts",
    [
        ["MODEL.RETINA_FOCAL.SAMPLER_NAME", "OHEMSampler", "MODEL.RETINA_FOCAL.OHEM_BATCH_SIZE",
         "64", "MODEL.RETINA_FOCAL.OHEM_NMS_THRESH", "0.7"],
        ["MODEL.RETINA_FOCAL.SAMPLER_NAME", "OHEMSampler", "MODEL.RETINA_FOCAL.OHEM_BATCH_SIZE",
         "64", "MODEL.RETINA_FOCAL.OHEM_NMS_THRESH", "0.5", "MODEL.RETINA_FOCAL.OHEM_FG_RATIO",
         "0.25", "MODEL.RETINA_FOCAL.OHEM_NMS_BOXES", "anchors",
         "MODEL.RETINA_FOCAL.NORMALIZER", "batch"],
        ["MODEL.RETINA_FOCAL.SAMPLER_NAME", "HardNegativeMiner",
         "MODEL.RETINA_FOCAL.HNM_MIN_NEGATIVES", "10"],
    ],
    ids=["ohem", "ohem-1:3-anchors-batchnorm", "hnm"],
)
def test_training_smoke_every_sampler(tiny_cfg, opts):
    tiny_cfg.merge_from_list(opts)
    tiny_cfg.MODEL.RETINANET.FOCAL_LOSS_GAMMA = 0.0  # the paper's OHEM / HNM use CE
    _, steps = two_iterations(tiny_cfg)
    rf = tiny_cfg.MODEL.RETINA_FOCAL
    for (losses, values), num_images in zip(steps, (2, 2)):
        assert losses["loss_cls"] > 0
        fg, bg, pos = values["sampler/num_fg"], values["sampler/num_bg"], values["num_pos_anchors"]
        if rf.SAMPLER_NAME == "OHEMSampler":
            assert fg + bg == 64  # thousands of anchors: the batch is always full
            if rf.OHEM_FG_RATIO > 0:
                assert fg <= 16
        else:
            assert fg == pos  # every positive; per image max(3 * #pos, 10) negatives
    # batch 2 = [image with 2 objects, empty image]: HNM takes 3 * #pos + 10 on average
    if rf.SAMPLER_NAME == "HardNegativeMiner":
        values = steps[1][1]
        assert values["sampler/num_bg"] == (3 * 2 * values["num_pos_anchors"] + 10) / 2


def test_batch_normalizer_divides_by_this_batch_positives(tiny_cfg):
    results = {}
    for norm in ("ema", "batch"):
        tiny_cfg.MODEL.RETINA_FOCAL.NORMALIZER = norm
        torch.manual_seed(0)
        model = build_model(tiny_cfg).train()
        with EventStorage() as storage:
            results[norm] = {k: v.item() for k, v in model([batch(True), crowded()]).items()}
            num_pos = storage.history("num_pos_anchors").latest() * 2
    ema = 0.9 * 100 + 0.1 * num_pos  # Detectron2's EMA after one update from 100
    for key in ("loss_cls", "loss_box_reg"):
        assert results["batch"][key] * num_pos == pytest.approx(results["ema"][key] * ema,
                                                                rel=1e-5)


def test_softmax_model_scripts_like_eager(tiny_cfg):
    """The overridden inference path (K + 1 logits, softmax scores) survives Detectron2's
    scripting export."""

    tiny_cfg.merge_from_list(["MODEL.RETINA_FOCAL.LOSS_NAME", "SoftmaxFocalLoss",
                              "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"])
    out, eager = scripted_and_eager(tiny_cfg)
    assert len(eager) == len(out) > 0
    assert out.pred_classes.max() < tiny_cfg.MODEL.RETINANET.NUM_CLASSES
    torch.testing.assert_close(out.scores, eager.scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pred_boxes.tensor, eager.pred_boxes.tensor, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "opts",
    [
        ["MODEL.RETINA_FOCAL.SAMPLER_NAME", "OHEMSampler", "MODEL.RETINA_FOCAL.OHEM_BATCH_SIZE",
         "64", "MODEL.RETINA_FOCAL.OHEM_NMS_THRESH", "0.7"],
        ["MODEL.RETINA_FOCAL.SAMPLER_NAME", "OHEMSampler", "MODEL.RETINA_FOCAL.OHEM_BATCH_SIZE",
         "64", "MODEL.RETINA_FOCAL.OHEM_FG_RATIO", "0.25",
         "MODEL.RETINA_FOCAL.OHEM_NMS_BOXES", "anchors"],
        ["MODEL.RETINA_FOCAL.SAMPLER_NAME", "HardNegativeMiner",
         "MODEL.RETINA_FOCAL.HNM_MIN_NEGATIVES", "10"],
    ],
    ids=["ohem", "ohem-1:3-anchors", "hnm"],
)
def test_sampler_weights_are_what_the_cls_loss_sums(tiny_cfg, opts):
    """loss_cls is exactly sum(weight * per-anchor loss) / #positives with the weights the
    sampler returned (recomputed here from what the sampler saw), and differs from the
    unsampled loss; loss_box_reg is the one of the same model without a sampler (the box loss
    is on every positive, whatever the sampler chose)."""
    tiny_cfg.MODEL.RETINA_FOCAL.NORMALIZER = "batch"
    tiny_cfg.MODEL.RETINANET.FOCAL_LOSS_GAMMA = 0.0  # CE: the dropped easy negatives count
    inputs = [batch(True), crowded()]
    results = {}
    for sampled in (True, False):
        cfg = tiny_cfg.clone()
        if sampled:
            cfg.merge_from_list(opts)
        torch.manual_seed(0)
        model = build_model(cfg).train()
        seen = []
        original = model.sampler.sample

        def spy(labels, num_classes, anchor_losses, boxes):
            weights = original(labels, num_classes, anchor_losses, boxes)
            seen.append((labels, anchor_losses, weights))
            return weights

        model.sampler.sample = spy
        with EventStorage() as storage:
            losses = model(inputs)
            num_pos = storage.history("num_pos_anchors").latest() * len(inputs)
        results[sampled] = ({k: v.item() for k, v in losses.items()}, seen, num_pos)
    (sampled, seen, num_pos), (plain, _, plain_pos) = results[True], results[False]
    assert len(seen) == 1 and num_pos == plain_pos > 0
    labels, anchor_losses, weights = seen[0]
    assert weights is not None and weights.shape == labels.shape
    chosen = weights > 0
    assert 0 < int(chosen.sum()) < int((labels >= 0).sum())  # a real selection
    by_hand = float((anchor_losses.double() * weights.double()).sum()) / num_pos
    assert sampled["loss_cls"] == pytest.approx(by_hand, rel=1e-5)
    everything = float(anchor_losses.double()[labels >= 0].sum()) / num_pos
    assert plain["loss_cls"] == pytest.approx(everything, rel=1e-5)
    assert sampled["loss_cls"] != pytest.approx(plain["loss_cls"], rel=1e-3)
    assert sampled["loss_box_reg"] == pytest.approx(plain["loss_box_reg"], rel=1e-6)
