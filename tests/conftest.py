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


def snapshot(directory):
    """Every file under ``directory``: relative path -> (size, mtime, SHA-1 of the content),
    to check that a refused command changed nothing there."""
    import hashlib

    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, directory)] = (
                    os.path.getsize(path), os.path.getmtime(path),
                    hashlib.sha1(f.read()).hexdigest())
    return files


@pytest.fixture
def tiny_cfg():
    """A mutable config of the tiny test model (CPU)."""
    from detectron2.config import get_cfg

    from retina_focal import add_retina_focal_config

    cfg = get_cfg()
    add_retina_focal_config(cfg)
    cfg.merge_from_file(TINY_CONFIG)
    return cfg


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One tiny training run for every test that needs a trained checkpoint (once per test
    run): ``tools/train_net.py`` on the tiny config for 8 iterations, then its evaluation on
    the tiny val split keeping every candidate (score threshold 0: a model this young scores
    few boxes above 0.05). Read-only for the tests: copy what you modify.

    Returns a dict: ``out`` (its OUTPUT_DIR), ``log``, ``weights`` (model_final.pth),
    ``metrics`` (metrics.json rows), ``eval`` (the evaluation's row), ``gt_json`` and
    ``image_dir`` (the val split), ``results`` (its coco_instances_results.json).
    """
    import json

    from detectron2.data import DatasetCatalog, MetadataCatalog

    import retina_focal  # noqa: F401  (registers the synthetic datasets)

    val = "synthetic_shapes_tiny_val"
    DatasetCatalog.get(val)  # generate the split, so its files exist
    meta = MetadataCatalog.get(val)
    out = str(tmp_path_factory.mktemp("trained") / "run")
    proc = run_tool(["tools/train_net.py", "--config-file", TINY_CONFIG, "OUTPUT_DIR", out,
                     "SOLVER.MAX_ITER", "8", "SOLVER.BASE_LR", "0.02",
                     "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"], cwd=REPO)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    metrics = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    evaluation = [m for m in metrics if "bbox/AP" in m][-1]
    return {"out": out, "log": log, "weights": os.path.join(out, "model_final.pth"),
            "metrics": metrics, "eval": evaluation, "gt_json": meta.json_file,
            "image_dir": meta.image_root,
            "results": os.path.join(out, "inference", val, "coco_instances_results.json")}


def copypaste_ap(log):
    """The last ``copypaste: AP,AP50,...`` values Detectron2's evaluation printed in ``log``."""
    import re

    lines = re.findall(r"copypaste: ([\d.,nan]+)$", log, re.M)
    assert lines, log[-3000:]
    return [float(v) for v in lines[-1].split(",")]


def run_tool(args, cwd, timeout=600):
    """Run a repository tool in a fresh Python process; return CompletedProcess (text). The
    process imports this checkout's retina_focal (a tools/ script's folder is on its path,
    not the checkout), whichever copy of the package the environment has installed."""
    import subprocess

    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join(
        [REPO] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return subprocess.run(
        [sys.executable] + args, cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )
