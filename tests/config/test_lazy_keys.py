"""Issue 28 (3): a misspelt LazyConfig key, on the command line or as a LazyCall argument in
the file, is one error line naming the key and the closest names, and writes nothing;
Detectron2's LazyConfig.apply_overrides alone would add the key and train on."""
import os

import pytest
from conftest import CONFIGS
from detectron2.config import LazyConfig

from retina_focal.config.lazy_keys import check_lazy_call_arguments, check_lazy_overrides
from retina_focal.config.loading import ConfigError

LAZY_TINY = os.path.join(CONFIGS, "Synthetic", "retina_focal_R_18_FPN_tiny.py")
LAZY_RPN = os.path.join(CONFIGS, "Synthetic", "faster_rcnn_focal_rpn_R_18_FPN_synthetic.py")


@pytest.fixture(scope="module")
def tiny():
    return LazyConfig.load(LAZY_TINY)


@pytest.mark.parametrize("override,fragments", [
    ("train.eval_perod=1", ["no key 'train.eval_perod'", "Did you mean 'eval_period'",
                            "+train.eval_perod="]),
    # a LazyCall node: its target's signature decides (RetinaFocalHead)
    ("model.head.prior_prb=0.1", ["RetinaFocalHead has no argument 'prior_prb'",
                                  "Did you mean 'prior_prob'"]),
    # RetinaFocal passes **kwargs on to Detectron2's RetinaNet: its arguments count, no others
    ("model.focal_loss_gama=1", ["RetinaFocal has no argument 'focal_loss_gama'",
                                 "'focal_loss_gamma'"]),
    ("train.max_iter.x=1", ["'train.max_iter' is a value, not a group of keys"]),
    ("trian.max_iter=1", ["no key 'trian.max_iter'", "Did you mean 'train'"]),
])
def test_a_misspelt_override_is_named(tiny, override, fragments):
    with pytest.raises(ConfigError) as info:
        check_lazy_overrides(tiny, [override])
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize("override", [
    "train.eval_period=1", "optimizer.lr=0.1", "dataloader.train.dataset.names=x",
    # a constructor argument the file leaves at its default (in the signature, not the file)
    "model.head.cls_prior_bias=-4.0", "model.anchor_matcher=None",
    "+train.my_own_key=1", "~train.seed",
])
def test_existing_keys_arguments_and_explicit_additions_pass(tiny, override):
    check_lazy_overrides(tiny, [override])


@pytest.mark.parametrize("config", [LAZY_TINY, LAZY_RPN] + [
    os.path.join(CONFIGS, "COCO-Detection", f) for f in sorted(os.listdir(
        os.path.join(CONFIGS, "COCO-Detection"))) if f.endswith(".py")])
def test_every_shipped_lazy_config_passes_and_a_misspelt_argument_in_it_is_named(config):
    cfg = LazyConfig.load(config)
    check_lazy_call_arguments(cfg)
    # the same file with one LazyCall argument misspelt, deep in the backbone
    cfg.model.backbone.bottom_up.stem.norrm = "BN"
    with pytest.raises(ConfigError, match=r"key 'model\.backbone\.bottom_up\.stem\.norrm': "
                                          r"BasicStem has no argument 'norrm'\. Did you mean "
                                          r"'norm'\?"):
        check_lazy_call_arguments(cfg)


def test_lazy_train_prints_one_error_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from retina_focal.cli import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    code = main(["lazy-train", "--config-file", LAZY_TINY, f"train.output_dir={out}",
                 "train.device=cpu", "train.eval_perod=1"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: LazyConfig override 'train.eval_perod=1'"), err
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
