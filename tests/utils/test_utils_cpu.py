"""retina_focal.utils.cpu: the CPU model and flags every benchmark records (issue 28 (15): the
speed ratios differ between CPUs that look alike, so each figure names its CPU model); and
retina_focal.utils.environment's check of the optional packages."""
import os

from retina_focal.utils.cpu import cpu_info, describe_cpu
from retina_focal.utils.environment import measurement_environment

AMD = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 other

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: a second processor is not read
"""
ARM = "processor\t: 0\nFeatures\t: fp asimd bf16 sve\nCPU part\t: 0xd40\n"


def test_the_model_family_and_flags_are_read_from_the_first_processor(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(AMD)
    info = cpu_info(str(path))
    assert (info.model_name, info.vendor, info.family, info.model) == (
        "AMD EPYC 9B14", "AuthenticAMD", 25, 17)
    assert {"avx512_bf16", "avx2"} <= info.flags
    assert describe_cpu(info) == "AMD EPYC 9B14 (family 25 model 17; avx2 avx512f avx512_bf16)"
    arm = tmp_path / "arm"
    arm.write_text(ARM)
    info = cpu_info(str(arm))
    assert info.family is None and "bf16" in info.flags
    assert describe_cpu(info).endswith("(bf16 sve)")
    absent = cpu_info(str(tmp_path / "absent"))
    assert absent.flags == frozenset() and absent.model_name


def test_every_benchmark_report_records_the_cpu_model():
    env = measurement_environment("tools/benchmark.py", 3)
    here = cpu_info()
    assert env["cpu"] == describe_cpu(here) and env["cpu_info"]["model"] == here.model
    # which Detectron2 and which retina_focal measured (a stranger's find: only the GPU
    # checks said)
    import detectron2

    import retina_focal
    assert env["detectron2"] == detectron2.__version__
    assert env["detectron2_path"] == os.path.dirname(detectron2.__file__)
    assert env["retina_focal_path"] == os.path.dirname(os.path.abspath(retina_focal.__file__))


def test_a_missing_onnx_package_is_one_error_naming_the_extra(monkeypatch, tmp_path, capsys):
    """A stranger's find: without the "deploy" extra, ``export --format onnx`` and ``benchmark
    --only export`` ended in a ModuleNotFoundError traceback (the export had already written
    class_map.json). Now one error line names the packages and the pip command, before any
    file is written or any section runs."""
    import importlib.util

    from retina_focal import cli
    from retina_focal.utils import environment

    real = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name in ("onnx", "onnxruntime") else real(name, *args)

    monkeypatch.setattr(environment.importlib.util, "find_spec", find_spec)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["export", "--config-file", "Synthetic/retina_focal_R_18_FPN_tiny.yaml",
                     "--format", "onnx", "--output", "exported"]) == 1
    err = capsys.readouterr().err
    assert ("error: --format onnx needs the Python packages onnx and onnxruntime, not installed "
            "here: pip install 'retina_focal[deploy]'") in err and "ModuleNotFound" not in err
    assert cli.main(["benchmark", "--quick", "--only", "export", "--output", "b.json"]) == 1
    assert "error: --only export needs the Python packages onnx and onnxruntime" in (
        capsys.readouterr().err)
    assert os.listdir(tmp_path) == []  # nothing written
    # the packages are there: nothing is refused
    monkeypatch.setattr(environment.importlib.util, "find_spec", real)
    environment.require_packages("--format onnx")
