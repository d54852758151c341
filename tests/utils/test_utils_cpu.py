"""retina_focal.utils.cpu: the CPU model and flags every benchmark records (issue 28 (15): the
speed ratios differ between CPUs that look alike, so each figure names its CPU model)."""
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
