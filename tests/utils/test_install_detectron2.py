"""retina_focal/utils/install_detectron2.py, the detectron2 installer: the wheel ships it, and
docs/install.md's command for a machine with only the wheel runs it and says what it installs
(a stranger's find: the docs said only "torch, detectron2 there", and the installer was a
script of the source tree)."""
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

from retina_focal.utils import install_detectron2

INSTALLER = os.path.join(REPO, "retina_focal", "utils", "install_detectron2.py")


def wheel_section():
    text = open(os.path.join(REPO, "docs", "install.md"), encoding="utf-8").read()
    return text.split("## The wheel, without the source tree", 1)[1].split("\n## ", 1)[0]


def documented_command():
    """The docs' line that runs the installer: (its `python -c` program, the path after it)."""
    lines = [line for line in wheel_section().splitlines() if "install_detectron2.py" in line
             and line.startswith('python "$(')]
    assert len(lines) == 1, lines
    m = re.fullmatch(r"python \"\$\(python -c '([^']+)'\)(/[\w/]+\.py)\"", lines[0])
    assert m, lines[0]
    return m.group(1), m.group(2)


def test_the_documented_command_finds_the_installer_without_importing_retina_focal():
    """Importing retina_focal needs detectron2: the command must find the file without it."""
    program, tail = documented_command()
    proc = subprocess.run([sys.executable, "-c", program + "\nimport sys\n"
                           "print('retina_focal' in sys.modules, 'detectron2' in sys.modules)"],
                          cwd=REPO, capture_output=True, text=True, check=True)
    folder, imported = proc.stdout.splitlines()
    assert imported == "False False"
    assert os.path.samefile(folder + tail, INSTALLER)
    assert os.path.samefile(install_detectron2.__file__, INSTALLER)  # a module of the package


def test_the_docs_name_what_the_installer_runs_and_setup_runs_the_same_file(monkeypatch):
    """The pip command the docs spell out is the one the installer runs first, for the
    version it pins; scripts/setup.sh runs the same file."""
    calls = []

    def pip(*args):
        calls.append(list(args))
        raise SystemExit("stopped before downloading")

    monkeypatch.setattr(install_detectron2, "pip", pip)
    with pytest.raises(SystemExit, match="stopped"):
        install_detectron2.main()
    section = wheel_section()
    pinned = f"{install_detectron2.PACKAGE}=={install_detectron2.VERSION}"
    documented = re.search(r"`python -m pip (download [^`]+)`", section).group(1).split()
    assert documented[:2] == ["download", pinned]
    assert calls[0][:len(documented)] == documented
    assert "`python -m pip install --no-deps`" in section and calls[0][0] == "download"
    setup = open(os.path.join(REPO, "scripts", "setup.sh"), encoding="utf-8").read()
    assert '"$PY" "$ROOT/retina_focal/utils/install_detectron2.py"' in setup


def test_run_as_a_file_its_folder_does_not_shadow_top_level_modules():
    """Run by path, Python puts retina_focal/utils/ first on sys.path, where errors.py,
    compat.py, ... would shadow top-level modules for torch's imports: the file takes it off."""
    folder = os.path.dirname(INSTALLER)
    probe = ("import runpy, sys\n"
             f"sys.path.insert(0, {folder!r})\n"
             f"runpy.run_path({INSTALLER!r}, run_name='probe')\n"
             f"print({folder!r} in sys.path)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip() == "False"
