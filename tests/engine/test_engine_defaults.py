"""retina_focal.engine.defaults: the shared config, parser and model-loading path."""
import logging

import pytest
import torch
from conftest import TINY_CONFIG

from retina_focal.config.loading import ConfigError
from retina_focal.engine.checkpoint import RetinaFocalCheckpointer
from retina_focal.engine.defaults import (
    build_cfg,
    build_model,
    build_model_and_load,
    default_argument_parser,
    evaluate_checkpoint,
)


def test_build_cfg_and_its_errors(tmp_path):
    cfg = build_cfg(TINY_CONFIG, ["MODEL.RETINANET.NUM_CLASSES", "3"])
    assert cfg.is_frozen() and cfg.MODEL.RETINANET.NUM_CLASSES == 3
    assert cfg.MODEL.RETINA_FOCAL.LOSS_NAME  # retina_focal's keys are there
    assert not build_cfg(TINY_CONFIG, freeze=False).is_frozen()
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        build_cfg(str(tmp_path / "nope.yaml"))
    with pytest.raises(ValueError, match="KEY VALUE pairs"):
        build_cfg(TINY_CONFIG, ["MODEL.DEVICE"])
    # yacs says "Non-existent key" (an AssertionError); ours names the closest keys
    with pytest.raises(ConfigError, match=r"^override: unknown config key MODEL\.NO_SUCH_KEY\.$"):
        build_cfg(TINY_CONFIG, ["MODEL.NO_SUCH_KEY", "1"])
    with pytest.raises(ConfigError, match=r"unknown config key MODEL\.RETINANET\.FL_STAR_GAMMA\. "
                                          r"Did you mean MODEL\.RETINA_FOCAL\.FL_STAR_GAMMA"):
        build_cfg(TINY_CONFIG, ["MODEL.RETINANET.FL_STAR_GAMMA", "1"])
    with pytest.raises(ConfigError, match=r"Type mismatch .* SOLVER\.BASE_LR"):
        build_cfg(TINY_CONFIG, ["SOLVER.BASE_LR", "fast"])
    # an option after the overrides (argparse puts it among them): named, not "unknown key"
    with pytest.raises(ConfigError, match="option --dataset comes after the KEY VALUE"):
        build_cfg(TINY_CONFIG, ["MODEL.DEVICE", "cpu", "--dataset", "a=b:c"])


def test_parser_has_detectron2s_options_and_dataset():
    args = default_argument_parser().parse_args(
        ["--config-file", "c.yaml", "--eval-only", "--dataset", "a=x.json:imgs",
         "--dataset", "b=y.json:imgs", "MODEL.DEVICE", "cpu"])
    assert args.eval_only and args.num_gpus == 1
    assert args.dataset == ["a=x.json:imgs", "b=y.json:imgs"]
    assert args.opts == ["MODEL.DEVICE", "cpu"]


def test_build_model_and_load(tmp_path):
    cfg = build_cfg(TINY_CONFIG, ["OUTPUT_DIR", str(tmp_path)])
    torch.manual_seed(1)
    trained = build_model(cfg)
    RetinaFocalCheckpointer(trained, save_dir=str(tmp_path)).save("w")
    weights = str(tmp_path / "w.pth")

    torch.manual_seed(2)
    model = build_model_and_load(cfg, weights)
    assert not model.training
    for (k, a), b in zip(trained.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
    # resume: the last checkpoint of OUTPUT_DIR, whatever the weights say
    resumed = build_model_and_load(cfg, "", resume=True)
    assert torch.equal(resumed.head.cls_score.bias, trained.head.cls_score.bias)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_model_and_load(cfg, str(tmp_path / "missing.pth"))


def test_a_checkpoint_without_a_class_map_is_evaluated_with_a_warning(tmp_path, caplog):
    # a bare state dict, as Detectron2's model-zoo checkpoints: no "class_map" entry
    cfg = build_cfg(TINY_CONFIG, ["OUTPUT_DIR", str(tmp_path), "TEST.DETECTIONS_PER_IMAGE", "5",
                                  "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"])
    weights = str(tmp_path / "no_class_map.pth")
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    logger = logging.getLogger("retina_focal.engine.defaults")
    logger.addHandler(caplog.handler)  # whatever a setup_logger did to propagation
    try:
        with caplog.at_level(logging.WARNING, logger="retina_focal.engine.defaults"):
            results = evaluate_checkpoint(cfg, weights)
    finally:
        logger.removeHandler(caplog.handler)
    assert "AP" in results["bbox"]  # used for evaluation, not refused
    warnings = {r.getMessage() for r in caplog.records if "records no class map" in r.getMessage()}
    assert len(warnings) == 1, caplog.text
    (warning,) = warnings
    assert repr(weights) in warning and "only the class count was checked" in warning
    n = cfg.MODEL.RETINANET.NUM_CLASSES
    assert f"{n} outputs are taken to be the classes of synthetic_shapes_tiny_val" in warning
