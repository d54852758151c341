"""Moving from Detectron2's RetinaNet: checkpoints load both ways, the same training run gives
the same curve and AP, --eval-only of a RetinaNet checkpoint gives RetinaNet's AP, and the
model exports through Detectron2's TracingAdapter."""
import json
import os
import pickle

import pytest
import torch
from conftest import REPO, TINY_CONFIG, copypaste_ap, run_tool
from detectron2.checkpoint import DetectionCheckpointer
from helpers import batch, crowded, pair, scripted_and_eager

from retina_focal.engine.defaults import build_model
from retina_focal.export.torchscript import run_traced, trace_model


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("direction", ["RetinaNet->RetinaFocal", "RetinaFocal->RetinaNet"])
def test_pth_checkpoint_written_by_detectron2_checkpointer(tiny_cfg, tmp_path, direction):
    ref, ours = pair(tiny_cfg)
    src, dst = (ref, ours) if direction.startswith("RetinaNet") else (ours, ref)
    DetectionCheckpointer(src, save_dir=str(tmp_path)).save("model")
    with torch.no_grad():  # make sure loading really overwrites every tensor
        for p in dst.parameters():
            p.add_(1.0)
    DetectionCheckpointer(dst).load(str(tmp_path / "model.pth"))
    assert_same_state(src, dst)


def test_model_zoo_pkl_checkpoint(tiny_cfg, tmp_path):
    """Detectron2 model-zoo files are pickles of numpy arrays."""
    ref, ours = pair(tiny_cfg)
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in ref.state_dict().items()},
                     "__author__": "Detectron2 Model Zoo"}, f)
    with torch.no_grad():
        for p in ours.parameters():
            p.mul_(0.5)
    DetectionCheckpointer(ours).load(str(path))
    assert_same_state(ref, ours)


def test_traced_export_gives_eager_detections(tiny_cfg):
    tiny_cfg.merge_from_list(["MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"])
    torch.manual_seed(0)
    model = build_model(tiny_cfg).eval()
    traced, adapter = trace_model(model, batch(True)["image"])
    other = crowded()["image"]  # a different image than the one traced
    with torch.no_grad():
        eager = model([{"image": other}])[0]["instances"]
    exported = run_traced(traced, adapter, other)[0]["instances"]
    assert len(eager) == len(exported) > 0
    torch.testing.assert_close(exported.pred_boxes.tensor, eager.pred_boxes.tensor, atol=1e-4,
                               rtol=0)
    torch.testing.assert_close(exported.scores, eager.scores, atol=1e-4, rtol=0)
    assert torch.equal(exported.pred_classes, eager.pred_classes)


def test_export_tool(tmp_path):
    proc = run_tool(["tools/export_model.py", "--config-file", TINY_CONFIG, "--output",
                     str(tmp_path), "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"], cwd=REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "equal to eager model: True" in proc.stderr + proc.stdout
    assert (tmp_path / "model.ts").exists()


def test_same_training_run_and_eval_only_of_a_retinanet_checkpoint(tmp_path):
    common = ["MODEL.RETINANET.NORM", "", "SOLVER.MAX_ITER", "4", "SOLVER.BASE_LR", "0.005",
              "MODEL.RETINANET.SCORE_THRESH_TEST", "0.01"]
    runs = {}
    for arch in ("RetinaNet", "RetinaFocal"):
        out = str(tmp_path / arch)
        proc = run_tool(["tools/train_net.py", "--config-file", TINY_CONFIG,
                         "MODEL.META_ARCHITECTURE", arch, "OUTPUT_DIR", out] + common, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-3000:]
        metrics = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
        curve = [(m["iteration"], m["loss_cls"], m["loss_box_reg"]) for m in metrics
                 if "loss_cls" in m]
        runs[arch] = (curve, copypaste_ap(proc.stdout + proc.stderr), out)
    (ref_curve, ref_ap, ref_out), (our_curve, our_ap, _) = runs["RetinaNet"], runs["RetinaFocal"]
    assert len(ref_curve) == len(our_curve) > 0
    assert max(v for v in ref_ap if v == v) > 0  # not a comparison of zeros
    for (i, a_cls, a_box), (j, b_cls, b_box) in zip(ref_curve, our_curve):
        assert i == j
        assert b_cls == pytest.approx(a_cls, rel=1e-4) and b_box == pytest.approx(a_box, rel=1e-4)
    assert our_ap == pytest.approx(ref_ap, abs=0.1, nan_ok=True)  # APl: no large objects

    # No conversion step: RetinaFocal evaluates Detectron2 RetinaNet's checkpoint and prints
    # the AP that RetinaNet prints for it.
    weights = os.path.join(ref_out, "model_final.pth")
    aps = {}
    for arch in ("RetinaNet", "RetinaFocal"):
        proc = run_tool(["tools/train_net.py", "--config-file", TINY_CONFIG, "--eval-only",
                         "MODEL.META_ARCHITECTURE", arch, "MODEL.WEIGHTS", weights,
                         "OUTPUT_DIR", str(tmp_path / f"eval_{arch}")] + common, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-3000:]
        aps[arch] = copypaste_ap(proc.stdout + proc.stderr)
    assert aps["RetinaFocal"] == pytest.approx(aps["RetinaNet"], abs=0.1, nan_ok=True)
    assert aps["RetinaNet"] == pytest.approx(ref_ap, abs=1e-6, nan_ok=True)


def test_scripted_model_gives_eager_detections(tiny_cfg):
    """Detectron2's scripting path (scripting_with_instances) works for RetinaFocal too."""
    tiny_cfg.merge_from_list(["MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"])
    out, eager = scripted_and_eager(tiny_cfg)
    assert len(eager) == len(out) > 0
    torch.testing.assert_close(out.pred_boxes.tensor, eager.pred_boxes.tensor, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.scores, eager.scores, atol=1e-4, rtol=0)
    assert torch.equal(out.pred_classes, eager.pred_classes)


def _trained_like(cfg, detections):
    """The tiny model (seed 0, eval) with a trained-like classifier (spread-out scores: a
    prior-initialised head scores every anchor alike, and its near-ties order differently in
    any two runs), keeping every candidate up to ``detections`` per image."""
    cfg.merge_from_list(["MODEL.RETINANET.SCORE_THRESH_TEST", "0.0",
                         "TEST.DETECTIONS_PER_IMAGE", str(detections)])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.head.cls_score.bias.normal_(-2, 2, generator=torch.Generator().manual_seed(2))
    return model


def assert_same_detection_set(a, b, atol=1e-4):
    """The same detections in any order: equal-score detections (frequent in the low-score
    tail) may come in another order. Each detection of ``a`` has one of ``b`` with the same
    class, box and score within ``atol``, and the counts are equal."""
    assert len(a) == len(b)
    rows = [torch.cat([x.pred_boxes.tensor, x.scores[:, None], x.pred_classes[:, None] * 1e4], 1)
            for x in (a, b)]
    distance = torch.cdist(rows[0].double(), rows[1].double(), p=float("inf"))  # (n, n)
    match = distance.argmin(1)
    assert distance.min(1).values.max() <= atol
    assert len(set(match.tolist())) == len(a)  # one to one


def _image(h, w, seed):
    return torch.randint(0, 256, (3, h, w), generator=torch.Generator().manual_seed(seed)).float()


def test_traced_export_at_other_image_sizes(tiny_cfg):
    """Traced on a 128x128 image, the module runs on other sizes (another aspect ratio, a
    size that is not a multiple of the size divisibility, a smaller one) and gives the eager
    detections, here every candidate (up to 5000 per image).

    What does not generalise (Detectron2's RetinaNet inference under tracing): whether an FPN
    level caps its candidates at TOPK_CANDIDATES_TEST is decided at trace time (a level with
    fewer candidates then keeps all of them in the trace, however many it has later). So on
    an image larger than the traced one a level can keep more candidates than eager (here P5:
    864 at 128x128, 1296 at 192x128, where eager keeps 1000), and the detections differ
    beyond the top ones (measured with Detectron2 0.6; official main matches eager here);
    traced on an image at least as large, the module is eager's."""
    model = _trained_like(tiny_cfg, 5000)

    def eager(image):
        with torch.no_grad():
            return model([{"image": image}])[0]["instances"]

    traced, adapter = trace_model(model, _image(128, 128, 0))
    for seed, size in enumerate([(64, 128), (100, 120), (64, 64)]):
        image = _image(*size, seed + 1)
        exported = run_traced(traced, adapter, image)[0]["instances"]
        expected = eager(image)
        assert tuple(exported.image_size) == size and len(expected) > 100
        assert_same_detection_set(exported, expected)
    # larger than traced
    image = _image(192, 128, 1)
    expected = eager(image)
    exported = run_traced(traced, adapter, image)[0]["instances"]
    # the top detections agree either way (Detectron2 0.6 keeps more low-score candidates here;
    # main's inference caps per level with an operation the trace keeps, and matches eager)
    torch.testing.assert_close(exported.scores[:100], expected.scores[:100], atol=1e-4, rtol=0)
    large = run_traced(*trace_model(model, _image(192, 192, 0)), image)[0]["instances"]
    assert_same_detection_set(large, expected)
