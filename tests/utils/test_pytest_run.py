"""retina_focal.utils.pytest_run: pytest in a child process, each test's outcome from its JUnit
XML file (the GPU checks' tests section)."""
import textwrap

from retina_focal.utils.pytest_run import run_tests


def test_run_tests_reads_each_outcome(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "test_x.py").write_text(textwrap.dedent("""
        import pytest

        def test_on_cuda_passes():
            pass

        def test_on_cuda_fails():
            assert 1 == 2, "one is not two"

        @pytest.mark.skip(reason="needs a CUDA GPU")
        def test_on_cuda_skipped():
            pass

        def test_not_selected():
            pass
    """))
    junit = str(tmp_path / "junit.xml")
    result = run_tests(str(tmp_path), ["t", "-k", "cuda"], junit, timeout_s=120)
    assert result["status"] == "failed" and result["returncode"] == 1
    assert result["counts"] == {"passed": 1, "failed": 1, "error": 0, "skipped": 1}
    tests = result["tests"]
    assert tests["t/test_x.py::test_on_cuda_passes"] == {"outcome": "passed"}
    assert "one is not two" in tests["t/test_x.py::test_on_cuda_fails"]["message"]
    assert "needs a CUDA GPU" in tests["t/test_x.py::test_on_cuda_skipped"]["message"]
    # every selected test skipped (no GPU): pytest exits 0, but nothing was checked
    result = run_tests(str(tmp_path), ["t", "-k", "skipped"], junit, timeout_s=120)
    assert result["returncode"] == 0 and result["status"] == "failed"
    result = run_tests(str(tmp_path), ["t", "-k", "passes"], junit, timeout_s=120)
    assert result["status"] == "passed" and result["counts"]["passed"] == 1
