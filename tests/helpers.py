"""Helpers shared by test modules of several folders: batches and models (parity with
Detectron2), scripting, COCO ground truth and detections checked with pycocotools, PNG files.
Test modules import them by name (``from helpers import batch``), as they import conftest."""
import contextlib
import io
import json

import numpy as np
import torch
from detectron2.modeling import build_model as d2_build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from retina_focal.engine.defaults import build_model

# the categories of make_gt's ground truth (ids 3, 7, 9)
CLASSES = ["cat", "dog", "bird"]


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


def crowded(size=128):
    """An image with many overlapping boxes."""
    item = batch(True, size)
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(12, 2, generator=g) * 80
    wh = torch.rand(12, 2, generator=g) * 40 + 8
    item["instances"].gt_boxes.tensor = torch.cat([xy, xy + wh], dim=1)
    item["instances"].gt_classes = torch.randint(0, 6, (12,), generator=g)
    return item


def pair(cfg, memory_format="contiguous", norm=""):
    """Detectron2's RetinaNet (as Detectron2 builds it) and RetinaFocal (as retina_focal's
    commands build it: :func:`retina_focal.engine.defaults.build_model`, with the device
    speed-ups of the config) with the same weights.

    RetinaFocal's layout is NCHW here, as Detectron2's, so that both run the same float32
    convolution algorithms and can be compared element by element; the default CPU layout
    (channels-last) is compared in float64 below, where a different summation order cannot
    move a value across a ReLU or L1 kink.
    """
    # Detectron2 0.6's RetinaNetHead cannot build a GN head; "" (the paper's) and "BN" (the
    # quick-start config's) it can.
    cfg.MODEL.RETINANET.NORM = norm
    cfg.MODEL.RETINA_FOCAL.MEMORY_FORMAT = memory_format
    cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
    torch.manual_seed(0)
    ref = d2_build_model(cfg)
    cfg.MODEL.META_ARCHITECTURE = "RetinaFocal"
    ours = build_model(cfg)
    missing, unexpected = ours.load_state_dict(ref.state_dict(), strict=True)
    assert not missing and not unexpected
    return ref, ours


def losses_and_gradients(model, inputs):
    model.train()
    with EventStorage():
        losses = model(inputs)
    sum(losses.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return losses, grads


def assert_same_losses_and_gradients(ref, ours, rtol, atol):
    torch.manual_seed(0)
    inputs = [batch(True), batch(False), crowded()]
    ref_losses, ref_grads = losses_and_gradients(ref, inputs)
    our_losses, our_grads = losses_and_gradients(ours, inputs)
    assert ref_losses.keys() == our_losses.keys() == {"loss_cls", "loss_box_reg"}
    for key in ref_losses:
        assert our_losses[key].item() > 0
        torch.testing.assert_close(our_losses[key], ref_losses[key], rtol=rtol, atol=0)
    assert ref_grads.keys() == our_grads.keys()
    for name in ref_grads:
        torch.testing.assert_close(our_grads[name], ref_grads[name], rtol=rtol, atol=atol,
                                   msg=lambda m, n=name: f"{n}: {m}")


def scripted_and_eager(cfg):
    """Build ``cfg``'s model (seed 0, eval), script it with Detectron2's
    ``scripting_with_instances`` and run both on the crowded image: (scripted Instances,
    eager Instances). Scripted models skip post-processing (resizing to the input size), so
    the eager side stops before it too."""
    from detectron2.export import scripting_with_instances
    from detectron2.structures import Boxes

    torch.manual_seed(0)
    model = build_model(cfg).eval()
    fields = {"pred_boxes": Boxes, "scores": torch.Tensor, "pred_classes": torch.Tensor}
    scripted = scripting_with_instances(model, fields)
    image = crowded()["image"]
    with torch.no_grad():
        out = scripted([{"image": image}])[0]
        images = model.preprocess_image([{"image": image}])
        features = model.backbone(images.tensor)
        features = [features[f] for f in model.head_in_features]
        eager = model.forward_inference(images, features, model.head(features))[0]
    return out, eager


def assert_png(path, min_size=(300, 200)):
    """``path`` is a valid PNG of at least ``min_size`` (w, h) that is not a blank canvas."""
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG", path
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1], (path, im.size)
        gray = np.asarray(im.convert("L"), dtype=np.float64)
    assert len(np.unique(gray)) > 10 and gray.std() > 5, f"{path} looks blank"


def make_gt(tmp_path):
    """4 images of 100x100; category ids 3, 7, 9 (not contiguous); bird has no object."""
    rng = np.random.default_rng(0)
    images = [{"id": i, "file_name": f"{i}.png", "height": 100, "width": 100}
              for i in (10, 11, 12, 13)]
    anns = []
    for img in images:
        for _ in range(3):
            x, y = rng.uniform(0, 50, 2)
            w, h = rng.uniform(8, 45, 2)
            anns.append({"id": len(anns) + 1, "image_id": img["id"],
                         "category_id": int(rng.choice([3, 7])), "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": c, "name": n} for c, n in zip((3, 7, 9), CLASSES)]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return gt, str(path)


def noisy_detections(gt, seed=1):
    """Each object found with a jittered box and a random score, plus false positives."""
    rng = np.random.default_rng(seed)
    dets = []
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        j = rng.normal(0, 0.12, 4) * [w, h, w, h]
        dets.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                     "bbox": [x + j[0], y + j[1], max(w + j[2], 1), max(h + j[3], 1)],
                     "score": float(rng.uniform(0.2, 1.0))})
    for img in gt["images"]:
        for _ in range(2):
            dets.append({"image_id": img["id"], "category_id": int(rng.choice([3, 7, 9])),
                         "bbox": [*rng.uniform(0, 60, 2), *rng.uniform(5, 40, 2)],
                         "score": float(rng.uniform(0.0, 0.8))})
    return dets


def pycocotools_stats(gt_path, dets, cat_ids=None):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_path)
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), "bbox")
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats
