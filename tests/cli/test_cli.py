"""retina-focal (retina_focal.cli): every command runs in this process from the package alone,
and each tools/ script is a thin wrapper of one of them."""
import ast
import json
import logging
import os
import subprocess
import sys

import pytest
from conftest import REPO, TINY_CONFIG
from detectron2.data import DatasetCatalog

from retina_focal import cli


@pytest.fixture
def no_subprocess(monkeypatch, tmp_path):
    """Work in an empty folder (no tools/ reachable by a relative path) and fail on any child
    process: a command must run in this process."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a command started a process: {args}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_make_dataset_and_eval_run_in_process(no_subprocess, capsys):
    assert cli.main(["make-dataset", "--output", "data", "--num-train", "2", "--num-val", "3",
                     "--size", "64"]) == 0
    gt_path = os.path.join("data", "val.json")
    gt = json.load(open(gt_path))
    assert len(gt["images"]) == 3 and len(os.listdir(os.path.join("data", "val"))) == 3
    # the ground truth as detections: a perfect score
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "score": 1.0} for a in gt["annotations"]]
    with open("dets.json", "w") as f:
        json.dump(dets, f)
    assert cli.main(["eval", "--results", "dets.json", "--gt-json", gt_path, "--output",
                     "report"]) == 0
    report = json.load(open(os.path.join("report", "coco_report.json")))
    assert report["metrics"]["AP50"] == pytest.approx(100.0)
    assert "Per-category AP (%), sorted" in capsys.readouterr().out


def test_errors_become_exit_status_and_message(no_subprocess, capsys):
    # a SystemExit("error: ...") of the command: status 1, the message on stderr
    assert cli.main(["eval", "--results", "missing.json"]) == 1
    assert "--results needs --gt-json" in capsys.readouterr().err
    # what only a model reads is refused with a results file, not silently ignored
    assert cli.main(["eval", "--results", "missing.json", "--gt-json", "gt.json",
                     "MODEL.WEIGHTS", "x.pth"]) == 1
    assert "KEY VALUE overrides would have no effect" in capsys.readouterr().err
    assert cli.main(["eval", "--results", "missing.json", "--gt-json", "gt.json",
                     "--config-file", "c.yaml", "--image-dir", "img"]) == 1
    assert "--config-file, --image-dir would have no effect; leave them out" in \
        capsys.readouterr().err
    # argparse's own errors keep their status 2
    assert cli.main(["make-dataset"]) == 2
    assert "--output" in capsys.readouterr().err
    assert cli.main(["nope"]) == 2 and "unknown command 'nope'" in capsys.readouterr().err
    assert cli.main([]) == 0 and "plot-focal-loss" in capsys.readouterr().out


def test_every_command_has_a_parser_main_and_run():
    for command in cli.COMMANDS:
        module = cli.command_module(command)
        assert callable(module.build_parser) and callable(module.run), command
        assert callable(module.main), command
        # the function the launcher runs in worker processes is importable by name
        assert module.main.__module__.startswith("retina_focal."), command


def test_no_command_takes_an_abbreviated_option():
    """Stranger test: `imbalance --dataset` was silently read as `--datasets`. Every command's
    parser refuses a prefix of an option instead of completing it."""
    for command in cli.COMMANDS:
        parser = cli.command_module(command).build_parser()
        assert parser.allow_abbrev is False, command


def test_each_tool_is_a_thin_wrapper_of_its_command():
    tools = os.path.join(REPO, "tools")
    scripts = {script: module for module, script, _ in cli.COMMANDS.values()}
    assert set(scripts) == {f for f in os.listdir(tools) if f.endswith(".py")}
    for script, module in scripts.items():
        tree = ast.parse(open(os.path.join(tools, script)).read())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert not functions, f"tools/{script} defines {[f.name for f in functions]}"
        assert any(m.startswith("retina_focal.") for m in imported), script


# Every tools/ script, then every `retina-focal COMMAND`, with --help, in one fresh process: a
# warning raised while importing any module they need shows there (once: the first import).
_ALL_HELPS = """
import runpy, sys
from retina_focal import cli

for module, script, _ in cli.COMMANDS.values():
    sys.argv = [f"tools/{script}", "--help"]
    try:
        runpy.run_path(f"tools/{script}", run_name="__main__")
    except SystemExit as e:
        assert e.code == 0, script
    print(f"\\nEND tools/{script}", flush=True)
for command in cli.COMMANDS:
    assert cli.main([command, "--help"]) == 0, command
"""


def test_help_prints_only_the_help():
    """No warning before the help (Detectron2 and fvcore's import-time torch.jit.script
    FutureWarning was printed twice by every command), for every tools/ script and every
    ``retina-focal COMMAND --help``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    proc = subprocess.run([sys.executable, "-c", _ALL_HELPS], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("usage:") == 2 * len(cli.COMMANDS)
    assert proc.stdout.count("END tools/") == len(cli.COMMANDS)
    assert "Warning" not in proc.stderr, proc.stderr[-3000:]


def _warnings_of(caplog, name, text):
    """The distinct messages containing ``text`` that logger ``name`` gave ``caplog``."""
    return {r.getMessage() for r in caplog.records if r.name == name and text in r.getMessage()}


def test_empty_model_weights_demo_refuses_export_and_figure4_warn(no_subprocess, capsys, caplog):
    image = DatasetCatalog.get("synthetic_shapes_tiny_val")[0]["file_name"]
    assert cli.main(["demo", "--config-file", TINY_CONFIG, "--input", image, "--output", "demo",
                     "MODEL.WEIGHTS", ""]) == 1
    assert "error: MODEL.WEIGHTS is empty: add `MODEL.WEIGHTS path/to/model.pth`" in \
        capsys.readouterr().err
    assert not os.path.exists("demo")  # refused before writing anything

    loggers = [logging.getLogger(n) for n in ("retina_focal.export.torchscript",
                                              "retina_focal.plot_focal_loss")]
    for logger in loggers:  # setup_logger turns propagation off: listen on the logger itself
        logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING):
            assert cli.main(["export", "--config-file", TINY_CONFIG, "--output", "exported",
                             "MODEL.WEIGHTS", ""]) == 0
            assert cli.main(["plot-focal-loss", "--output", "fig", "--gammas", "2",
                             "--config-file", TINY_CONFIG, "--num-images", "1",
                             "--fig4-gammas", "2", "MODEL.WEIGHTS", ""]) == 0
    finally:
        for logger in loggers:
            logger.removeHandler(caplog.handler)
    assert _warnings_of(caplog, "retina_focal.export.torchscript", "MODEL.WEIGHTS is empty") == \
        {"MODEL.WEIGHTS is empty: exporting a randomly initialised model"}
    assert os.path.isfile(os.path.join("exported", "model.ts"))
    assert _warnings_of(caplog, "retina_focal.plot_focal_loss", "MODEL.WEIGHTS is empty") == \
        {"MODEL.WEIGHTS is empty: Figure 4 of a randomly initialised model"}
    assert any(f.startswith("figure4") for f in os.listdir("fig")), os.listdir("fig")


def test_plot_focal_loss_refused_for_a_missing_config_leaves_no_output_folder(tmp_path, capsys):
    from retina_focal import cli

    out = tmp_path / "plots" / "fig"
    assert cli.main(["plot-focal-loss", "--output", str(out), "--config-file",
                     str(tmp_path / "missing.yaml")]) != 0
    assert "missing.yaml" in capsys.readouterr().err
    assert not (tmp_path / "plots").exists()


@pytest.mark.parametrize("argv, message", [
    (["benchmark", "--quick", "--only", "loss", "--output", "afile/x.json"],
     "--output 'afile/x.json': its folder cannot be made ('afile' is a file, not a folder)"),
    (["benchmark-synthetic", "--config-file", TINY_CONFIG, "--only", "mapper", "--output",
      "afile/x.json"], "--output 'afile/x.json': its folder cannot be made"),
    (["gpu-checks", "--device", "cpu", "--quick", "--only", "focal_loss", "--output",
      "afile/g.json"], "--output 'afile/g.json': its folder cannot be made"),
    (["imbalance", "--config-file", TINY_CONFIG, "--datasets", "synthetic_shapes_tiny_val",
      "--coco-config", "", "--output", "afile"], "--output 'afile' is a file; give a folder"),
    (["imbalance", "--config-file", TINY_CONFIG, "--datasets", "synthetic_shapes_tiny_val",
      "--coco-config", "", "--output", "afile/sub"],
     "--output 'afile/sub': cannot create this folder ('afile' is a file, not a folder)"),
    (["analyze", "--config-file", TINY_CONFIG, "--output", "afile"],
     "--output 'afile' is a file; give a folder"),
    (["analyze", "--config-file", TINY_CONFIG, "--output", "afile/sub"],
     "--output 'afile/sub': cannot create this folder ('afile' is a file, not a folder)"),
    (["visualize", "--config-file", TINY_CONFIG, "--output", "afile/v.png"],
     "--output 'afile/v.png': its folder cannot be made ('afile' is a file, not a folder)"),
], ids=["benchmark", "benchmark-synthetic", "gpu-checks", "imbalance-file", "imbalance-below",
        "analyze-file", "analyze-below", "visualize-below"])
def test_an_output_that_cannot_be_written_is_refused_before_the_work(
        argv, message, tmp_path, monkeypatch, capsys):
    """A stranger's finds: benchmark printed its whole table, then a FileExistsError traceback
    lost the results; imbalance measured every dataset, analyze every image, before learning
    that --output was a file (or below one). Now: one error line, before any measuring (the
    work functions here fail the test if called), and nothing written."""
    import retina_focal.analysis.imbalance as imbalance_lib
    import retina_focal.benchmark.synthetic as synthetic_lib
    from retina_focal.cli import analyze, benchmark, gpu_checks, visualize

    def work(*args, **kwargs):
        raise AssertionError("the command started its work before checking --output")

    for module, names in ((benchmark, ("bench_focal", "bench_train", "bench_inference")),
                          (gpu_checks, ("run_checks",)),
                          (synthetic_lib, ("bench_mapper", "bench_head_norm")),
                          (imbalance_lib, ("measure_datasets", "measure_coco")),
                          (analyze, ("dataset_dicts", "analyze_settings")),
                          (visualize, ("draw_dataset_image",))):
        for name in names:
            monkeypatch.setattr(module, name, work)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a folder")
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error: " in line]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert os.listdir(tmp_path) == ["afile"] and (tmp_path / "afile").read_text() == \
        "not a folder"
