"""A config cannot run code (retina_focal.config.loading): every YAML config, and each _BASE_ it
names, is read with a safe loader; a Python tag is an error naming the file, the line and the
tag, unless --allow-unsafe-config; the shipped configs are all plain YAML."""
import glob
import os
import textwrap

import pytest
from conftest import CONFIGS, TINY_CONFIG

from retina_focal.analysis.settings import load_cfg
from retina_focal.cli._args import run_options
from retina_focal.config.loading import (
    UnsafeConfigError,
    check_lazy_config,
    check_yaml_config,
)
from retina_focal.engine.defaults import build_cfg, default_argument_parser, setup_cfg

YAML_CONFIGS = sorted(glob.glob(os.path.join(CONFIGS, "**", "*.yaml"), recursive=True))


def evil_yaml(marker):
    """A config whose line 4 runs ``touch marker`` when loaded unsafely."""
    return textwrap.dedent(f"""\
        MODEL:
          RETINANET:
            NUM_CLASSES: 3
        VERSION: !!python/object/apply:os.system ["touch {marker}"]
        """)


@pytest.mark.parametrize("path", YAML_CONFIGS, ids=lambda p: os.path.relpath(p, CONFIGS))
def test_every_shipped_config_loads_safely(path):
    check_yaml_config(path)
    cfg = build_cfg(path)
    if "FocalRPN" in os.path.basename(path) or "focal_rpn" in os.path.basename(path):
        # the Faster R-CNN configs: Detectron2's GeneralizedRCNN with the focal RPN
        assert cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"
        assert cfg.MODEL.PROPOSAL_GENERATOR.NAME == "FocalRPN"
    else:
        assert cfg.MODEL.META_ARCHITECTURE == "RetinaFocal"


def test_a_python_tag_is_refused_naming_file_line_and_tag_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.yaml"
    path.write_text(evil_yaml(marker))
    expected = (f"{path}, line 4: '!!python/object/apply:os.system' is a Python tag; "
                "retina_focal loads configs with a safe YAML loader (write the value in plain "
                "YAML, or pass --allow-unsafe-config to load it anyway: it runs code)")
    for load in (lambda: build_cfg(str(path)), lambda: load_cfg(str(path), [])):
        with pytest.raises(UnsafeConfigError) as err:
            load()
        assert str(err.value) == expected
        assert not marker.exists(), "the config's code ran"


def test_a_python_tag_in_a_base_file_names_that_file(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "evil.yaml").write_text(evil_yaml(marker))
    (tmp_path / "middle.yaml").write_text('_BASE_: "base/evil.yaml"\nSEED: 1\n')
    top = tmp_path / "top.yaml"
    top.write_text('_BASE_: "middle.yaml"\nSEED: 2\n')
    with pytest.raises(UnsafeConfigError, match=r"base/evil\.yaml, line 4: "
                                                r"'!!python/object/apply:os\.system'"):
        build_cfg(str(top))
    assert not marker.exists()


def test_base_files_in_a_loop_and_a_missing_base_are_named(tmp_path):
    (tmp_path / "a.yaml").write_text('_BASE_: "b.yaml"\n')
    (tmp_path / "b.yaml").write_text('_BASE_: "a.yaml"\n')
    with pytest.raises(ValueError, match=r"b\.yaml: _BASE_ files name each other in a loop"):
        build_cfg(str(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text('_BASE_: "nope.yaml"\n')
    with pytest.raises(FileNotFoundError, match=r"c\.yaml: its _BASE_ 'nope\.yaml'"):
        build_cfg(str(tmp_path / "c.yaml"))


def test_another_unknown_tag_is_named(tmp_path):
    path = tmp_path / "tagged.yaml"
    path.write_text("SEED: 1\nOUTPUT_DIR: !custom out\n")
    with pytest.raises(UnsafeConfigError, match=r"line 2: '!custom' is not a tag the safe YAML "
                                                r"loader knows"):
        build_cfg(str(path))


DETECTRON2_SIZES = ('SIZES: !!python/object/apply:eval ["[[x, x * 2**(1.0/3), x * 2**(2.0/3) ] '
                    'for x in [32, 64, 128, 256, 512 ]]"]')


def test_detectron2_style_eval_tag_needs_the_opt_in(tmp_path):
    """Detectron2's Base-RetinaNet.yaml writes the anchor sizes with an eval tag: refused by
    default, loaded (the same sizes as our plain-YAML base) with allow_unsafe."""
    path = tmp_path / "d2.yaml"
    path.write_text(f"MODEL:\n  ANCHOR_GENERATOR:\n    {DETECTRON2_SIZES}\n")
    with pytest.raises(UnsafeConfigError, match=r"d2\.yaml, line 3: "
                                                r"'!!python/object/apply:eval' is a Python tag"):
        build_cfg(str(path))
    cfg = build_cfg(str(path), allow_unsafe=True)
    ours = build_cfg(os.path.join(CONFIGS, "Base-RetinaFocal.yaml"))
    for got, want in zip(cfg.MODEL.ANCHOR_GENERATOR.SIZES, ours.MODEL.ANCHOR_GENERATOR.SIZES):
        assert got == pytest.approx(want)


def test_the_shared_parser_has_the_opt_in_and_setup_cfg_passes_it(tmp_path):
    parser = default_argument_parser()
    assert "runs code" in " ".join(parser.format_help().split()).lower()
    path = tmp_path / "d2.yaml"
    path.write_text(f'_BASE_: "{TINY_CONFIG}"\nMODEL:\n  ANCHOR_GENERATOR:\n'
                    f'    {DETECTRON2_SIZES}\n')
    argv = ["--config-file", str(path), "OUTPUT_DIR", str(tmp_path / "out")]
    args = parser.parse_args(argv)
    assert args.allow_unsafe_config is False
    with pytest.raises(UnsafeConfigError, match="--allow-unsafe-config"):
        setup_cfg(**run_options(args))
    assert not (tmp_path / "out").exists()  # refused before anything was set up
    cfg = setup_cfg(**run_options(parser.parse_args(["--allow-unsafe-config"] + argv)))
    assert len(cfg.MODEL.ANCHOR_GENERATOR.SIZES) == 5


TOOL_ARGS = {"train": [], "eval": [], "analyze": [], "visualize": [], "demo": ["--input", "x.png"],
             "export": ["--output", "exported"], "plot-focal-loss": ["--output", "plots"]}


@pytest.mark.parametrize("command", sorted(TOOL_ARGS))
def test_every_yaml_tool_refuses_a_python_tag_and_has_the_opt_in(command, tmp_path, capsys,
                                                                 monkeypatch):
    from retina_focal.cli import command_module, main

    marker = tmp_path / "ran"
    path = tmp_path / "evil.yaml"
    path.write_text(evil_yaml(marker))
    assert "--allow-unsafe-config" in command_module(command).build_parser().format_help()
    argv = [command, "--config-file", str(path)] + TOOL_ARGS[command]
    if command != "plot-focal-loss":
        argv += ["OUTPUT_DIR", str(tmp_path / "out")]
    monkeypatch.chdir(tmp_path)
    try:
        status = main(argv)
    except UnsafeConfigError as e:
        message = str(e)
    else:  # a tool that reports errors as "error: ..." and a non-zero status
        assert status != 0
        message = capsys.readouterr().err
    assert f"{path}, line 4: '!!python/object/apply:os.system' is a Python tag" in message
    assert not marker.exists()


def test_a_yaml_lazy_config_is_checked_and_a_python_one_is_code(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "lazy.yaml"
    path.write_text(evil_yaml(marker))
    with pytest.raises(UnsafeConfigError, match=r"lazy\.yaml, line 4"):
        check_lazy_config(str(path))
    check_lazy_config(str(path), allow_unsafe=True)
    check_lazy_config(os.path.join(CONFIGS, "Synthetic", "retina_focal_R_18_FPN_tiny.py"))
    assert not marker.exists()


def test_lazy_train_refuses_a_yaml_lazy_config_with_a_python_tag(tmp_path):
    from retina_focal.cli import command_module

    marker = tmp_path / "ran"
    path = tmp_path / "lazy.yaml"
    # a LazyConfig's shape (what LazyConfig.save writes), with a tag that runs code on line 4
    path.write_text(textwrap.dedent(f"""\
        train:
          output_dir: out
          max_iter: 2
        model: !!python/object/apply:os.system ["touch {marker}"]
        """))
    with pytest.raises(SystemExit, match=r"^error: .*lazy\.yaml, line 4"):
        command_module("lazy-train").run(["--config-file", str(path)])
    assert not marker.exists()


@pytest.mark.parametrize("command,config,fragment", [
    ("train", os.path.join(CONFIGS, "Synthetic", "retina_focal_R_18_FPN_tiny.py"),
     "is a LazyConfig (.py): run it with retina-focal lazy-train"),
    ("lazy-train", TINY_CONFIG, "is a Detectron2 YAML config (top-level ['DATALOADER', "
     "'DATASETS', 'INPUT', 'MODEL', 'OUTPUT_DIR', 'SOLVER', '_BASE_']): run it with "
     "retina-focal train"),
    ("train", "no_such.yaml", "config file 'no_such.yaml' does not exist"),
    ("lazy-train", "no_such.py", "config file 'no_such.py' does not exist"),
    # an image given as the config: one line, not Detectron2's ValueError traceback
    ("lazy-train", os.path.join(os.path.dirname(CONFIGS), "docs", "images", "web_page.png"),
     "web_page.png is not a LazyConfig: retina-focal lazy-train"),
])
def test_a_config_of_the_other_system_or_none_is_one_error_line(
        tmp_path, monkeypatch, capsys, command, config, fragment):
    """Issue 28 (9): a .py config given to train, a Detectron2 YAML to lazy-train, or a file
    that does not exist ends in one `error:` line naming the file and the command to use,
    exit status 1, and writes nothing."""
    from retina_focal.cli import main

    monkeypatch.chdir(tmp_path)
    assert main([command, "--config-file", config]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_config_kind_check_accepts_what_each_command_reads(tmp_path):
    """The other side of the check: train takes a YAML config, lazy-train a .py and the .yaml
    LazyConfig.save writes (lowercase keys, one of them `train`)."""
    from detectron2.config import LazyConfig

    from retina_focal.config.loading import ConfigError, check_config_kind

    check_config_kind(TINY_CONFIG, "yaml")
    lazy_py = os.path.join(CONFIGS, "Synthetic", "retina_focal_R_18_FPN_tiny.py")
    check_config_kind(lazy_py, "lazy")
    saved = str(tmp_path / "saved.yaml")
    LazyConfig.save(LazyConfig.load(lazy_py), saved)
    check_config_kind(saved, "lazy")
    # a YAML with a MODEL key *and* a train node is a LazyConfig (a user's node named MODEL)
    (tmp_path / "mixed.yaml").write_text("MODEL: 1\ntrain: {}\n")
    check_config_kind(str(tmp_path / "mixed.yaml"), "lazy")
    with pytest.raises(ConfigError, match="top-level"):
        (tmp_path / "yacs.yaml").write_text("SOLVER: {BASE_LR: 0.1}\n")
        check_config_kind(str(tmp_path / "yacs.yaml"), "lazy")
    with pytest.raises(ValueError, match="kind="):
        check_config_kind(TINY_CONFIG, "json")


@pytest.mark.parametrize("text, message", [
    ("model = dict(\n", r"c\.py, line 1 is not valid Python: '\(' was never closed"),
    ("# a comment\nimport nonexistent_mod\n", r"c\.py, line 2: running the config raised "
     r"ModuleNotFoundError: No module named 'nonexistent_mod'; fix the import"),
    ("model = dict(a=undefined_name)\n", r"c\.py, line 1: running the config raised NameError: "
     r"name 'undefined_name' is not defined; fix the config"),
    ("from .base import x\n", r"c\.py, line 1: Config file .*base\.py has syntax error! "
     r"\(line 1: '\(' was never closed\); fix that file"),
    (b"\xff\xfe\x00", r"c\.py is not a text file"),
], ids=["syntax", "import", "name", "syntax-in-an-imported-file", "binary"])
def test_a_lazy_config_that_cannot_run_names_the_file_and_line(text, message, tmp_path,
                                                               monkeypatch):
    """A stranger's find: a broken .py config was a SyntaxError, ModuleNotFoundError, ...
    traceback; now one ConfigError naming the file and the line, and Detectron2's patched
    import is put back."""
    import builtins

    from retina_focal.config.loading import ConfigError, load_lazy_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "base.py").write_text("x = (\n")
    (tmp_path / "c.py").write_bytes(text if isinstance(text, bytes) else text.encode())
    import_function = builtins.__import__
    with pytest.raises(ConfigError, match=message):
        load_lazy_config("c.py")
    assert builtins.__import__ is import_function


@pytest.mark.parametrize("text, eval_only, message", [
    ("", False, "c.py is not a LazyConfig for training: it defines no model, dataloader, "
                "optimizer, lr_multiplier, train (it has no config object at all)"),
    ("x = 1\n", True, "c.py is not a LazyConfig for evaluation: it defines no model, dataloader, "
                      "train (it has no config object at all)"),
    ("train = dict(max_iter=1)\nmodel = dict()\noptimizer = dict()\nlr_multiplier = dict()\n"
     "dataloader = dict(test=dict())\n", False, "it defines no dataloader.train (it has train, "
                                                "model, optimizer, lr_multiplier, dataloader)"),
], ids=["empty-training", "plain-values-evaluation", "no-training-loader"])
def test_a_lazy_config_without_the_top_level_keys_of_a_run_is_refused_before_it_runs(
        text, eval_only, message, tmp_path, monkeypatch):
    """A stranger's find: an empty file or ``x = 1`` ran until the trainer read cfg.train
    (omegaconf's ``Missing key train`` traceback). Refused before anything is written."""
    from retina_focal.config.loading import ConfigError
    from retina_focal.engine.lazy import setup_lazy_cfg

    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.py").write_text(text)
    with pytest.raises(ConfigError) as e:
        setup_lazy_cfg("c.py", [], eval_only=eval_only)
    assert message in str(e.value)
    assert os.listdir(tmp_path) == ["c.py"]
