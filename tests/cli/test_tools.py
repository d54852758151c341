"""The command-line tools on the tiny synthetic dataset: evaluate.py (checkpoint and results-file
modes), train_net.py --eval-only with --dataset, demo.py, plot_training.py, and the evaluation
report the Trainer writes. One short training run (``trained``, shared by the whole test run:
see conftest.py) feeds them all."""
import json
import math
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import REPO, TINY_CONFIG, copypaste_ap, run_tool
from detectron2.data import DatasetCatalog, MetadataCatalog
from helpers import assert_png
from PIL import Image
from pycocotools.coco import COCO

from retina_focal.data.checks import check_num_classes
from retina_focal.data.datasets.coco import parse_dataset_spec, register_coco_dataset
from retina_focal.evaluation.coco_report import REPORT_FILE

VAL = "synthetic_shapes_tiny_val"
PR_PNGS = ["pr_iou50.png", "pr_iou75.png", "pr_iou50-95.png", "pr_area_all.png",
           "pr_area_small.png", "pr_area_medium.png", "pr_area_large.png"]


def same(ours, d2):
    """Our report's value (None for 'no ground truth') against Detectron2's (NaN)."""
    if d2 is None or (isinstance(d2, float) and math.isnan(d2)):
        return ours is None
    return ours == pytest.approx(d2, abs=1e-6)


def check_report(path, images=8):
    report = json.load(open(path))
    assert {"metrics", "per_category", "pr_curves", "counts", "tables", "files"} <= set(report)
    assert report["counts"]["images"] == images and report["counts"]["categories"] == 6
    for v in report["metrics"].values():
        assert v is None or 0.0 <= v <= 100.0
    for name in PR_PNGS:
        assert_png(os.path.join(os.path.dirname(path), name), min_size=(500, 400))
    return report


def test_training_logs_and_trainer_report(trained):
    # Detectron2's metric printer (with ETA), metrics.json and TensorBoard events
    assert "eta:" in trained["log"]
    rows = [m for m in trained["metrics"] if "total_loss" in m]
    assert rows and all(math.isfinite(m[k]) for m in rows for k in
                        ("total_loss", "loss_cls", "loss_box_reg", "num_pos_anchors", "lr"))
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(trained["out"]))

    report = check_report(os.path.join(trained["out"], "inference", VAL, REPORT_FILE))
    ev = trained["eval"]
    assert ev["bbox/AP"] > 0  # the 8-iteration model finds something
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert same(report["metrics"][key], ev[f"bbox/{key}"]), key
    # per-category AP: Detectron2's own per-category numbers are the reference
    for row in report["per_category"]:
        assert same(row["AP"], ev[f"bbox/AP-{row['name']}"]), row["name"]
    assert "Per-category bbox AP (sorted)" in trained["log"]


def test_evaluate_results_file_cli(trained, tmp_path, capsys):
    from retina_focal.cli import evaluate  # its command line, in this process

    out = str(tmp_path / "report")
    evaluate.run(["--results", trained["results"], "--gt-json", trained["gt_json"],
                  "--output", out])
    printed = capsys.readouterr().out
    assert "Per-category AP (%), sorted" in printed and "|   category |" in printed
    report = check_report(os.path.join(out, REPORT_FILE))
    assert same(report["metrics"]["AP"], trained["eval"]["bbox/AP"])
    assert report["counts"]["detections"] == len(json.load(open(trained["results"])))

    bad = json.load(open(trained["results"]))
    bad[0]["image_id"] = 999
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(SystemExit, match=r"^error: .*bad.json: image_id 999 not in .*val.json"):
        evaluate.run(["--results", str(tmp_path / "bad.json"), "--gt-json", trained["gt_json"]])


def test_evaluate_checkpoint_on_a_json_and_image_folder(trained, tmp_path):
    out = str(tmp_path / "eval")
    proc = run_tool(["tools/evaluate.py", "--config-file", TINY_CONFIG, "--gt-json",
                     trained["gt_json"], "--image-dir", trained["image_dir"], "--output", out,
                     "MODEL.WEIGHTS", trained["weights"], "MODEL.RETINANET.SCORE_THRESH_TEST",
                     "0.0"], cwd=REPO)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert copypaste_ap(log)[0] == pytest.approx(trained["eval"]["bbox/AP"], abs=1e-3)
    report = check_report(os.path.join(out, "inference", "eval_val", REPORT_FILE))
    assert same(report["metrics"]["AP"], trained["eval"]["bbox/AP"])


def test_num_classes_mismatch_stops_before_training(trained, tmp_path):
    from detectron2.engine import default_argument_parser

    from retina_focal.data.datasets.coco import add_dataset_argument
    from retina_focal.engine.defaults import setup_cfg

    spec = f"mine_train={trained['gt_json']}:{trained['image_dir']}"
    args = add_dataset_argument(default_argument_parser()).parse_args(
        ["--config-file", TINY_CONFIG, "--dataset", spec, "DATASETS.TRAIN", '("mine_train",)',
         "DATASETS.TEST", "()", "MODEL.RETINANET.NUM_CLASSES", "3", "OUTPUT_DIR", str(tmp_path)])
    with pytest.raises(ValueError, match=r"MODEL.RETINANET.NUM_CLASSES=3 but dataset "
                                         r"'mine_train' has 6 categories \(ellipse, "):
        # what tools/train_net.py runs first: nothing was set up or written
        setup_cfg(args.config_file, args.opts, datasets=args.dataset)
    assert os.listdir(tmp_path) == []


def test_dataset_spec_parsing_and_registration(trained, tiny_cfg):
    assert parse_dataset_spec("a=x/y.json:imgs") == ("a", "x/y.json", "imgs")
    assert parse_dataset_spec("b=C:/d/y.json:E:/imgs") == ("b", "C:/d/y.json", "E:/imgs")
    for bad in ("noequals", "=a.json:dir", "n=a.json", "n=:dir"):
        with pytest.raises(ValueError, match="NAME=JSON:IMAGE_DIR"):
            parse_dataset_spec(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        register_coco_dataset("test_tools_missing", "missing.json", trained["image_dir"])

    classes = register_coco_dataset("test_tools_reg", trained["gt_json"], trained["image_dir"])
    assert classes == ["ellipse", "rectangle", "triangle", "cross", "star", "ring"]
    # the same files again: fine; other files under the same name: an error naming it
    register_coco_dataset("test_tools_reg", trained["gt_json"], trained["image_dir"])
    with pytest.raises(ValueError, match="test_tools_reg.*already registered"):
        register_coco_dataset("test_tools_reg", trained["gt_json"], REPO)
    # Detectron2's loader agrees with the metadata we set at registration
    dicts = DatasetCatalog.get("test_tools_reg")
    assert len(dicts) == 8 and MetadataCatalog.get("test_tools_reg").thing_classes == classes

    tiny_cfg.DATASETS.TRAIN = ("test_tools_reg",)
    check_num_classes(tiny_cfg)  # 6 == 6
    tiny_cfg.MODEL.RETINANET.NUM_CLASSES = 7
    with pytest.raises(ValueError, match="NUM_CLASSES=7 but dataset 'test_tools_reg' has 6"):
        check_num_classes(tiny_cfg)


def test_demo_annotates_and_writes_coco_results(trained, tmp_path):
    out = str(tmp_path / "demo")
    val = trained["image_dir"]
    first = os.path.join(val, "000000.png")
    # a glob and a file that overlap: each image once
    proc = run_tool(["tools/demo.py", "--config-file", TINY_CONFIG, "--input",
                     os.path.join(val, "00000[0-2].png"), first, "--output", out,
                     "--score-thresh", "0.05", "--device", "cpu", "--coco-json",
                     trained["gt_json"], "MODEL.WEIGHTS", trained["weights"]], cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    names = ["000000.png", "000001.png", "000002.png"]
    assert sorted(f for f in os.listdir(out) if f.endswith(".png")) == names
    for name in names:
        drawn = Image.open(os.path.join(out, name))
        original = Image.open(os.path.join(val, name))
        assert drawn.size == original.size == (128, 128)
        diff = np.abs(np.asarray(drawn.convert("RGB"), dtype=np.int16)
                      - np.asarray(original.convert("RGB"), dtype=np.int16))
        assert diff.max() > 50  # boxes are drawn on it

    results = json.load(open(os.path.join(out, "results.json")))
    assert results and all(r["score"] >= 0.05 for r in results)
    gt = COCO(trained["gt_json"])
    dt = gt.loadRes(os.path.join(out, "results.json"))  # round trip through pycocotools
    assert len(dt.getAnnIds()) == len(results)
    own = COCO(os.path.join(out, "images.json"))  # the ids also resolve without the GT file
    assert len(own.loadRes(os.path.join(out, "results.json")).getAnnIds()) == len(results)
    ids = {im["id"] for im in gt.dataset["images"] if im["file_name"] in names}
    assert {r["image_id"] for r in results} <= ids

    # the demo's detections are those of Detectron2's evaluator (which kept every score) on
    # those images with a score above the threshold (cut a hair above it: no float ties)
    def key(r):
        return (r["image_id"], r["category_id"], -r["score"])

    cut = 0.05 + 1e-4
    ref = sorted((r for r in json.load(open(trained["results"]))
                  if r["image_id"] in ids and r["score"] >= cut), key=key)
    got = sorted((r for r in results if r["score"] >= cut), key=key)
    assert len(ref) > 10
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
        assert np.allclose(a["bbox"], b["bbox"], atol=1e-2)


def test_demo_input_errors(tmp_path):
    from retina_focal.cli import demo
    from retina_focal.data.image_files import collect_images
    from retina_focal.utils.errors import DataError

    with pytest.raises(DataError, match="matches no image file"):
        collect_images([str(tmp_path / "*.png")])
    args = demo.parse_args(["--config-file", TINY_CONFIG, "--input", "a.png", "b/",
                            "MODEL.WEIGHTS", "w.pth", "MODEL.DEVICE", "cpu"])
    assert args.input == ["a.png", "b/"]
    assert args.opts == ["MODEL.WEIGHTS", "w.pth", "MODEL.DEVICE", "cpu"]


def test_plot_training_overlays_runs(trained, tmp_path, capfd):
    from retina_focal import cli

    other = tmp_path / "other"
    other.mkdir()
    with open(other / "metrics.json", "w") as f:  # a second run with doubled losses
        for m in trained["metrics"]:
            m = dict(m)
            for k in ("total_loss", "loss_cls", "loss_box_reg"):
                if k in m:
                    m[k] *= 2
            f.write(json.dumps(m) + "\n")
    out = str(tmp_path / "plots")
    assert cli.main(["plot", trained["out"], str(other / "metrics.json"), "--labels", "base",
                     "doubled", "--output", out, "--smooth", "2"]) == 0
    for name in ("losses", "num_pos_anchors", "lr", "ap", "training"):
        assert_png(os.path.join(out, name + ".png"), min_size=(400, 300))
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert set(summary) == {"base", "doubled"}
    last = [m for m in trained["metrics"] if "total_loss" in m][-1]
    assert summary["base"]["total_loss"] == pytest.approx(last["total_loss"])
    assert summary["doubled"]["loss_cls"] == pytest.approx(2 * last["loss_cls"])
    assert summary["base"]["num_pos_anchors"] == pytest.approx(last["num_pos_anchors"])
    assert summary["base"]["bbox/AP"] == pytest.approx(trained["eval"]["bbox/AP"])

    # through the console entry point (retina-focal plot ...), with a run that is gone
    shutil.rmtree(other)
    assert cli.main(["plot", str(other)]) != 0  # in this process, its message on stderr
    assert "does not exist" in capfd.readouterr().err
    assert cli.main(["nope"]) == 2 and "unknown command 'nope'" in capfd.readouterr().err


def _evaluate_in_process(rank, world_size, init_file, weights, out_root):
    """One of ``world_size`` CPU processes (gloo) evaluating the tiny model, as Detectron2's
    launcher runs them: each infers on its shard, the main process gathers and evaluates."""
    import torch.distributed as dist
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.data import build_detection_test_loader
    from detectron2.evaluation import inference_on_dataset
    from detectron2.modeling import build_model

    from retina_focal import add_retina_focal_config
    from retina_focal.evaluation.coco_report import COCOReportEvaluator

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size)
    cfg = get_cfg()
    add_retina_focal_config(cfg)
    cfg.merge_from_file(TINY_CONFIG)
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0  # as the fixture's evaluation
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(weights)
    # each process gets its own output folder: only the main one may write anything
    evaluator = COCOReportEvaluator(VAL, output_dir=os.path.join(out_root, f"rank{rank}"))
    results = inference_on_dataset(model, build_detection_test_loader(cfg, VAL), evaluator)
    with open(os.path.join(out_root, f"results{rank}.json"), "w") as f:
        json.dump({"results": results, "report": evaluator.report is not None}, f)
    # torn down as the launcher's CPU workers do (every process done first, Detectron2's
    # cached groups released): a GLOO group freed later can abort the process
    from detectron2.utils import comm

    from retina_focal.engine.launch import leave_process_group
    comm.synchronize()
    leave_process_group()


def test_multi_process_evaluation_writes_the_report_once(trained, tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path)
    mp.spawn(_evaluate_in_process, nprocs=2,
             args=(2, str(tmp_path / "init"), trained["weights"], out), join=True)
    main, other = (json.load(open(os.path.join(out, f"results{r}.json"))) for r in (0, 1))
    assert main["report"] and not other["report"]
    assert other["results"] == {}  # Detectron2: only the main process evaluates
    assert not os.path.exists(os.path.join(out, "rank1")) or not os.listdir(
        os.path.join(out, "rank1"))
    # the two shards together are the whole split: the single-process AP
    report = check_report(os.path.join(out, "rank0", REPORT_FILE))
    assert same(report["metrics"]["AP"], trained["eval"]["bbox/AP"])
    assert main["results"]["bbox"]["AP"] == pytest.approx(trained["eval"]["bbox/AP"], abs=1e-6)


def _permuted_gt(gt_json, path):
    """``gt_json`` with the same classes under other ids (reversed), every annotation keeping
    its class: the validation JSON of the report."""
    gt = json.load(open(gt_json))
    ids = sorted(c["id"] for c in gt["categories"])
    new_id = dict(zip(ids, reversed(ids)))
    gt["categories"] = [dict(c, id=new_id[c["id"]]) for c in gt["categories"]]
    gt["annotations"] = [dict(a, category_id=new_id[a["category_id"]])
                         for a in gt["annotations"]]
    with open(path, "w") as f:
        json.dump(gt, f)
    return new_id


def test_eval_of_a_json_with_the_classes_under_other_ids_gives_the_same_ap(trained, tmp_path):
    """The report: a validation JSON with the same classes in another id order gave AP 12.3
    instead of 16.1, per-class APs under the wrong names. The checkpoint's class map (written
    by the trainer) is matched by name and results carry the JSON's own ids. The config's
    DATASETS.TRAIN (here 80-class COCO) is not consulted by an evaluation any more."""
    import torch

    from retina_focal.cli import evaluate

    ckpt = torch.load(trained["weights"])
    assert [c["name"] for c in ckpt["class_map"]] == list(MetadataCatalog.get(VAL).thing_classes)
    perm_json = str(tmp_path / "val_perm.json")
    new_id = _permuted_gt(trained["gt_json"], perm_json)
    assert any(a != b for a, b in new_id.items())
    out = str(tmp_path / "eval")
    evaluate.run(["--config-file", TINY_CONFIG, "--gt-json", perm_json, "--image-dir",
                  trained["image_dir"], "--output", out, "MODEL.WEIGHTS", trained["weights"],
                  "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0", "MODEL.DEVICE", "cpu",
                  "DATASETS.TRAIN", "('coco_2017_train',)"])
    report = check_report(os.path.join(out, "inference", "eval_val_perm", REPORT_FILE))
    assert same(report["metrics"]["AP"], trained["eval"]["bbox/AP"])
    for row in report["per_category"]:  # each class's AP under its own name and new id
        assert same(row["AP"], trained["eval"][f"bbox/AP-{row['name']}"]), row["name"]
    names = {c["id"]: c["name"] for c in json.load(open(trained["gt_json"]))["categories"]}
    assert {row["id"]: row["name"] for row in report["per_category"]} == \
        {new_id[i]: n for i, n in names.items()}
    results = json.load(open(os.path.join(out, "inference", "eval_val_perm",
                                          "coco_instances_results.json")))
    assert {r["category_id"] for r in results} <= set(new_id.values())


def test_eval_of_a_json_with_other_class_names_is_an_error_showing_both(trained, tmp_path):
    from retina_focal.cli import evaluate

    gt = json.load(open(trained["gt_json"]))
    gt["categories"][0]["name"] = "blob"
    (tmp_path / "val_other.json").write_text(json.dumps(gt))
    with pytest.raises(SystemExit) as info:  # one error line (a DataError), no traceback
        evaluate.run(["--config-file", TINY_CONFIG, "--gt-json", str(tmp_path / "val_other.json"),
                      "--image-dir", trained["image_dir"], "--output", str(tmp_path / "e"),
                      "MODEL.WEIGHTS", trained["weights"], "MODEL.DEVICE", "cpu"])
    msg = str(info.value.code)
    assert msg.startswith("error: ")
    assert "The classes of checkpoint 'model_final.pth' and dataset 'eval_val_other' differ " \
           "(only in checkpoint 'model_final.pth': ['ellipse']; only in dataset " \
           "'eval_val_other': ['blob'])" in msg
    assert "checkpoint 'model_final.pth' (6): [1: ellipse, 2: rectangle," in msg
    assert "dataset 'eval_val_other' (6): [1: blob, 2: rectangle," in msg


def test_demo_skips_unreadable_images_and_writes_the_others(trained, tmp_path, capsys):
    from retina_focal.cli import demo

    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("000000.png", "000001.png"):
        shutil.copy(os.path.join(trained["image_dir"], name), inputs / name)
    (inputs / "000000b.png").write_bytes(b"not an image")  # sorted between the two
    out = tmp_path / "demo"
    status = demo.run(["--config-file", TINY_CONFIG, "--input", str(inputs), "--output",
                       str(out), "--score-thresh", "0.05", "--device", "cpu", "MODEL.WEIGHTS",
                       trained["weights"]])
    assert status == 1
    printed = capsys.readouterr().err
    bad = str(inputs / "000000b.png")
    assert f"error: skipped 1 unreadable image(s), listed in images.json 'skipped_images': " \
        f"{bad} (" in printed
    assert sorted(f for f in os.listdir(out) if f.endswith(".png")) == ["000000.png",
                                                                        "000001.png"]
    images = json.load(open(out / "images.json"))
    assert [os.path.basename(i["file_name"]) for i in images["images"]] == ["000000.png",
                                                                            "000001.png"]
    assert [s["file_name"] for s in images["skipped_images"]] == [bad]
    assert images["skipped_images"][0]["error"]  # what the reader said
    results = json.load(open(out / "results.json"))
    assert results and {r["image_id"] for r in results} <= {i["id"] for i in images["images"]}
    # names and ids are the checkpoint's (the training JSON's)
    assert images["categories"] == json.load(open(trained["gt_json"]))["categories"]


def test_demo_with_a_json_of_the_classes_under_other_ids_writes_its_ids(trained, tmp_path):
    from retina_focal.cli import demo

    perm_json = str(tmp_path / "val_perm.json")
    new_id = _permuted_gt(trained["gt_json"], perm_json)
    out = tmp_path / "demo"
    first = os.path.join(trained["image_dir"], "000000.png")
    image_id = [im["id"] for im in json.load(open(perm_json))["images"]
                if os.path.basename(im["file_name"]) == "000000.png"][0]
    assert demo.run(["--config-file", TINY_CONFIG, "--input", first, "--output", str(out),
                     "--score-thresh", "0.05", "--device", "cpu", "--coco-json", perm_json,
                     "MODEL.WEIGHTS", trained["weights"]]) == 0
    ref = sorted((r for r in json.load(open(trained["results"]))
                  if r["image_id"] == image_id and r["score"] >= 0.05 + 1e-4),
                 key=lambda r: -r["score"])
    got = sorted((r for r in json.load(open(out / "results.json"))
                  if r["score"] >= 0.05 + 1e-4), key=lambda r: -r["score"])
    assert ref and len(got) == len(ref)
    assert [r["category_id"] for r in got] == [new_id[r["category_id"]] for r in ref]


def test_demo_and_export_read_16_bit_images_as_their_8_bit_twins(trained, tmp_path):
    """Issue 28 (1): a 16-bit image is scaled to 8 bits, not saturated: the demo's detections
    on a 16-bit grayscale PNG (value v * 257) equal those on its 8-bit twin (value v), and the
    export's --sample-image reads it as the same tensor."""
    import cv2

    from retina_focal.cli import demo
    from retina_focal.export.files import read_sample_image

    gray = np.asarray(Image.open(os.path.join(trained["image_dir"], "000000.png")).convert("L"))
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a_8bit.png"), gray)
    cv2.imwrite(str(images / "b_16bit.png"), gray.astype(np.uint16) * 257)
    assert Image.open(images / "b_16bit.png").mode.startswith("I")  # really 16-bit
    out = tmp_path / "demo"
    assert demo.run(["--config-file", TINY_CONFIG, "--input", str(images), "--output", str(out),
                     "--score-thresh", "0.05", "MODEL.WEIGHTS", trained["weights"]]) == 0
    results = json.loads((out / "results.json").read_text())
    by_image = {1: [], 2: []}
    for r in results:
        by_image[r["image_id"]].append((r["category_id"], round(r["score"], 5),
                                        [round(v, 2) for v in r["bbox"]]))
    assert by_image[1] and by_image[1] == by_image[2]
    # drawn again with the image's best 3 detections only (how many boxes a tiny model draws
    # at 0.05 varies with the CPU's threads): the same picture under the boxes (whose colours
    # the visualizer picks at random), and not an all-white one
    top = sorted((r["score"] for r in results if r["image_id"] == 1), reverse=True)[:3]
    out = tmp_path / "demo_top3"
    assert demo.run(["--config-file", TINY_CONFIG, "--input", str(images), "--output", str(out),
                     "--score-thresh", str(top[-1] - 1e-6), "MODEL.WEIGHTS",
                     trained["weights"]]) == 0
    assert len(json.loads((out / "results.json").read_text())) <= 2 * 3 + 2  # ties aside
    drawn = [np.asarray(Image.open(out / n)) for n in ("a_8bit.png", "b_16bit.png")]
    same = np.all(drawn[0] == drawn[1], axis=2)
    assert same.mean() > 0.5 and (drawn[1] == 255).mean() < 0.1
    assert torch.equal(read_sample_image(str(images / "b_16bit.png"), "BGR"),
                       read_sample_image(str(images / "a_8bit.png"), "BGR"))
