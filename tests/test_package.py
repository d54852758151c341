"""Importing retina_focal registers everything, in any order relative to detectron2."""
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
    """On the registry's detectron2 the compiled extension is a stand-in that explains itself."""
    from retina_focal.utils.compat import coco_evaluator_kwargs, has_compiled_ops

    if has_compiled_ops():
        pytest.skip("this detectron2 has its compiled extension: nothing to check")
    from detectron2 import _C

    with pytest.raises(AttributeError, match="deform_conv_forward is unavailable"):
        _C.deform_conv_forward  # noqa: B018
    assert coco_evaluator_kwargs().get("use_fast_impl") is False
