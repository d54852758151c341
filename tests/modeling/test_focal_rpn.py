"""FocalRPN: with default settings it is Detectron2's RPN (same parameters, losses, gradients
and proposals for the same seed, in GeneralizedRCNN and ProposalNetwork); its focal settings
(all anchors, prior bias, positives normaliser) do what they say; bad values name their key."""
import math
import os
import re

import pytest
import torch
from conftest import CONFIGS
from detectron2.modeling import build_model as d2_build_model
from detectron2.utils.events import EventStorage
from helpers import batch, crowded

from retina_focal.engine.defaults import build_cfg, build_model
from retina_focal.modeling.proposal_generator import FocalRPN, objectness_class_labels

SYNTHETIC = os.path.join(CONFIGS, "Synthetic", "faster_rcnn_focal_rpn_R_18_FPN_synthetic.yaml")
# the synthetic config with Detectron2's RPN settings (the Base config's), in NCHW as
# Detectron2 runs, so that both compute the same float32 convolutions
RPN = "MODEL.RETINA_FOCAL.RPN."


def rpn_opts(**values):
    """``MODEL.RETINA_FOCAL.RPN.<KEY> VALUE`` pairs."""
    return [x for key, value in values.items() for x in (RPN + key, str(value))]


DETECTRON2_RPN = rpn_opts(FOCAL_LOSS_ALPHA=-1.0, FOCAL_LOSS_GAMMA=0.0, SAMPLING="detectron2",
                          NORMALIZER="detectron2", PRIOR_PROB=0.5) + [
    "MODEL.RETINA_FOCAL.MEMORY_FORMAT", "contiguous"]
FOCAL_KEYS = ("SAMPLING", "NORMALIZER", "PRIOR_PROB", "FOCAL_LOSS_ALPHA", "FOCAL_LOSS_GAMMA")


def cfg_of(opts=(), meta_arch="GeneralizedRCNN"):
    cfg = build_cfg(SYNTHETIC, DETECTRON2_RPN + list(opts), freeze=False)
    cfg.MODEL.META_ARCHITECTURE = meta_arch
    return cfg


def pair(cfg):
    """Detectron2's model with its RPN, and the same model with FocalRPN (built as our tools
    build it), with the same weights."""
    cfg.MODEL.PROPOSAL_GENERATOR.NAME = "RPN"
    torch.manual_seed(0)
    ref = d2_build_model(cfg)
    cfg.MODEL.PROPOSAL_GENERATOR.NAME = "FocalRPN"
    ours = build_model(cfg)
    assert isinstance(ours.proposal_generator, FocalRPN)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    missing, unexpected = ours.load_state_dict(ref.state_dict(), strict=True)
    assert not missing and not unexpected
    return ref, ours


def inputs():
    torch.manual_seed(0)
    return [batch(True), batch(False), crowded()]


def train_step(model, seed=7):
    """Losses, gradients and the RPN's training proposals of one step; the RPN's sampler
    draws from torch's generator, seeded the same way for both models."""
    model.train()
    data = inputs()
    captured = {}

    def keep(module, args, output):
        captured["proposals"] = output[0]

    handle = model.proposal_generator.register_forward_hook(keep)
    torch.manual_seed(seed)
    with EventStorage():
        losses = model(data)
    handle.remove()
    sum(losses.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return losses, grads, captured["proposals"]


def assert_same_proposals(ref_props, our_props):
    assert len(ref_props) == len(our_props)
    for x, y in zip(ref_props, our_props):
        torch.testing.assert_close(y.proposal_boxes.tensor, x.proposal_boxes.tensor,
                                   rtol=0, atol=1e-4)
        torch.testing.assert_close(y.objectness_logits, x.objectness_logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "meta_arch,opts",
    [("GeneralizedRCNN", []), ("ProposalNetwork", []),
     ("GeneralizedRCNN", ["MODEL.RPN.IOU_THRESHOLDS", "[0.4, 0.6]",
                          "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "64", "MODEL.RPN.POSITIVE_FRACTION",
                          "0.25", "MODEL.RPN.LOSS_WEIGHT", "2.0"]),
     ("GeneralizedRCNN", ["MODEL.RPN.BBOX_REG_LOSS_TYPE", "giou"])],
    ids=lambda o: (" ".join(o) or "default") if isinstance(o, list) else o,
)
def test_defaults_equal_detectron2_rpn(meta_arch, opts):
    ref, ours = pair(cfg_of(opts, meta_arch))
    ref_losses, ref_grads, ref_props = train_step(ref)
    our_losses, our_grads, our_props = train_step(ours)
    assert our_losses.keys() == ref_losses.keys()
    assert {"loss_rpn_cls", "loss_rpn_loc"} <= set(our_losses)
    for key in ref_losses:
        torch.testing.assert_close(our_losses[key], ref_losses[key], rtol=1e-5, atol=0)
    assert our_grads.keys() == ref_grads.keys()
    for name in ref_grads:
        torch.testing.assert_close(our_grads[name], ref_grads[name], rtol=1e-4, atol=1e-7,
                                   msg=lambda m: f"{name}: {m}")
    assert_same_proposals(ref_props, our_props)
    # inference: the same proposals (and detections)
    ref.eval()
    ours.eval()
    with torch.no_grad():
        data = inputs()
        ref_out, our_out = ref(data), ours(data)
    for x, y in zip(ref_out, our_out):
        if meta_arch == "ProposalNetwork":
            assert_same_proposals([x["proposals"]], [y["proposals"]])
        else:
            torch.testing.assert_close(y["instances"].pred_boxes.tensor,
                                       x["instances"].pred_boxes.tensor, rtol=0, atol=1e-4)
            torch.testing.assert_close(y["instances"].scores, x["instances"].scores,
                                       rtol=0, atol=1e-5)


def test_checkpoints_are_interchangeable_with_focal_settings():
    """A focal RPN's parameters are the RPN's: a Detectron2 checkpoint loads strictly into a
    focal model and back."""
    cfg = cfg_of(rpn_opts(SAMPLING="all", PRIOR_PROB=0.01))
    ref, ours = pair(cfg)
    ref.load_state_dict(ours.state_dict(), strict=True)


def test_sampling_all_uses_every_non_ignored_anchor():
    cfg = cfg_of(rpn_opts(SAMPLING="all"))
    model = build_model(cfg)
    rpn = model.proposal_generator
    model.train()
    data = inputs()
    images = model.preprocess_image(data)
    features = model.backbone(images.tensor)
    feats = [features[f] for f in rpn.in_features]
    anchors = rpn.anchor_generator(feats)
    gts = [d["instances"] for d in data]
    labels, _ = rpn.label_and_sample_anchors(anchors, gts)
    for lab, gt in zip(labels, gts):
        _, assigned = rpn.assigner(anchors, gt)
        torch.testing.assert_close(lab, assigned.to(lab.dtype))
        assert (lab == 0).sum() > cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE  # far more than sampled
    rpn.sampling = "detectron2"
    torch.manual_seed(0)
    sampled, _ = rpn.label_and_sample_anchors(anchors, gts)
    for lab in sampled:
        assert (lab >= 0).sum() <= cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE


def test_prior_bias_and_positives_normaliser():
    cfg = cfg_of(rpn_opts(SAMPLING="all", PRIOR_PROB=0.01, NORMALIZER="batch",
                          FOCAL_LOSS_ALPHA=0.25, FOCAL_LOSS_GAMMA=2.0))
    model = build_model(cfg)
    bias = model.proposal_generator.rpn_head.objectness_logits.bias
    torch.testing.assert_close(bias, torch.full_like(bias, -math.log(99.0)))
    model.train()
    with EventStorage() as storage:
        losses = model(inputs())
        num_pos = storage.history("rpn/num_pos_anchors").latest() * 3  # per image -> batch
        normalizer = storage.history("rpn/loss_normalizer").latest()
    assert normalizer == max(num_pos, 1)
    # at the prior every anchor scores ~0.01: the focal loss of the batch is dominated by
    # the positives, about alpha * (0.99)^2 * log(100) each, not by the ~10^5 negatives
    per_positive = 0.25 * 0.99**2 * math.log(100)
    assert 0.5 * per_positive < losses["loss_rpn_cls"].item() < 3 * per_positive


def test_ema_normaliser_moves_towards_the_positives():
    cfg = cfg_of(rpn_opts(SAMPLING="all", NORMALIZER="ema"))
    model = build_model(cfg)
    rpn = model.proposal_generator
    model.train()
    with EventStorage() as storage:
        model(inputs())
        num_pos = storage.history("rpn/num_pos_anchors").latest() * 3
    expected = 0.9 * cfg.MODEL.RETINA_FOCAL.RPN.NORMALIZER_INIT + 0.1 * num_pos
    assert rpn.loss_normalizer == pytest.approx(expected)


def test_box_normaliser_detectron2_keeps_the_sampled_rpn_box_scale():
    """Issue 27 (5): BOX_NORMALIZER "detectron2" divides the box loss by BATCH_SIZE_PER_IMAGE x
    images while the objectness loss keeps the positives' normaliser; "same" (the default)
    divides both by the positives. Same weights and batch: the two box losses differ exactly
    by the ratio of the normalisers, the objectness losses not at all."""
    losses = {}
    for box in ("same", "detectron2"):
        cfg = cfg_of(rpn_opts(SAMPLING="all", NORMALIZER="batch", PRIOR_PROB=0.01,
                              FOCAL_LOSS_ALPHA=0.25, FOCAL_LOSS_GAMMA=2.0, BOX_NORMALIZER=box))
        torch.manual_seed(0)
        model = build_model(cfg)
        model.train()
        with EventStorage() as storage:
            losses[box] = model(inputs())
            positives = storage.history("rpn/loss_normalizer").latest()
    sampled = cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE * 3  # 3 images
    torch.testing.assert_close(losses["detectron2"]["loss_rpn_cls"], losses["same"]["loss_rpn_cls"])
    torch.testing.assert_close(losses["detectron2"]["loss_rpn_loc"],
                               losses["same"]["loss_rpn_loc"] * positives / sampled)
    assert positives < sampled / 10  # the point: with all anchors the two differ a lot


def test_objectness_class_labels():
    out = objectness_class_labels(torch.tensor([1, 0, -1, 1], dtype=torch.int8))
    assert out.tolist() == [0, 1, -1, 0] and out.dtype == torch.int64


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("SAMPLING", "ohem", "SAMPLING='ohem' is invalid: use one of"),
        ("NORMALIZER", "mean", "NORMALIZER='mean' is invalid: use one of"),
        ("BOX_NORMALIZER", "ema", "BOX_NORMALIZER='ema' is invalid: use one of"),
        ("PRIOR_PROB", 1.0, "PRIOR_PROB=1.0 is invalid"),
        ("NORMALIZER_MOMENTUM", 1.0, "NORMALIZER_MOMENTUM=1.0 is invalid"),
        ("FOCAL_LOSS_GAMMA", -1.0, "FOCAL_LOSS_GAMMA=-1.0 is invalid"),
        ("FOCAL_LOSS_ALPHA", 2.0, "FOCAL_LOSS_ALPHA=2.0 is invalid"),
        ("LOSS_NAME", "SoftmaxFocalLoss",
         "LOSS_NAME='SoftmaxFocalLoss' is invalid: the RPN head predicts one sigmoid logit"),
        ("LOSS_NAME", "VarifocalLoss", "LOSS_NAME='VarifocalLoss' is invalid"),
        ("LOSS_NAME", "Nope", "LOSS_NAME='Nope' is not registered"),
        ("ASSIGNER_NAME", "Nope", "ASSIGNER_NAME='Nope' is not registered"),
    ],
)
def test_bad_values_name_their_key(key, value, message):
    cfg = cfg_of()
    cfg.MODEL.RETINA_FOCAL.RPN[key] = value
    with pytest.raises(ValueError, match=re.escape(RPN + message)):
        build_model(cfg)


def test_bad_rpn_iou_thresholds_name_the_rpn_key():
    cfg = cfg_of(["MODEL.RPN.IOU_THRESHOLDS", "[0.7, 0.3]"])
    with pytest.raises(ValueError, match=r"MODEL.RPN.IOU_THRESHOLDS=\[0.7, 0.3\] is invalid"):
        build_model(cfg)


def test_config_files_build():
    """The COCO YAML (no weights needed to build) and the synthetic one build FocalRPN with
    the focal settings; the Base config's RETINA_FOCAL.RPN values are the defaults
    (Detectron2's)."""
    coco = build_cfg(os.path.join(CONFIGS, "COCO-Detection",
                                  "faster_rcnn_focal_rpn_R_50_FPN_1x.yaml"))
    synthetic = build_cfg(SYNTHETIC)
    base = build_cfg(os.path.join(CONFIGS, "Base-FocalRPN-RCNN-FPN.yaml"))
    defaults = build_cfg()
    for key in FOCAL_KEYS:
        assert base.MODEL.RETINA_FOCAL.RPN[key] == defaults.MODEL.RETINA_FOCAL.RPN[key]
        assert coco.MODEL.RETINA_FOCAL.RPN[key] == synthetic.MODEL.RETINA_FOCAL.RPN[key]
    assert coco.MODEL.RETINA_FOCAL.RPN.SAMPLING == "all" and coco.SOLVER.MAX_ITER == 90000
    model = build_model(synthetic)
    assert isinstance(model.proposal_generator, FocalRPN)
    assert model.proposal_generator.sampling == "all"
    # build_retina_focal_basic_resnet_fpn_p2_backbone: Faster R-CNN's P2-P6 at the
    # synthetic widths (res2..res5 32..256 channels, a 64-channel FPN)
    shapes = model.backbone.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {
        f"p{i}": (64, 2**i) for i in range(2, 7)}
    assert model.backbone.bottom_up.output_shape()["res5"].channels == 256


@pytest.mark.parametrize("name", ["Synthetic/faster_rcnn_focal_rpn_R_18_FPN_synthetic",
                                  "COCO-Detection/faster_rcnn_focal_rpn_R_50_FPN_1x"])
def test_lazy_config_builds_the_yaml_model(name):
    """Each LazyConfig twin builds the YAML's model: same modules and settings, same
    parameters with the same initial values from the same seed."""
    from detectron2.config import LazyConfig

    from retina_focal.engine.lazy import build_lazy_model

    cfg = build_cfg(os.path.join(CONFIGS, name + ".yaml"), ["MODEL.DEVICE", "cpu"])
    lazy = LazyConfig.load(os.path.join(CONFIGS, name + ".py"))
    lazy.train.device = "cpu"
    torch.manual_seed(0)
    a = build_model(cfg)
    torch.manual_seed(0)
    b = build_lazy_model(lazy)
    assert repr(a) == repr(b)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    ra, rb = a.proposal_generator, b.proposal_generator
    for attr in ("sampling", "normalizer", "prior_prob", "batch_size_per_image",
                 "positive_fraction", "pre_nms_topk", "post_nms_topk", "nms_thresh",
                 "loss_weight", "in_features"):
        assert getattr(ra, attr) == getattr(rb, attr), attr
    assert vars(ra.assigner) == vars(rb.assigner)
    assert a.roi_heads.num_classes == b.roi_heads.num_classes == cfg.MODEL.ROI_HEADS.NUM_CLASSES


@pytest.mark.parametrize("meta_arch", ["GeneralizedRCNN", "ProposalNetwork"])
def test_training_data_is_checked_against_the_model_s_own_class_count(meta_arch):
    """Category ids are checked against MODEL.ROI_HEADS.NUM_CLASSES for a Faster R-CNN (not
    RetinaNet's key, which an R-CNN config leaves at its default), and not at all for a
    ProposalNetwork, which has no classes."""
    from retina_focal.data.build import build_resumable_train_loader

    cfg = cfg_of(["MODEL.RETINANET.NUM_CLASSES", "2", "DATASETS.TRAIN",
                  "('synthetic_shapes_tiny_train',)", "DATALOADER.NUM_WORKERS", "0",
                  "SOLVER.IMS_PER_BATCH", "2"], meta_arch=meta_arch)
    assert next(iter(build_resumable_train_loader(cfg)))  # ids 0-5 of 6 classes pass
    if meta_arch == "GeneralizedRCNN":
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
        with pytest.raises(ValueError, match="category"):
            build_resumable_train_loader(cfg)
