"""retina-focal plot-focal-loss (tools/plot_focal_loss.py): Figure 1 values against the
paper's formula, Figure 4 against Detectron2's own anchor matcher, valid PNGs."""
import json
import math

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, pairwise_iou
from PIL import Image

from retina_focal.analysis.loss_curves import anchor_probabilities, loss_cdf


def _tool():
    from retina_focal.cli import plot_focal_loss

    return plot_focal_loss


def _valid_png(path):
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape[0] > 200 and img.shape[1] > 300 and img.std() > 5


def test_figure1_values_follow_the_formula(tmp_path):
    assert _tool().run(["--output", str(tmp_path)]) == 0
    _valid_png(tmp_path / "figure1.png")
    data = json.load(open(tmp_path / "figure1.json"))
    assert sorted(float(g) for g in data["loss"]) == [0.0, 0.5, 1.0, 2.0, 5.0]
    p_t = data["p_t"]
    for gamma, loss in data["loss"].items():
        g = float(gamma)
        for i in (0, 57, 200, len(p_t) - 1):
            # the paper's eq. (4) without alpha: FL(p_t) = -(1 - p_t)^gamma log(p_t)
            assert loss[i] == pytest.approx(-((1 - p_t[i]) ** g) * math.log(p_t[i]), rel=1e-9)
    # well-classified examples: at p_t = 0.9 gamma = 2 down-weights CE by (0.1)^2 = 100x
    i = int(np.argmin(np.abs(np.asarray(p_t) - 0.9)))
    assert data["loss"]["0.0"][i] / data["loss"]["2.0"][i] == pytest.approx(
        1 / (1 - p_t[i]) ** 2)


def test_loss_cdf_by_hand():
    # losses -log(.9), -log(.5), -log(.1), sorted; cumulative shares at 0, 1/3, 2/3, 1
    frac, cdf = loss_cdf(np.array([0.5, 0.1, 0.9]), gamma=0.0, num_points=4)
    losses = [-math.log(0.9), -math.log(0.5), -math.log(0.1)]
    total = sum(losses)
    assert frac.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert cdf.tolist() == pytest.approx([0, losses[0] / total, (losses[0] + losses[1]) / total,
                                          1.0])


def test_figure4_from_a_model_and_dataset(tmp_path, tiny_cfg):
    tool = _tool()
    args = ["--output", str(tmp_path), "--config-file", TINY_CONFIG, "--num-images", "6",
            "--dataset", "synthetic_shapes_tiny_train"]
    assert tool.run(args) == 0
    _valid_png(tmp_path / "figure4.png")
    data = json.load(open(tmp_path / "figure4.json"))
    for kind in ("positive", "negative"):
        d = data[kind]
        assert d["num_samples"] > 0
        cdfs = {float(g): np.asarray(c) for g, c in d["cdf"].items()}
        assert sorted(cdfs) == [0.0, 0.5, 1.0, 2.0]
        for c in cdfs.values():
            assert c[0] == pytest.approx(0) and c[-1] == pytest.approx(1)
            assert np.all(np.diff(c) >= -1e-12)
        # a larger gamma puts more of the loss on the hardest samples: its curve lies below
        assert np.all(cdfs[2.0] <= cdfs[0.0] + 1e-9)

    # the samples are those of Detectron2's own matcher on the same anchors
    from detectron2.data import DatasetCatalog
    from detectron2.modeling import build_model

    mapper_batch = tool_batch(tiny_cfg, DatasetCatalog.get("synthetic_shapes_tiny_train")[:3])
    torch.manual_seed(0)
    model = build_model(tiny_cfg)
    pos_p, neg_p = anchor_probabilities(model, [mapper_batch])
    model.eval()
    with torch.no_grad():
        images = model.preprocess_image(mapper_batch)
        feats = model.backbone(images.tensor)
        feats = [feats[f] for f in model.head_in_features]
        anchors = Boxes.cat(model.anchor_generator(feats))
        logits, _ = model.head(feats)
    K = tiny_cfg.MODEL.RETINANET.NUM_CLASSES
    matcher = Matcher(tiny_cfg.MODEL.RETINANET.IOU_THRESHOLDS,
                      tiny_cfg.MODEL.RETINANET.IOU_LABELS, allow_low_quality_matches=True)
    exp_pos, exp_neg = [], []
    for n, x in enumerate(mapper_batch):
        # (N, A*K, H, W) per level -> (R, K) in Detectron2's anchor order
        probs = torch.cat([lv[n].reshape(-1, K, lv.shape[2], lv.shape[3]).permute(2, 3, 0, 1)
                           .reshape(-1, K) for lv in logits]).sigmoid()
        gt = x["instances"]
        if len(gt):
            idx, lab = matcher(pairwise_iou(gt.gt_boxes, anchors))
            cls = gt.gt_classes[idx]
        else:
            lab = torch.zeros(len(anchors), dtype=torch.int8)
            cls = torch.zeros(len(anchors), dtype=torch.int64)
        fg = lab == 1
        exp_pos.append(probs[fg, cls[fg]])
        exp_neg.append(probs[lab == 0].flatten())
    exp_pos, exp_neg = torch.cat(exp_pos).double(), torch.cat(exp_neg).double()
    assert len(pos_p) == len(exp_pos) > 0 and len(neg_p) == len(exp_neg)
    assert np.sort(pos_p) == pytest.approx(np.sort(exp_pos.numpy()), rel=1e-5)
    assert neg_p.sum() == pytest.approx(exp_neg.sum().item(), rel=1e-5)


def tool_batch(cfg, dicts):
    from detectron2.data import DatasetMapper
    from detectron2.data import transforms as T

    mapper = DatasetMapper(
        is_train=True,
        augmentations=[T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)],
        image_format=cfg.INPUT.FORMAT)
    return [mapper(dict(d)) for d in dicts]
