"""The GPU checks (scripts/gpu_checks.sh, retina-focal gpu-checks) on a machine without CUDA:
a dry run that skips every section with its reason and exits 0; and the parts that do not
need a GPU: the harness on the CPU (reading pytest's results: tests/utils/test_pytest_run.py)."""
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO

import retina_focal
from retina_focal import cli
from retina_focal.analysis.assignment import anchor_count
from retina_focal.benchmark import gpu

SECTIONS = ["tests", "focal_loss", "train_step", "inference", "recompiles"]


@pytest.fixture
def no_cuda(monkeypatch):
    """As on a machine without a GPU, wherever the test runs."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def check_dry_run_report(report, fresh_process: bool):
    """``fresh_process``: the report comes from a process of its own, where nothing but the
    dry run ran (in the test process, earlier tests may have loaded the CPU kernel)."""
    assert report["dry_run"] is True
    env = report["environment"]
    for key in ("torch", "torch_cuda", "cuda_available", "gpu", "triton", "detectron2",
                "compilers", "python", "command"):
        assert key in env, key
    assert env["cuda_available"] is False and env["gpu"] is None
    # the package's folder (it named retina_focal/benchmark when the probe lived there)
    assert env["retina_focal_path"] == os.path.dirname(os.path.abspath(retina_focal.__file__))
    assert isinstance(env["cpu_kernel_built_in_this_process"], bool)
    if fresh_process:
        # the dry run builds nothing: no C++ kernel is needed to import and run it
        assert env["cpu_kernel_built_in_this_process"] is False
    assert list(report["sections"]) == SECTIONS
    for name, section in report["sections"].items():
        assert section["status"] == "skipped", name
        assert section["reason"].startswith("no CUDA device: torch.cuda.is_available() is False")
    assert report["summary"] == {"statuses": {s: "skipped" for s in SECTIONS}, "ok": True}


def test_dry_run_skips_every_section_with_its_reason(no_cuda, tmp_path, capsys):
    out = tmp_path / "out" / "gpu.json"
    assert cli.main(["gpu-checks", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    check_dry_run_report(report, fresh_process=False)
    assert report["environment"]["command"] == f"retina-focal gpu-checks --output {out}"
    assert "dry run: no CUDA" in capsys.readouterr().out


def test_the_one_command_dry_run(tmp_path):
    """``bash scripts/gpu_checks.sh --output X`` (the device call's command) with no GPU
    visible: exit 0 and the dry run's JSON; the project found through PYTHONPATH."""
    out = tmp_path / "gpu.json"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable,
               PYTHONWARNINGS="ignore")
    proc = subprocess.run(["bash", "scripts/gpu_checks.sh", "--output", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    check_dry_run_report(json.loads(out.read_text()), fresh_process=True)
    assert "gpu-checks summary" in proc.stdout


def test_script_without_output_is_a_usage_error():
    proc = subprocess.run(["bash", "scripts/gpu_checks.sh"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "--output" in proc.stderr


def test_a_run_that_cannot_start_still_writes_a_json(tmp_path):
    out = tmp_path / "gpu.json"
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH="")
    proc = subprocess.run(["bash", "scripts/gpu_checks.sh", "--output", str(out), "--nope"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    report = json.loads(out.read_text())
    assert report["exit_status"] == 2 and "--nope" in report["output_tail"]


def test_image_sizes_differ_in_anchor_count():
    sizes = gpu.image_sizes(10, (800, 1333))
    assert len(set(sizes)) == 10
    assert all(h % 32 == 0 and w % 32 == 0 and 480 <= h <= 800 and h <= w <= 1344
               for h, w in sizes)
    assert len({anchor_count(h, w) for h, w in sizes}) == 10


def test_harness_on_the_cpu(tmp_path):
    """``--device cpu --quick``: the loss benchmark and the recompilation counts run end to end
    on the CPU (where the fused loss is the C++ kernel or the portable ops: nothing compiles)."""
    out = tmp_path / "g.json"
    args = ["gpu-checks", "--output", str(out), "--device", "cpu", "--quick",
            "--only", "focal_loss", "--only", "recompiles", "--compile-batches", "2"]
    assert cli.main(args) == 0
    report = json.loads(out.read_text())
    s = report["sections"]
    assert s["tests"]["status"] == s["train_step"]["status"] == "skipped"
    assert s["focal_loss"]["status"] == "measured"
    results = s["focal_loss"]["results"]
    assert {"ours (fused)", "ours (portable)", "fvcore TorchScript", "torchvision",
            "Detectron2 loss path"} <= set(results)
    # the peak extra memory of each method, measured as the CPU benchmark measures it
    assert all(r["median_s"] > 0 and r["peak_extra_mb"] > 0 for r in results.values())
    rc = s["recompiles"]
    assert rc["status"] == "measured"
    assert len(rc["loss"]["calls"]) == 3 * 2 and len(rc["training_step"]["calls"]) == 2
    assert rc["loss"]["frames_compiled"] == 0


def test_dry_run_from_a_wheel_without_the_tests_folder(no_cuda, tmp_path, monkeypatch):
    """A stranger's find: installed from the wheel (no tests/ beside the package), the dry run
    was refused (exit 2) instead of exiting 0; on a CUDA machine the tests section is skipped
    with the reason."""
    out = tmp_path / "g.json"
    assert cli.main(["gpu-checks", "--output", str(out), "--tests-path", "no_such_tests"]) == 0
    assert json.loads(out.read_text())["dry_run"] is True
    monkeypatch.setattr(gpu, "cuda_unavailable_reason", lambda: None)  # as with CUDA
    assert cli.main(["gpu-checks", "--output", str(out), "--tests-path", "no_such_tests",
                     "--only", "tests"]) == 0
    reason = json.loads(out.read_text())["sections"]["tests"]["reason"]
    assert "'no_such_tests' is not in" in reason and "source checkout" in reason


@pytest.mark.parametrize("argv, status, message", [
    (["--device", "tpu"], 2, "--device 'tpu'"),
    (["--budget-s", "-1"], 2, "--budget-s"),
    (["MODEL.FOO", "1"], 1, "unknown config key MODEL.FOO"),
    (["MODEL.RETINANET.NUM_CLASSES", "3"], 1, "give --classes 3 instead"),
    (["MODEL.RETINANET.FOCAL_LOSS_ALPHA", "2.0"], 1, "MODEL.RETINANET.FOCAL_LOSS_ALPHA=2.0 is "
                                                     "invalid"),
])
def test_bad_input_is_refused_before_any_section(argv, status, message, tmp_path, capsys):
    out = tmp_path / "g.json"
    assert cli.main(["gpu-checks", "--output", str(out), "--device", "cpu", "--quick",
                     "--only", "inference"] + argv) == status
    assert message in capsys.readouterr().err and not out.exists()
