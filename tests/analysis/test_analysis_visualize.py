"""tools/visualize_assignment.py and the drawing function behind it."""
import numpy as np
import torch
from conftest import REPO, TINY_CONFIG, run_tool
from detectron2.data import DatasetCatalog
from PIL import Image

from retina_focal.analysis.visualize import IGNORED_COLOR, PALETTE, draw_assignment


def test_drawing_shows_positive_and_ignored_anchors_only():
    image = np.zeros((40, 40, 3), dtype=np.uint8)
    gt = torch.tensor([[10.0, 10.0, 30.0, 30.0], [2.0, 2.0, 8.0, 8.0]])
    anchors = torch.tensor([[12.0, 12.0, 28.0, 28.0],   # positive for gt 0
                            [1.0, 1.0, 9.0, 9.0],       # positive for gt 1
                            [5.0, 20.0, 15.0, 35.0],    # ignored
                            [20.0, 0.0, 36.0, 6.0]])    # negative: not drawn
    labels = torch.tensor([0, 1, -1, 2])
    out = draw_assignment(image, gt, ["a", "b"], anchors, labels, scale=4.0)
    pad = int(round(0.15 * 160))
    arr = np.asarray(out)

    def px(x, y):  # image coordinates -> drawn pixel colour
        return tuple(arr[int(y * 4) + pad, int(x * 4) + pad])

    assert px(20, 12) == PALETTE[0]          # top edge of gt 0's positive anchor
    assert px(20, 10) == PALETTE[0]          # gt 0 itself (thick)
    assert px(1, 5) == PALETTE[1]
    assert px(10, 35) == IGNORED_COLOR       # bottom edge of the ignored anchor
    assert px(28, 0.5) == (0, 0, 0)          # the negative anchor's edge stays background
    assert out.size == (160 + 2 * pad, 160 + 2 * pad)


def test_tool_writes_the_drawing(tmp_path):
    d = DatasetCatalog.get("synthetic_shapes_tiny_val")[1]  # generates the files
    out = tmp_path / "assign.png"
    proc = run_tool(["tools/visualize_assignment.py", "--config-file", TINY_CONFIG,
                     "--image", d["file_name"].rsplit("/", 1)[-1], "--output", str(out),
                     "MODEL.RETINA_FOCAL.ASSIGNER_NAME", "ATSSAssigner"], cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ATSSAssigner" in proc.stdout and "ignored 0" in proc.stdout
    with Image.open(out) as im:
        im.verify()
    arr = np.asarray(Image.open(out).convert("RGB"))
    assert min(arr.shape[:2]) >= 640  # magnified from 128 px
    colours = {tuple(c) for c in arr.reshape(-1, 3)[::7]}
    n_gt = len(d["annotations"])
    assert n_gt > 0 and all(PALETTE[g] in colours for g in range(min(n_gt, len(PALETTE))))
    assert f"{n_gt - 1}: " in proc.stdout  # one legend line per ground truth


def test_an_image_index_outside_the_dataset_is_refused(tmp_path, capsys):
    from retina_focal import cli

    n = len(DatasetCatalog.get("synthetic_shapes_tiny_val"))
    out = tmp_path / "assign.png"
    for index in (str(n), "999"):
        assert cli.main(["visualize", "--config-file", TINY_CONFIG, "--image", index,
                         "--output", str(out)]) == 1
        assert capsys.readouterr().err.strip() == \
            f"error: --image {index}: the dataset has {n} images (indices 0..{n - 1})"
    assert not out.exists()
