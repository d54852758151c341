"""Importing retina_focal registers everything, in any order relative to detectron2."""
import os

import pytest
from conftest import REPO, run_tool

CHECK = (
    "from detectron2.modeling import META_ARCH_REGISTRY\n"
    "from detectron2.data import DatasetCatalog\n"
    "import retina_focal as rf\n"
    "assert 'RetinaFocal' in META_ARCH_REGISTRY\n"
    "assert 'RetinaFocalHead' in rf.RETINA_FOCAL_HEAD_REGISTRY\n"
    "assert 'SigmoidFocalLoss' in rf.CLS_LOSS_REGISTRY\n"
    "assert 'IoUThresholdMatcher' in rf.ASSIGNER_REGISTRY\n"
    "assert 'synthetic_shapes_train' in DatasetCatalog.list()\n"
    "from detectron2.modeling import RetinaNet\n"
    "assert issubclass(rf.RetinaFocal, RetinaNet)\n"
    "print('ok')\n"
)


@pytest.mark.parametrize(
    "first",
    [
        "import retina_focal",
        "import detectron2.modeling, detectron2.data, detectron2.engine; import retina_focal",
        "from retina_focal.modeling import RetinaFocal; import detectron2.modeling",
        "from retina_focal import add_retina_focal_config",
        "import retina_focal.ops",
    ],
)
def test_import_order(first):
    proc = run_tool(["-c", first + "\n" + CHECK], cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_compiled_only_op_fails_loudly():
    """Without Detectron2's compiled extension, an op that needs it raises an error naming the
    op instead of running: on 0.6 as ``scripts/setup.sh`` installs it, the stand-in
    ``detectron2._C`` says why; on official main built without it, ``torch.ops.detectron2``
    has no such op. retina_focal's COCO evaluation then avoids the compiled evaluator."""
    import torch
    from detectron2.layers import ROIAlignRotated

    from retina_focal.utils.compat import coco_evaluator_kwargs, has_compiled_ops

    if has_compiled_ops():
        pytest.skip("this detectron2 has its compiled extension: its ops run, none can fail")
    op = ROIAlignRotated((2, 2), spatial_scale=1.0, sampling_ratio=0)
    with pytest.raises(AttributeError, match="roi_align_rotated_forward"):
        op(torch.zeros(1, 1, 4, 4), torch.tensor([[0.0, 2.0, 2.0, 2.0, 2.0, 0.0]]))
    try:
        from detectron2 import _C
    except ImportError:  # official main without its extension: nothing stands in for it
        _C = None
    if _C is not None:  # 0.6's stand-in explains itself
        with pytest.raises(AttributeError, match="deform_conv_forward is unavailable"):
            _C.deform_conv_forward  # noqa: B018
    assert coco_evaluator_kwargs().get("use_fast_impl") is False


def _lint_imports(cwd):
    import shutil
    import subprocess
    import sys

    exe = shutil.which("lint-imports", path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]' installs it)")
    return subprocess.run([exe], cwd=cwd, capture_output=True, text=True)


def test_layers_only_point_down():
    """docs/layout.md's layers, checked by import-linter from .importlinter."""
    proc = _lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Contracts: 2 kept, 0 broken." in proc.stdout


def test_an_upward_import_inside_a_function_breaks_the_layer_contract(tmp_path):
    """The contract sees imports inside functions too: a copy of the package where engine
    imports export in a function fails it, naming the line."""
    import shutil

    shutil.copytree(os.path.join(REPO, "retina_focal"), tmp_path / "retina_focal",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "csrc"))
    shutil.copy(os.path.join(REPO, ".importlinter"), tmp_path)
    with open(tmp_path / "retina_focal" / "engine" / "device.py", "a") as f:
        f.write("\n\ndef _upward():\n    from retina_focal.export import runtime  # noqa\n")
    proc = _lint_imports(tmp_path)
    assert proc.returncode != 0
    assert "retina_focal.engine.device -> retina_focal.export" in proc.stdout


def _lines(subpackage):
    """Lines of every .py file of ``retina_focal/<subpackage>`` (``find ... | xargs cat | wc
    -l``)."""
    total = 0
    for folder, _, files in os.walk(os.path.join(REPO, "retina_focal", subpackage)):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    total += sum(1 for _ in f)
    return total


def test_the_periphery_is_no_larger_than_the_core():
    """docs/layout.md: the commands (cli/) and the benchmark harness (benchmark/) together are
    no larger than the detector (modeling/), counted in lines. Logic that grows in a command
    belongs in the layer it serves; a generic measuring tool, in analysis/ or utils/."""
    periphery = _lines("cli") + _lines("benchmark")
    assert periphery <= _lines("modeling"), (
        f"cli/ + benchmark/ have {periphery} lines, modeling/ {_lines('modeling')}")
