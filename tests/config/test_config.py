"""Configs: every file in configs/ builds a RetinaFocal; a stock Detectron2 RetinaNet config
runs with only META_ARCHITECTURE changed (its eval tag needs --allow-unsafe-config); bad values
fail at model build, naming the key."""
import glob
import os

import pytest
import torch
from conftest import CONFIGS, REPO
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from retina_focal import (
    IoUThresholdMatcher,
    RetinaFocal,
    RetinaFocalHead,
    SigmoidFocalLoss,
    add_retina_focal_config,
)
from retina_focal.config.loading import UnsafeConfigError
from retina_focal.engine.defaults import build_cfg
from retina_focal.modeling import FocalRPN

CONFIG_FILES = sorted(glob.glob(os.path.join(CONFIGS, "**", "*.yaml"), recursive=True))


def make_cfg(config_file=None, opts=(), allow_unsafe=False):
    """The tools' config path (safe YAML unless ``allow_unsafe``), on CPU, not frozen."""
    cfg = build_cfg(config_file, opts, freeze=False, allow_unsafe=allow_unsafe)
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def test_config_files_exist():
    names = {os.path.relpath(p, CONFIGS) for p in CONFIG_FILES}
    for expected in ["Base-RetinaFocal.yaml", "COCO-Detection/retina_focal_R_50_FPN_1x.yaml",
                     "COCO-Detection/retina_focal_R_50_FPN_3x.yaml",
                     "COCO-Detection/retina_focal_R_101_FPN_3x.yaml",
                     "Synthetic/retina_focal_R_18_FPN_synthetic.yaml"]:
        assert expected in names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: os.path.relpath(p, CONFIGS))
def test_every_config_builds_a_model(path):
    with open(path) as f:
        assert "!!python" not in f.read(), "configs must be safe YAML"
    cfg = make_cfg(path)
    model = build_model(cfg)
    if cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN":  # Faster R-CNN with FocalRPN (issue 17)
        assert isinstance(model.proposal_generator, FocalRPN)
        assert isinstance(model.proposal_generator.objectness_loss, SigmoidFocalLoss)
        assert isinstance(model.proposal_generator.assigner, IoUThresholdMatcher)
        return
    assert isinstance(model, RetinaFocal)
    assert isinstance(model.head, RetinaFocalHead)
    assert isinstance(model.cls_loss, SigmoidFocalLoss)
    assert isinstance(model.assigner, IoUThresholdMatcher)
    assert model.anchor_generator.num_cell_anchors == [9] * 5  # 3 scales x 3 ratios, P3-P7


def test_coco_schedules_match_detectron2():
    one = make_cfg(os.path.join(CONFIGS, "COCO-Detection/retina_focal_R_50_FPN_1x.yaml"))
    three = make_cfg(os.path.join(CONFIGS, "COCO-Detection/retina_focal_R_101_FPN_3x.yaml"))
    assert (one.SOLVER.MAX_ITER, tuple(one.SOLVER.STEPS)) == (90000, (60000, 80000))
    assert (three.SOLVER.MAX_ITER, tuple(three.SOLVER.STEPS)) == (270000, (210000, 250000))
    assert one.SOLVER.IMS_PER_BATCH == 16 and one.SOLVER.BASE_LR == 0.01
    assert three.MODEL.RESNETS.DEPTH == 101


def test_only_new_keys_are_added():
    plain = get_cfg()
    extended = get_cfg()
    add_retina_focal_config(extended)
    add_retina_focal_config(extended)  # idempotent
    assert set(extended.MODEL.keys()) - set(plain.MODEL.keys()) == {"RETINA_FOCAL"}
    extended.MODEL.pop("RETINA_FOCAL")
    assert extended == plain
    defaults = os.path.join(REPO, "retina_focal", "config", "defaults.py")
    with open(defaults) as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):  # a one-line comment above each key
        if line.strip().startswith("_C.MODEL.RETINA_FOCAL.") and "CN()" not in line:
            assert lines[i - 1].strip().startswith("#"), line


STOCK_RETINANET_YAML = """
MODEL:
  META_ARCHITECTURE: "{arch}"
  BACKBONE:
    NAME: "build_retinanet_resnet_fpn_backbone"
  RESNETS:
    DEPTH: 18
    RES2_OUT_CHANNELS: 64
    OUT_FEATURES: ["res3", "res4", "res5"]
  ANCHOR_GENERATOR:
    SIZES: !!python/object/apply:eval ["[[x, x * 2**(1.0/3), x * 2**(2.0/3) ] for x in [32, 64, 128, 256, 512 ]]"]  # noqa: E501
  FPN:
    IN_FEATURES: ["res3", "res4", "res5"]
  RETINANET:
    IOU_THRESHOLDS: [0.4, 0.5]
    IOU_LABELS: [0, -1, 1]
    SMOOTH_L1_LOSS_BETA: 0.0
    FOCAL_LOSS_GAMMA: 1.5
DATASETS:
  TRAIN: ("coco_2017_train",)
  TEST: ("coco_2017_val",)
SOLVER:
  IMS_PER_BATCH: 16
  BASE_LR: 0.01
VERSION: 2
"""


def test_stock_detectron2_retinanet_yaml_with_only_meta_architecture_changed(tmp_path):
    """Detectron2's own RetinaNet YAML style needs only the name. Its anchor sizes are a
    ``!!python/object/apply:eval`` tag, which runs code: refused by the safe loader, naming the
    file, the line and the flag; loaded with ``--allow-unsafe-config`` (``allow_unsafe``)."""
    models = {}
    for arch in ("RetinaNet", "RetinaFocal"):
        path = tmp_path / f"{arch}.yaml"
        path.write_text(STOCK_RETINANET_YAML.format(arch=arch))
        with pytest.raises(UnsafeConfigError,
                           match=rf"{arch}\.yaml, line 11: '!!python/object/apply:eval' is a "
                                 r"Python tag.*pass --allow-unsafe-config to load it anyway"):
            make_cfg(str(path))
        models[arch] = build_model(make_cfg(str(path), allow_unsafe=True))
    ours, ref = models["RetinaFocal"], models["RetinaNet"]
    assert isinstance(ours, RetinaFocal)
    assert ours.cls_loss.gamma == 1.5 and ours.cls_loss.alpha == 0.25
    assert ours.assigner.thresholds == [0.4, 0.5]
    assert ours.state_dict().keys() == ref.state_dict().keys()
    for key, value in ref.state_dict().items():
        assert ours.state_dict()[key].shape == value.shape, key


BAD = [
    (["MODEL.RETINA_FOCAL.HEAD_NAME", "NoSuchHead"], ["MODEL.RETINA_FOCAL.HEAD_NAME",
                                                      "NoSuchHead", "RetinaFocalHead"]),
    (["MODEL.RETINA_FOCAL.LOSS_NAME", "FocalLos"], ["MODEL.RETINA_FOCAL.LOSS_NAME", "FocalLos",
                                                    "SigmoidFocalLoss"]),
    (["MODEL.RETINA_FOCAL.ASSIGNER_NAME", "ATSS?"], ["MODEL.RETINA_FOCAL.ASSIGNER_NAME", "ATSS?",
                                                     "IoUThresholdMatcher"]),
    (["MODEL.RETINANET.FOCAL_LOSS_ALPHA", "1.5"], ["MODEL.RETINANET.FOCAL_LOSS_ALPHA", "1.5",
                                                   "[0, 1]", "-1"]),
    (["MODEL.RETINANET.FOCAL_LOSS_ALPHA", "-0.25"], ["FOCAL_LOSS_ALPHA", "-0.25"]),
    (["MODEL.RETINANET.FOCAL_LOSS_GAMMA", "-1.0"], ["MODEL.RETINANET.FOCAL_LOSS_GAMMA", "-1.0",
                                                    ">= 0"]),
    (["MODEL.RETINANET.IOU_THRESHOLDS", "[0.5, 0.4]"], ["MODEL.RETINANET.IOU_THRESHOLDS",
                                                        "[0.5, 0.4]", "increasing"]),
    (["MODEL.RETINANET.IOU_LABELS", "[0, 1]"], ["MODEL.RETINANET.IOU_LABELS", "[0, 1]",
                                                "3 labels"]),
    # a stranger's find: 0 classes built a model that failed in its first step (RuntimeError,
    # IndexError); -1, a tensor of negative size
    (["MODEL.RETINANET.NUM_CLASSES", "0"], ["MODEL.RETINANET.NUM_CLASSES=0 is invalid: use an "
                                            "integer >= 1"]),
    (["MODEL.RETINANET.NUM_CLASSES", "-1"], ["MODEL.RETINANET.NUM_CLASSES=-1 is invalid"]),
    (["MODEL.RETINANET.NUM_CLASSES", "0", "MODEL.RETINA_FOCAL.LOSS_NAME", "SoftmaxFocalLoss"],
     ["MODEL.RETINANET.NUM_CLASSES=0 is invalid"]),
]


@pytest.mark.parametrize("opts,fragments", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_config_is_a_clear_value_error(tiny_cfg, opts, fragments):
    tiny_cfg.merge_from_list(opts)
    with pytest.raises(ValueError) as info:
        build_model(tiny_cfg)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_cfg_without_retina_focal_keys_is_explained():
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "RetinaFocal"
    cfg.MODEL.DEVICE = "cpu"
    with pytest.raises(ValueError, match="add_retina_focal_config"):
        build_model(cfg)


def test_a_head_of_no_class_is_refused():
    from detectron2.layers import ShapeSpec

    from retina_focal import RetinaFocalHead

    for bad in (0, -1):
        with pytest.raises(ValueError, match=rf"num_classes={bad} is invalid: use an integer"):
            RetinaFocalHead(input_shape=[ShapeSpec(channels=8, stride=8)], num_classes=bad,
                            num_anchors=1, conv_dims=[8])


def test_head_init_follows_the_paper(tiny_cfg):
    model = build_model(tiny_cfg)
    bias = model.head.cls_score.bias
    assert torch.allclose(torch.sigmoid(bias), torch.full_like(bias, 0.01))
    assert len([m for m in model.head.cls_subnet if isinstance(m, torch.nn.Conv2d)]) == 2
    assert model.head.cls_subnet[0].weight is not model.head.bbox_subnet[0].weight


# ---------------------------------------------------------------- validated once, named twice

# (cfg overrides, component class, constructor kwargs with the same bad value, argument, key)
SAME_CHECK = [
    (["MODEL.RETINANET.FOCAL_LOSS_GAMMA", "-1.0"], "SigmoidFocalLoss", {"gamma": -1.0},
     "gamma", "MODEL.RETINANET.FOCAL_LOSS_GAMMA"),
    (["MODEL.RETINA_FOCAL.FOCAL_LOSS_IMPL", "cuda"], "SigmoidFocalLoss", {"impl": "cuda"},
     "impl", "MODEL.RETINA_FOCAL.FOCAL_LOSS_IMPL"),
    (["MODEL.RETINA_FOCAL.ALPHA_PER_CLASS", "[0.1, 0.2, 0.3, 0.4, 0.5, 1.5]"], "SigmoidFocalLoss",
     {"alpha": [0.1, 0.2, 0.3, 0.4, 0.5, 1.5]}, "alpha", "MODEL.RETINA_FOCAL.ALPHA_PER_CLASS"),
    (["MODEL.RETINA_FOCAL.LOSS_NAME", "VarifocalLoss", "MODEL.RETINA_FOCAL.VFL_ALPHA", "0.0"],
     "VarifocalLoss", {"alpha": 0.0}, "alpha", "MODEL.RETINA_FOCAL.VFL_ALPHA"),
    (["MODEL.RETINA_FOCAL.LOW_QUALITY_MIN_IOU", "1.5"], "IoUThresholdMatcher",
     {"low_quality_min_iou": 1.5}, "low_quality_min_iou", "MODEL.RETINA_FOCAL.LOW_QUALITY_MIN_IOU"),
    (["MODEL.RETINA_FOCAL.ASSIGNER_NAME", "ATSSAssigner", "MODEL.RETINA_FOCAL.ATSS_TOPK", "0"],
     "ATSSAssigner", {"topk": 0}, "topk", "MODEL.RETINA_FOCAL.ATSS_TOPK"),
    (["MODEL.RETINA_FOCAL.SAMPLER_NAME", "OHEMSampler", "MODEL.RETINA_FOCAL.OHEM_NMS_THRESH",
      "0.0"], "OHEMSampler", {"nms_thresh": 0.0}, "nms_thresh",
     "MODEL.RETINA_FOCAL.OHEM_NMS_THRESH"),
    (["MODEL.RETINA_FOCAL.SAMPLER_NAME", "HardNegativeMiner",
      "MODEL.RETINA_FOCAL.HNM_MIN_NEGATIVES", "-1"], "HardNegativeMiner", {"min_negatives": -1},
     "min_negatives", "MODEL.RETINA_FOCAL.HNM_MIN_NEGATIVES"),
    (["MODEL.RETINA_FOCAL.NORMALIZER", "mean"], "RetinaFocal", {"normalizer": "mean"},
     "normalizer", "MODEL.RETINA_FOCAL.NORMALIZER"),
    (["MODEL.RETINANET.NUM_CLASSES", "0"], "RetinaFocal", {"num_classes": 0}, "num_classes",
     "MODEL.RETINANET.NUM_CLASSES"),
]


@pytest.mark.parametrize("opts,name,kwargs,argument,key", SAME_CHECK,
                         ids=[f"{c[1]}.{c[3]}" for c in SAME_CHECK])
def test_one_check_names_the_argument_or_the_cfg_key(tiny_cfg, opts, name, kwargs, argument,
                                                     key):
    """The constructor is the only validator: called with arguments, its error names the
    argument; built from a cfg (the class itself or build_model), the same message names the
    cfg key instead."""
    import retina_focal

    cls = getattr(retina_focal, name)
    if name == "RetinaFocal":  # the model: every other argument from the (valid) cfg
        kwargs = dict(cls.from_config(tiny_cfg), **kwargs)
    with pytest.raises(ValueError) as direct:
        cls(**kwargs)
    tiny_cfg.merge_from_list(opts)
    with pytest.raises(ValueError) as from_cfg:
        cls(tiny_cfg)
    with pytest.raises(ValueError) as from_model:
        build_model(tiny_cfg)
    direct, from_cfg = str(direct.value), str(from_cfg.value)
    assert direct.startswith(f"{argument}=") and from_cfg.startswith(f"{key}=")
    assert direct[len(argument):] == from_cfg[len(key):]  # one message, two names
    assert str(from_model.value) == from_cfg


@pytest.mark.parametrize("component", ["cls_loss", "assigner", "sampler"])
def test_components_must_derive_from_their_base_class(tiny_cfg, component):
    """RetinaFocal calls interfaces, it does not probe objects: anything else is refused."""
    from detectron2.modeling.matcher import Matcher

    kwargs = RetinaFocal.from_config(tiny_cfg)
    kwargs[component] = {"cls_loss": torch.nn.BCEWithLogitsLoss(),
                         "assigner": Matcher([0.5], [0, 1]),
                         "sampler": lambda labels, num_classes: None}[component]
    base = {"cls_loss": "DenseClsLoss", "assigner": "AnchorAssigner",
            "sampler": "AnchorSampler"}[component]
    with pytest.raises(TypeError, match=f"{component} must be a retina_focal.*{base}"):
        RetinaFocal(**kwargs)


def test_synthetic_config_trains_in_bfloat16_where_the_cpu_has_it():
    """The quick-start config trains under CPU bfloat16 autocast only where the CPU has
    bfloat16 instructions ("native"), at its bfloat16 schedule; the tiny config (tests) and the
    ablation schedules `cpu` / `cpu_medium` / `cpu_short` (published studies) stay float32,
    LR 0.02 / 1700 iterations for `cpu`, so their numbers do not depend on whether the CPU has
    bfloat16. ("native" follows the CPU flags: tests/ops/test_numerics.py.)"""
    from retina_focal.ablation.studies import get_schedule

    cfg = make_cfg(os.path.join(CONFIGS, "Synthetic", "retina_focal_R_18_FPN_synthetic.yaml"))
    assert cfg.SOLVER.AMP.ENABLED and cfg.MODEL.RETINA_FOCAL.CPU_BFLOAT16 == "native"
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS)) == (
        0.06, 1400, (1100, 1300))
    tiny = make_cfg(os.path.join(CONFIGS, "Synthetic", "retina_focal_R_18_FPN_tiny.yaml"))
    assert not tiny.SOLVER.AMP.ENABLED
    for name in ("cpu", "cpu_medium", "cpu_short"):
        overrides = dict(get_schedule(name).overrides)
        assert overrides["SOLVER.AMP.ENABLED"] is False, name
    cpu = dict(get_schedule("cpu").overrides)
    assert (cpu["SOLVER.BASE_LR"], cpu["SOLVER.MAX_ITER"], cpu["SOLVER.STEPS"]) == (
        0.02, 1700, (1300, 1550))


def _components_with_config_keys():
    import retina_focal.modeling as modeling

    found = {}
    for name in dir(modeling):
        obj = getattr(modeling, name)
        if isinstance(obj, type) and obj.__dict__.get("config_keys"):
            found[name] = obj
    found["FocalRPN"] = FocalRPN
    return found


@pytest.mark.parametrize("name,cls", sorted(_components_with_config_keys().items()))
def test_each_config_key_table_names_real_keys_and_constructor_arguments(name, cls):
    """config_keys is the one table from_config reads (config_values) and errors name keys
    from: each entry is an argument of the constructor and a key of the config."""
    import inspect

    from retina_focal import add_retina_focal_config
    from retina_focal.config import config_values

    cfg = get_cfg()
    add_retina_focal_config(cfg)
    # the constructor's arguments, and its parents' where it passes **kwargs on
    params = set()
    for klass in cls.__mro__:
        if "__init__" in klass.__dict__:
            sig = inspect.signature(inspect.unwrap(klass.__init__)).parameters
            params |= set(sig)
            if not any(p.kind is p.VAR_KEYWORD for p in sig.values()):
                break
    assert set(cls.config_keys) <= params, set(cls.config_keys) - params
    values = config_values(cfg, cls.config_keys)  # an unknown key: AttributeError
    assert set(values) == set(cls.config_keys)
    for arg, key in getattr(cls, "nested_config_keys", {}).items():
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)


def test_config_values_reads_each_key_and_calls_a_key_function():
    from retina_focal import add_retina_focal_config
    from retina_focal.config import config_values

    cfg = get_cfg()
    add_retina_focal_config(cfg)
    cfg.MODEL.RETINANET.FOCAL_LOSS_GAMMA = 1.5
    cfg.MODEL.RETINA_FOCAL.ALPHA_PER_CLASS = [0.1, 0.2]
    keys = {"gamma": "MODEL.RETINANET.FOCAL_LOSS_GAMMA",
            "alpha": lambda c: ("MODEL.RETINA_FOCAL.ALPHA_PER_CLASS"
                                if c.MODEL.RETINA_FOCAL.ALPHA_PER_CLASS
                                else "MODEL.RETINANET.FOCAL_LOSS_ALPHA")}
    assert config_values(cfg, keys) == {"gamma": 1.5, "alpha": [0.1, 0.2]}
    cfg.MODEL.RETINA_FOCAL.ALPHA_PER_CLASS = []
    assert config_values(cfg, keys)["alpha"] == cfg.MODEL.RETINANET.FOCAL_LOSS_ALPHA
