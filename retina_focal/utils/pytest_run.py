"""pytest in a child process, each test's outcome read from its JUnit XML file: the GPU checks'
``tests`` section (``pytest tests -k cuda``)."""
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from typing import Any, Dict, Sequence

__all__ = ["parse_junit", "run_tests"]


def parse_junit(path: str) -> Dict:
    """Outcome of each test case of a pytest ``--junitxml`` file: ``{"counts": {...},
    "tests": {nodeid: {"outcome", "message"?}}}`` (outcome passed / failed / error /
    skipped)."""
    cases: Dict[str, Dict] = {}
    for case in ET.parse(path).iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        node = f"{classname.replace('.', '/')}.py::{name}" if classname else name
        outcome, message = "passed", None
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                message = (child.get("message") or child.text or "")[:2000]
                break
        cases[node] = {"outcome": outcome, **({"message": message} if message else {})}
    counts = {k: sum(c["outcome"] == k for c in cases.values())
              for k in ("passed", "failed", "error", "skipped")}
    return {"counts": counts, "tests": cases}


def run_tests(root: str, selection: Sequence[str], junit: str, timeout_s: float) -> Dict:
    """``python -m pytest SELECTION`` in ``root``, in a child process; the outcome of each test.

    ``--continue-on-collection-errors``: a test module that cannot be imported on this machine
    (a missing optional package) is one error in the report, not a run without tests."""
    command = [sys.executable, "-m", "pytest", "-q", "-rfEs",
               "--continue-on-collection-errors", f"--junitxml={junit}", *selection]
    print(f"tests: {' '.join(command[1:])} (timeout {timeout_s:.0f} s)", flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=root, capture_output=True, text=True,
                              timeout=timeout_s)
        returncode, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        returncode = None
        output = ((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes)
                  else (e.stdout or "")) + f"\n[gpu-checks] pytest timed out after {timeout_s} s"
    result: Dict[str, Any] = {"command": " ".join(command[1:]), "returncode": returncode,
                              "seconds": time.perf_counter() - start, "output_tail": output[-6000:]}
    if os.path.exists(junit):
        result.update(parse_junit(junit))
    print(output[-3000:], flush=True)
    counts = result.get("counts", {})
    ok = returncode == 0 and counts.get("passed", 0) > 0
    # pytest exits 0 also when every selected test was skipped: not a pass on a GPU machine
    result["status"] = "passed" if ok else "failed"
    return result
