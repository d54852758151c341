import os
import sys
import tempfile

import pytest

# Generated datasets go to a throw-away cache unless the caller chose one. This must happen
# before retina_focal is imported (it registers the datasets with their cache paths).
os.environ.setdefault("RETINA_FOCAL_DATASETS", tempfile.mkdtemp(prefix="retina_focal_test_data_"))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")
TINY_CONFIG = os.path.join(CONFIGS, "Synthetic", "retina_focal_R_18_FPN_tiny.yaml")


@pytest.fixture
def tiny_cfg():
    """A mutable config of the tiny test model (CPU)."""
    from detectron2.config import get_cfg

    from retina_focal import add_retina_focal_config

    cfg = get_cfg()
    add_retina_focal_config(cfg)
    cfg.merge_from_file(TINY_CONFIG)
    return cfg


def copypaste_ap(log):
    """The last ``copypaste: AP,AP50,...`` values Detectron2's evaluation printed in ``log``."""
    import re

    lines = re.findall(r"copypaste: ([\d.,nan]+)$", log, re.M)
    assert lines, log[-3000:]
    return [float(v) for v in lines[-1].split(",")]


def run_tool(args, cwd, timeout=600):
    """Run a repository tool in a fresh Python process; return CompletedProcess (text)."""
    import subprocess

    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable] + args, cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )
