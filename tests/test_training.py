"""A real (tiny) training run and a real --eval-only run, on CPU."""
import json
import math
import os

import torch
from conftest import REPO, TINY_CONFIG, copypaste_ap, run_tool
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage


def batch(with_objects: bool, size=128):
    image = torch.randint(0, 255, (3, size, size), dtype=torch.uint8).float()
    inst = Instances((size, size))
    if with_objects:
        inst.gt_boxes = Boxes(torch.tensor([[10.0, 12.0, 50.0, 40.0], [60.0, 60.0, 120.0, 126.0]]))
        inst.gt_classes = torch.tensor([0, 5])
    else:
        inst.gt_boxes = Boxes(torch.zeros(0, 4))
        inst.gt_classes = torch.zeros(0, dtype=torch.int64)
    return {"image": image, "instances": inst, "height": size, "width": size}


def test_two_iterations_with_an_image_without_annotations(tiny_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_cfg)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    with EventStorage() as storage:
        # only an image without objects: every anchor negative, box loss exactly 0
        losses = model([batch(False)])
        assert math.isfinite(losses["loss_cls"].item()) and losses["loss_cls"].item() > 0
        assert losses["loss_box_reg"].item() == 0.0
        assert storage.history("num_pos_anchors").latest() == 0
        sum(losses.values()).backward()
        opt.step()
        opt.zero_grad()
        # mixed batch: both losses positive and finite, gradients everywhere finite
        losses = model([batch(True), batch(False)])
        total = sum(losses.values())
        total.backward()
        assert all(math.isfinite(v.item()) and v.item() > 0 for v in losses.values())
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        assert storage.history("num_pos_anchors").latest() > 0
        opt.step()
    # and the model evaluates on an image with no objects
    model.eval()
    with torch.no_grad():
        out = model([batch(False)])
    assert "instances" in out[0]


def test_train_net_trains_two_iterations_then_eval_only_reports_ap(tmp_path):
    out_dir = str(tmp_path / "run")
    # the tiny dataset must contain an image without annotations, and it must be trained on
    # (and the evaluation below must handle one too)
    for split in ("train", "val"):
        dicts = DatasetCatalog.get(f"synthetic_shapes_tiny_{split}")
        assert any(len(d["annotations"]) == 0 for d in dicts), split

    proc = run_tool(["tools/train_net.py", "--config-file", TINY_CONFIG, "OUTPUT_DIR", out_dir,
                     "TEST.EVAL_PERIOD", "0"], cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.json"))]
    train_rows = [m for m in metrics if "loss_cls" in m]
    assert train_rows and all(math.isfinite(m["total_loss"]) for m in train_rows)
    final = os.path.join(out_dir, "model_final.pth")
    assert os.path.exists(final)

    proc = run_tool(["tools/train_net.py", "--config-file", TINY_CONFIG, "--eval-only",
                     "MODEL.WEIGHTS", final, "OUTPUT_DIR", out_dir], cwd=REPO)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    values = copypaste_ap(log)
    assert len(values) == 6  # AP, AP50, AP75, APs, APm, APl
    assert "copypaste: AP,AP50,AP75,APs,APm,APl" in log
    assert os.path.exists(os.path.join(out_dir, "inference", "synthetic_shapes_tiny_val",
                                       "coco_instances_results.json"))
