"""Issue 28: every command, every input. Each row of BAD is one command given one kind of bad
input (missing, empty, truncated, wrong kind of file, an odd image, other classes, a misspelt
key in YAML or LazyConfig, an option in an odd place). Each must end with a non-zero status,
exactly one ``error:`` line naming the file, key or value (the row's fragment), no traceback,
and no change to any file of an existing run directory handed to it. GOOD is the happy path of
each command, on the same inputs. docs/reliability.md lists these rows as they are."""
import json
import logging
import os
import re
import shutil

import numpy as np
import pytest
import torch
from conftest import CONFIGS, TINY_CONFIG, snapshot
from PIL import Image

from retina_focal.cli import main

LAZY_TINY = os.path.join(CONFIGS, "Synthetic", "retina_focal_R_18_FPN_tiny.py")
LAZY_SYNTHETIC = os.path.join(CONFIGS, "Synthetic", "retina_focal_R_18_FPN_synthetic.py")
RPN_YAML = os.path.join(CONFIGS, "Synthetic", "faster_rcnn_focal_rpn_R_18_FPN_synthetic.yaml")
CPU = ["MODEL.DEVICE", "cpu"]


@pytest.fixture(scope="module")
def files(trained, tmp_path_factory):
    """Every bad (and good) input the rows name, in one folder; ``run`` is a copy of the
    trained tiny run (a finished OUTPUT_DIR)."""
    d = tmp_path_factory.mktemp("inputs")
    f = {"dir": str(d)}

    def put(name, data):
        path = d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
        f[name] = str(path)
        return str(path)

    weights = open(trained["weights"], "rb").read()
    put("weights.pth", weights)
    put("truncated.pth", weights[: len(weights) // 2])
    put("empty.pth", b"")
    put("text.pth", "not a checkpoint\n")
    put("model.onnx", b"\x08\x07" + b"\x00" * 64)
    put("empty.yaml", "")
    put("comment_only.yaml", "# a config to be written\n")
    put("base_by_name.yaml", '_BASE_: "Synthetic/retina_focal_R_18_FPN_tiny.yaml"\n')
    put("not_yaml.yaml", "MODEL: [unclosed\n  - : :\n")
    put("image_as_config.yaml", b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    put("misspelt.yaml", f'_BASE_: "{TINY_CONFIG}"\nMODEL:\n  RETINANET:\n    NUM_CLASSE: 6\n')
    put("empty.json", "")
    # LazyConfig .py files that cannot be run, or define no config object
    put("empty.py", "")
    put("plain_values.py", "x = 1\n")
    put("import_missing.py", "import nonexistent_mod\n")
    put("syntax_error.py", "model = dict(\n")
    put("truncated.json", '{"images": [{"id": 1, "file_name": "a.png"')
    put("list.json", "[1, 2, 3]\n")
    put("no_categories.json", json.dumps({"images": [], "annotations": []}))
    gt = json.load(open(trained["gt_json"]))
    # another dataset: 3 classes with odd ids, on the same images
    other = dict(gt, categories=[{"id": i, "name": n} for i, n in
                                 [(3, "kiwi"), (7, "plum"), (12, "fig")]],
                 annotations=[dict(a, category_id=[3, 7, 12][a["category_id"] % 3])
                              for a in gt["annotations"]])
    put("other_classes.json", json.dumps(other))
    # an annotation of a category the file does not define (Detectron2: a KeyError traceback)
    put("undefined_category.json", json.dumps(dict(gt, annotations=[
        dict(a, category_id=99) if i == 0 else a for i, a in enumerate(gt["annotations"])])))
    shutil.copytree(trained["image_dir"], d / "images")
    f["images"] = str(d / "images")
    f["gt_json"] = trained["gt_json"]
    first = sorted(os.listdir(trained["image_dir"]))[0]
    f["image"] = os.path.join(trained["image_dir"], first)
    png = open(f["image"], "rb").read()
    put("truncated.png", png[: len(png) // 3])
    put("empty.png", b"")
    put("text.png", "hello\n")
    rgb = np.asarray(Image.open(f["image"]).convert("RGB"))
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(d / "gray16.png")
    f["gray16.png"] = str(d / "gray16.png")
    Image.fromarray(rgb).convert("CMYK").save(d / "cmyk.jpg")
    f["cmyk.jpg"] = str(d / "cmyk.jpg")
    results = json.load(open(trained["results"]))
    put("results.json", json.dumps(results))
    put("results_bad_ids.json", json.dumps([dict(r, category_id=99) for r in results[:5]]))
    shutil.copytree(trained["out"], d / "run")
    f["run"] = str(d / "run")
    # a dataset folder as make-dataset writes it (a smaller one must not leave its images)
    shutil.copytree(trained["image_dir"], d / "dataset" / "train")
    shutil.copy(trained["gt_json"], d / "dataset" / "train.json")
    f["dataset"] = str(d / "dataset")
    f["dataset_image"] = os.path.join(f["dataset"], "train", sorted(os.listdir(
        d / "dataset" / "train"))[0])
    # another study's folder (ablate --study 1b wrote it)
    put("study_1b/results.json", json.dumps({"study": "1b", "schedule": "tiny", "settings": []}))
    # a study folder with a finished run made with other overrides than the row's
    put("study_1a/results.json", json.dumps({"study": "1a", "schedule": "tiny", "settings": []}))
    put("study_1a/04_alpha=0.75/result.json", json.dumps({
        "label": "alpha=0.75", "metrics": {"AP": 1.0}, "signature": {
            "config_file": TINY_CONFIG, "opts": [
                "SOLVER.MAX_ITER", "7", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()",
                "SOLVER.CHECKPOINT_PERIOD", "100000", "TEST.EVAL_PERIOD", "0",
                "MODEL.RETINANET.FOCAL_LOSS_ALPHA", "0.75",
                "MODEL.RETINANET.FOCAL_LOSS_GAMMA", "0.0"],
            "config_sha256": "0" * 64}}))
    put("empty_metrics/metrics.json", "")
    put("list_metrics/metrics.json", "[1, 2]\n")
    return f


def _quiet_stale_handlers():
    """Loggers set up by earlier in-process commands may hold streams pytest has closed since:
    drop those handlers (a process runs one command and has no such handler)."""
    for logger in [logging.getLogger()] + [logging.getLogger(n) for n in
                                           logging.Logger.manager.loggerDict]:
        for h in list(getattr(logger, "handlers", [])):
            stream = getattr(h, "stream", None)
            if stream is not None and getattr(stream, "closed", False):
                logger.removeHandler(h)


# (id, argv with {placeholders} of `files`, fragment of the error line)
BAD = [
    # ---- train (YAML) --------------------------------------------------------------------
    ("train-config-missing", "train --config-file {dir}/nope.yaml", "nope.yaml' does not exist"),
    ("train-config-empty", "train --config-file {empty.yaml}", "empty.yaml is empty"),
    # in each of two worker processes: the worker's message, one error line
    ("train-two-processes-bad-value", f"train --config-file {TINY_CONFIG} --num-gpus 2 "
     "--dist-url auto MODEL.RETINA_FOCAL.NORMALIZER emma", "MODEL.RETINA_FOCAL.NORMALIZER"),
    ("train-config-comment-only", "train --config-file {comment_only.yaml}",
     "comment_only.yaml has no keys (only comments)"),
    ("train-base-by-name", "train --config-file {base_by_name.yaml}",
     "is the name of a shipped config, and _BASE_ takes a path"),
    ("train-component-unknown", f"train --config-file {TINY_CONFIG} "
     "MODEL.RETINA_FOCAL.LOSS_NAME Focal", "MODEL.RETINA_FOCAL.LOSS_NAME='Focal' is not "
     "registered"),
    ("train-dataset-wrong-image-folder", f"train --config-file {TINY_CONFIG} --dataset "
     "d9={gt_json}:{dir}", "are not files in the image folder"),
    ("train-config-not-yaml", "train --config-file {not_yaml.yaml}", "not_yaml.yaml"),
    ("train-config-binary", "train --config-file {image_as_config.yaml}", "image_as_config.yaml"),
    ("train-config-py", f"train --config-file {LAZY_TINY}", "is a LazyConfig (.py)"),
    ("train-config-folder", "train --config-file {dir}", "is a folder"),
    ("train-key-misspelt-file", "train --config-file {misspelt.yaml}",
     "unknown config key MODEL.RETINANET.NUM_CLASSE. Did you mean MODEL.RETINANET.NUM_CLASSES"),
    ("train-key-misspelt-override",
     f"train --config-file {TINY_CONFIG} MODEL.RETINANET.NUM_CLASSE 6",
     "unknown config key MODEL.RETINANET.NUM_CLASSE"),
    ("train-value-wrong-type", f"train --config-file {TINY_CONFIG} SOLVER.BASE_LR fast",
     "SOLVER.BASE_LR"),
    ("train-value-int-for-float", f"train --config-file {TINY_CONFIG} "
     "MODEL.RETINANET.FOCAL_LOSS_GAMMA -2", "write MODEL.RETINANET.FOCAL_LOSS_GAMMA -2.0"),
    ("train-value-name-for-tuple", f"train --config-file {TINY_CONFIG} DATASETS.TRAIN my_train",
     "write DATASETS.TRAIN \"('my_train',)\""),
    ("train-option-after-overrides",
     f"train --config-file {TINY_CONFIG} MODEL.DEVICE cpu --dataset x={{gt_json}}:{{images}}",
     "option --dataset comes after the KEY VALUE"),
    ("train-option-not-its-own", f"train --config-file {TINY_CONFIG} MODEL.DEVICE cpu --output "
     "{dir}/o8", "--output is not an option of retina-focal train (its options:"),
    ("train-weights-missing", f"train --config-file {TINY_CONFIG} OUTPUT_DIR {{dir}}/o1 "
     "MODEL.WEIGHTS {dir}/nope.pth", "nope.pth' does not exist"),
    ("train-weights-truncated", f"train --config-file {TINY_CONFIG} OUTPUT_DIR {{dir}}/o2 "
     "MODEL.WEIGHTS {truncated.pth}", "truncated.pth"),
    ("train-weights-empty", f"train --config-file {TINY_CONFIG} OUTPUT_DIR {{dir}}/o3 "
     "MODEL.WEIGHTS {empty.pth}", "empty.pth"),
    ("train-weights-text", f"train --config-file {TINY_CONFIG} OUTPUT_DIR {{dir}}/o4 "
     "MODEL.WEIGHTS {text.pth}", "is a text file"),
    ("train-weights-onnx", f"train --config-file {TINY_CONFIG} OUTPUT_DIR {{dir}}/o5 "
     "MODEL.WEIGHTS {model.onnx}", "an ONNX model"),
    ("train-dataset-json-missing", f"train --config-file {TINY_CONFIG} --dataset "
     "d1={dir}/nope.json:{images}", "annotation file"),
    ("train-dataset-json-empty", f"train --config-file {TINY_CONFIG} --dataset "
     "d2={empty.json}:{images}", "empty.json"),
    ("train-dataset-json-truncated", f"train --config-file {TINY_CONFIG} --dataset "
     "d3={truncated.json}:{images}", "truncated.json' is not valid JSON"),
    ("train-dataset-json-list", f"train --config-file {TINY_CONFIG} --dataset "
     "d4={list.json}:{images}", "list.json is not a COCO instances file"),
    ("train-dataset-no-categories", f"train --config-file {TINY_CONFIG} --dataset "
     "d5={no_categories.json}:{images}", "no_categories.json"),
    ("train-dataset-undefined-category", f"train --config-file {TINY_CONFIG} --dataset "
     "d8={undefined_category.json}:{images}", "category_id 99 is not defined in the file's"),
    ("train-dataset-images-missing", f"train --config-file {TINY_CONFIG} --dataset "
     "d6={gt_json}:{dir}/nope_dir", "image folder"),
    ("train-dataset-unregistered", f"train --config-file {TINY_CONFIG} DATASETS.TRAIN "
     "('my_train',)", "DATASETS.TRAIN: dataset 'my_train' is not registered"),
    ("train-classes-other-count", f"train --config-file {TINY_CONFIG} --dataset "
     "d7={other_classes.json}:{images} DATASETS.TRAIN ('d7',) DATASETS.TEST ('d7',)",
     "has 3 categories"),
    # train and test sets at odds: said first (the count's advice fitted only one of them)
    ("train-test-classes-differ", f"train --config-file {TINY_CONFIG} --dataset "
     "d12={other_classes.json}:{images} DATASETS.TRAIN ('d12',)",
     "The classes of DATASETS.TRAIN (d12) and DATASETS.TEST"),
    ("train-over-finished-run", f"train --config-file {TINY_CONFIG} OUTPUT_DIR {{run}}",
     "already holds a training run"),
    ("train-resume-beyond-max-iter", f"train --config-file {TINY_CONFIG} --resume OUTPUT_DIR "
     "{run}", "has trained 8 iterations, more than SOLVER.MAX_ITER=2"),
    ("train-num-gpus-zero", f"train --config-file {TINY_CONFIG} --num-gpus 0",
     "Invalid launch: --num-gpus 0"),
    ("train-device-unknown", f"train --config-file {TINY_CONFIG} OUTPUT_DIR {{dir}}/o6 "
     "MODEL.DEVICE gpu", "MODEL.DEVICE='gpu' is not a device torch knows"),
    # ---- lazy-train ------------------------------------------------------------------------
    ("lazy-config-missing", "lazy-train --config-file {dir}/nope.py", "nope.py' does not exist"),
    ("lazy-config-yaml", f"lazy-train --config-file {TINY_CONFIG}",
     "is a Detectron2 YAML config"),
    ("lazy-key-misspelt", f"lazy-train --config-file {LAZY_TINY} train.eval_perod=1",
     "no key 'train.eval_perod'"),
    ("lazy-argument-misspelt", f"lazy-train --config-file {LAZY_TINY} model.head.prior_prb=0.1",
     "RetinaFocalHead has no argument 'prior_prb'"),
    ("lazy-value-bad", f"lazy-train --config-file {LAZY_TINY} model.head.prior_prob=-3 "
     "train.device=cpu", "model.head.prior_prob=-3 is invalid"),
    ("lazy-option-after-overrides", f"lazy-train --config-file {LAZY_TINY} train.device=cpu "
     "--dataset x={gt_json}:{images}", "option --dataset comes after the key=value"),
    ("lazy-override-without-equals", f"lazy-train --config-file {LAZY_TINY} train.max_iter 3",
     "'train.max_iter' is not key=value"),
    ("lazy-over-finished-run", f"lazy-train --config-file {LAZY_TINY} train.output_dir={{run}} "
     "train.device=cpu", "already holds a training run"),
    ("lazy-dataset-unregistered", f"lazy-train --config-file {LAZY_TINY} "
     "dataloader.train.dataset.names=my_train", "dataset 'my_train' is not registered"),
    ("lazy-milestones-beyond-max-iter", f"lazy-train --config-file {LAZY_SYNTHETIC} "
     "train.output_dir={dir}/l1 train.max_iter=30", "lr_multiplier.scheduler.milestones=[1100, "
     "1300] has milestones 1100, 1300 at or beyond train.max_iter=30"),
    ("lazy-config-empty", "lazy-train --config-file {empty.py}",
     "empty.py is not a LazyConfig for training: it defines no model, dataloader"),
    ("lazy-config-plain-values", "lazy-train --config-file {plain_values.py} --eval-only",
     "plain_values.py is not a LazyConfig for evaluation: it defines no model"),
    ("lazy-config-import-fails", "lazy-train --config-file {import_missing.py}",
     "import_missing.py, line 1: running the config raised ModuleNotFoundError: No module "
     "named 'nonexistent_mod'"),
    ("lazy-config-syntax-error", "lazy-train --config-file {syntax_error.py}",
     "syntax_error.py, line 1 is not valid Python"),
    # ---- eval ------------------------------------------------------------------------------
    ("eval-results-missing", "eval --results {dir}/nope.json --gt-json {gt_json}", "nope.json"),
    ("eval-results-empty", "eval --results {empty.json} --gt-json {gt_json}", "empty.json"),
    ("eval-results-truncated", "eval --results {truncated.json} --gt-json {gt_json}",
     "truncated.json"),
    ("eval-results-other-classes", "eval --results {results_bad_ids.json} --gt-json {gt_json}",
     "99"),
    ("eval-gt-no-categories", "eval --results {results.json} --gt-json {no_categories.json}",
     "no_categories.json has no 'categories' list"),
    ("eval-gt-missing", "eval --results {results.json} --gt-json {dir}/nope.json", "nope.json"),
    ("eval-gt-truncated", "eval --results {results.json} --gt-json {truncated.json}",
     "truncated.json"),
    ("eval-weights-missing", f"eval --config-file {TINY_CONFIG} MODEL.WEIGHTS {{dir}}/nope.pth "
     "OUTPUT_DIR {dir}/e1", "nope.pth' does not exist"),
    ("eval-weights-truncated", f"eval --config-file {TINY_CONFIG} MODEL.WEIGHTS "
     "{truncated.pth} OUTPUT_DIR {dir}/e2", "truncated.pth"),
    ("eval-classes-other-names", f"eval --config-file {TINY_CONFIG} --gt-json "
     "{other_classes.json} --image-dir {images} MODEL.WEIGHTS {weights.pth} "
     "MODEL.RETINANET.NUM_CLASSES 3 OUTPUT_DIR {dir}/e3", "NUM_CLASSES"),
    # a finished run's folder: another checkpoint's evaluation would replace its results
    ("eval-into-another-run", f"eval --config-file {TINY_CONFIG} --gt-json {{gt_json}} "
     "--image-dir {images} --output {run} MODEL.WEIGHTS {weights.pth}",
     "holds a training run"),
    ("eval-into-a-run-bad-weights", f"train --config-file {TINY_CONFIG} --eval-only "
     "OUTPUT_DIR {run} MODEL.WEIGHTS {text.pth}", "is a text file"),
    ("eval-score-thresh-above-one", f"eval --config-file {TINY_CONFIG} MODEL.WEIGHTS "
     "{weights.pth} OUTPUT_DIR {dir}/e4 MODEL.RETINANET.SCORE_THRESH_TEST 1.5",
     "MODEL.RETINANET.SCORE_THRESH_TEST=1.5 is invalid: use a value in [0.0, 1.0]"),
    # ---- demo ------------------------------------------------------------------------------
    ("demo-input-after-overrides", f"demo --config-file {TINY_CONFIG} MODEL.WEIGHTS "
     "{weights.pth} --input {image} --output {dir}/d9", "option --input comes after the KEY"),
    ("demo-input-missing", f"demo --config-file {TINY_CONFIG} --input {{dir}}/nope.png "
     "--output {dir}/d1 MODEL.WEIGHTS {weights.pth}", "nope.png"),
    ("demo-input-truncated", f"demo --config-file {TINY_CONFIG} --input {{truncated.png}} "
     "--output {dir}/d2 MODEL.WEIGHTS {weights.pth}", "truncated.png"),
    ("demo-input-empty", f"demo --config-file {TINY_CONFIG} --input {{empty.png}} "
     "--output {dir}/d3 MODEL.WEIGHTS {weights.pth}", "empty.png"),
    ("demo-input-text", f"demo --config-file {TINY_CONFIG} --input {{text.png}} "
     "--output {dir}/d4 MODEL.WEIGHTS {weights.pth}", "text.png"),
    ("demo-weights-missing", f"demo --config-file {TINY_CONFIG} --input {{image}} "
     "--output {dir}/d5 MODEL.WEIGHTS {dir}/nope.pth", "nope.pth' does not exist"),
    ("demo-coco-json-other-classes", f"demo --config-file {TINY_CONFIG} --input {{images}} "
     "--coco-json {other_classes.json} --output {dir}/d6 MODEL.WEIGHTS {weights.pth}",
     "differ"),
    ("demo-score-thresh", f"demo --config-file {TINY_CONFIG} --input {{image}} --score-thresh 2 "
     "--output {dir}/d7 MODEL.WEIGHTS {weights.pth}", "--score-thresh 2.0 is invalid"),
    ("demo-coco-json-truncated", f"demo --config-file {TINY_CONFIG} --input {{image}} "
     "--coco-json {truncated.json} --output {dir}/d8 MODEL.WEIGHTS {weights.pth}",
     "truncated.json' is not valid JSON"),
    ("demo-output-is-a-file", f"demo --config-file {TINY_CONFIG} --input {{image}} "
     "--output {results.json} MODEL.WEIGHTS {weights.pth}", "is a file; give a folder"),
    ("demo-output-is-the-input", f"demo --config-file {TINY_CONFIG} --input {{dataset}}/train "
     "--output {dataset}/train MODEL.WEIGHTS {weights.pth}",
     "the annotated images would overwrite the input image"),
    ("demo-output-holds-other-files", f"demo --config-file {TINY_CONFIG} --input {{image}} "
     "--output {dir} MODEL.WEIGHTS {weights.pth}", "already holds 'results.json'"),
    # ---- export ----------------------------------------------------------------------------
    ("export-weights-missing", f"export --config-file {TINY_CONFIG} --output {{dir}}/x1 "
     "MODEL.WEIGHTS {dir}/nope.pth", "nope.pth' does not exist"),
    ("export-weights-text", f"export --config-file {TINY_CONFIG} --output {{dir}}/x2 "
     "MODEL.WEIGHTS {text.pth}", "is a text file"),
    ("export-sample-missing", f"export --config-file {TINY_CONFIG} --output {{dir}}/x3 "
     "--sample-image {dir}/nope.png MODEL.WEIGHTS {weights.pth}", "nope.png"),
    ("export-sample-truncated", f"export --config-file {TINY_CONFIG} --output {{dir}}/x4 "
     "--sample-image {truncated.png} MODEL.WEIGHTS {weights.pth}", "truncated.png"),
    ("export-verify-unregistered", f"export --config-file {TINY_CONFIG} --format onnx --output "
     "{dir}/x5 --verify-dataset my_val MODEL.WEIGHTS {weights.pth}",
     "--verify-dataset: dataset 'my_val' is not registered"),
    ("export-two-stage-onnx", f"export --config-file {RPN_YAML} --format onnx --output "
     "{dir}/x6 MODEL.DEVICE cpu", "--format torchscript"),
    ("export-graph-torchscript", f"export --config-file {TINY_CONFIG} --graph detector "
     "--output {dir}/x7 MODEL.WEIGHTS {weights.pth}",
     "--graph only applies to --format onnx (this export is --format torchscript)"),
    ("export-max-images-alone", f"export --config-file {TINY_CONFIG} --format onnx --output "
     "{dir}/x9 --max-images 2 MODEL.WEIGHTS {weights.pth}",
     "--max-images goes with --verify-dataset"),
    ("export-uint8-head", f"export --config-file {TINY_CONFIG} --format onnx --graph head "
     "--input-dtype uint8 --output {dir}/x8 MODEL.WEIGHTS {weights.pth}",
     "--input-dtype uint8 needs --graph detector"),
    # ---- analyze / visualize ---------------------------------------------------------------
    ("analyze-config-missing", "analyze --config-file {dir}/nope.yaml --output {dir}/a1",
     "nope.yaml' does not exist"),
    ("analyze-dataset-truncated", f"analyze --config-file {TINY_CONFIG} --dataset "
     "a2={truncated.json}:{images} --dataset-name a2 --output {dir}/a2", "truncated.json"),
    ("analyze-key-misspelt", f"analyze --config-file {TINY_CONFIG} --output {{dir}}/a3 "
     "MODEL.RETINA_FOCAL.ASIGNER_NAME x", "unknown config key MODEL.RETINA_FOCAL.ASIGNER_NAME"),
    ("analyze-iou-bins-zero", f"analyze --config-file {TINY_CONFIG} --iou-bins 0 --output "
     "{dir}/a4", "argument --iou-bins: 0 is not an integer >= 1"),
    ("analyze-output-is-a-file", f"analyze --config-file {TINY_CONFIG} --output "
     "{results.json}", "is a file; give a folder"),
    ("visualize-dataset-unregistered", f"visualize --config-file {TINY_CONFIG} --dataset-name "
     "my_val --output {dir}/v1.png", "dataset 'my_val' is not registered"),
    ("visualize-output-existing-image", f"visualize --config-file {TINY_CONFIG} --output "
     "{dataset_image}", "exists and is not a drawing of this command"),
    ("visualize-output-not-png", f"visualize --config-file {TINY_CONFIG} --output {{dir}}/v3.txt",
     "is not a .png file name"),
    ("visualize-scale-negative", f"visualize --config-file {TINY_CONFIG} --scale -2 --output "
     "{dir}/v4.png", "argument --scale: -2.0 is not a number > 0"),
    ("visualize-image-out-of-range", f"visualize --config-file {TINY_CONFIG} --image 100000 "
     "--output {dir}/v2.png", "100000"),
    # ---- plot ------------------------------------------------------------------------------
    ("plot-run-missing", "plot {dir}/nope_run --output {dir}/p1", "nope_run"),
    ("plot-metrics-empty", "plot {dir}/empty_metrics --output {dir}/p2", "metrics.json"),
    ("plot-wrong-kind", "plot {image} --output {dir}/p3", "png"),
    ("plot-output-is-a-file", "plot {run} --output {results.json}", "is a file; give a folder"),
    ("plot-metrics-not-objects", "plot {dir}/list_metrics --output {dir}/p4",
     "is a JSON list, not an object of metrics"),
    # ---- ablate / imbalance / benchmark ----------------------------------------------------
    ("ablate-study-unknown", f"ablate --config-file {TINY_CONFIG} --study 9z --output {{dir}}/b1",
     "Unknown study '9z'"),
    ("ablate-schedule-unknown", f"ablate --config-file {TINY_CONFIG} --study 1a --schedule fast "
     "--output {dir}/b2", "Unknown schedule 'fast'"),
    ("ablate-setting-unknown", f"ablate --config-file {TINY_CONFIG} --study 1a --settings "
     "alpha=0.3 --schedule tiny --output {dir}/b3", "alpha=0.3"),
    ("ablate-seeds-bad", f"ablate --config-file {TINY_CONFIG} --study 1a --seeds one "
     "--schedule tiny --output {dir}/b4", "one"),
    ("ablate-config-missing", "ablate --config-file {dir}/nope.yaml --study 1a --schedule tiny "
     "--output {dir}/b5", "nope.yaml"),
    ("ablate-dataset-unregistered", f"ablate --config-file {TINY_CONFIG} --study 1a --schedule "
     "tiny --output {dir}/b7 DATASETS.TRAIN ('my_train',)",
     "DATASETS.TRAIN of setting 'alpha=0.1': dataset 'my_train' is not registered"),
    ("ablate-settings-empty", f"ablate --config-file {TINY_CONFIG} --study 1a --settings , "
     "--schedule tiny --output {dir}/b6", "--settings ',' names no setting"),
    # an unset shell variable ('' is an empty argument)
    ("ablate-settings-empty-value", f"ablate --config-file {TINY_CONFIG} --study 1a --settings "
     "'' --schedule tiny --output {dir}/b10", "--settings '' names no setting"),
    # a stranger's finds: a trailing comma was a silently dropped label; a study on a config
    # whose model does not read its keys trained one model under every label
    ("ablate-settings-trailing-comma", f"ablate --config-file {TINY_CONFIG} --study 1a "
     "--settings alpha=0.25, --schedule tiny --output {dir}/b16",
     "--settings 'alpha=0.25,' has an empty label"),
    ("ablate-study-of-another-model", "ablate --config-file "
     "Synthetic/faster_rcnn_focal_rpn_R_18_FPN_synthetic.yaml --study table3 --schedule tiny "
     "--output {dir}/b17", "study table3 varies RetinaFocal's settings, but"),
    ("ablate-focal-rpn-study-on-retinafocal", f"ablate --config-file {TINY_CONFIG} --study "
     "focal_rpn_detector --schedule tiny --output {dir}/b18",
     "has MODEL.META_ARCHITECTURE 'RetinaFocal' with MODEL.PROPOSAL_GENERATOR.NAME 'RPN' "
     "(from"),
    ("ablate-seeds-empty", f"ablate --config-file {TINY_CONFIG} --study 1a --seeds '' "
     "--schedule tiny --output {dir}/b11", "--seeds '' is empty"),
    ("ablate-output-empty", f"ablate --config-file {TINY_CONFIG} --study 1a --schedule tiny "
     "--output ''", "--output '' is empty"),
    ("ablate-output-is-a-file", f"ablate --config-file {TINY_CONFIG} --study 1a --schedule tiny "
     "--output {results.json}", "is a file; give a folder"),
    ("ablate-output-under-a-file", f"ablate --config-file {TINY_CONFIG} --study 1a --schedule "
     "tiny --output {results.json}/sub", "is a file, not a folder); give one"),
    ("ablate-output-other-study", f"ablate --config-file {TINY_CONFIG} --study 1a --schedule "
     "tiny --output {dir}/study_1b", "holds the results of study 1b"),
    ("ablate-run-made-otherwise", f"ablate --config-file {TINY_CONFIG} --study 1a --settings "
     "alpha=0.75 --schedule tiny --output {dir}/study_1a",
     "holds a finished run of 'alpha=0.75' made with other settings (SOLVER.MAX_ITER 7 there"),
    ("ablate-override-set-by-setting", f"ablate --config-file {TINY_CONFIG} --study table3 "
     "--schedule tiny --output {dir}/b12 MODEL.RETINANET.FOCAL_LOSS_GAMMA 3.0",
     "the override MODEL.RETINANET.FOCAL_LOSS_GAMMA 3.0 would be lost"),
    ("imbalance-option-abbreviated", f"imbalance --config-file {TINY_CONFIG} --max-image "
     "3 --output {dir}/i2", "unrecognized arguments: --max-image"),
    ("imbalance-datasets-unregistered", f"imbalance --config-file {TINY_CONFIG} --datasets "
     "my_val --output {dir}/i1", "--datasets: dataset 'my_val' is not registered"),
    ("imbalance-config-not-a-retinanet", "imbalance --config-file "
     "Synthetic/faster_rcnn_focal_rpn_R_18_FPN_synthetic.yaml --coco-config '' --output "
     "{dir}/i6", "faster_rcnn_focal_rpn_R_18_FPN_synthetic.yaml: MODEL.META_ARCHITECTURE is "
     "'GeneralizedRCNN'"),
    ("imbalance-coco-config-missing", f"imbalance --config-file {TINY_CONFIG} --coco-config "
     "{dir}/nope.yaml --output {dir}/i7", "error: --coco-config: config file"),
    ("imbalance-study-empty", f"imbalance --config-file {TINY_CONFIG} --study '' --output "
     "{dir}/i8", "--study '' is empty"),
    ("make-dataset-bad-count", "make-dataset --output {dir}/m1 --num-train -3", "-3"),
    ("make-dataset-too-small", "make-dataset --output {dir}/m2 --size 16", "16 is not an integer"),
    ("make-dataset-over-a-dataset", "make-dataset --output {dataset} --num-train 2",
     "already holds a dataset (train.json, train/"),
    ("make-dataset-seed-negative", "make-dataset --output {dir}/m3 --seed -5",
     "argument --seed: -5 is not an integer >= 0"),
    ("make-dataset-too-large", "make-dataset --output {dir}/m4 --size 100000",
     "argument --size: 100000 is not an integer in [32, 4096]"),
    ("make-dataset-output-unwritable", "make-dataset --output /proc/retina_focal_nope",
     "cannot create this folder"),
    ("plot-focal-loss-dataset-unregistered", f"plot-focal-loss --output {{dir}}/f1 "
     f"--config-file {TINY_CONFIG} --dataset my_val MODEL.WEIGHTS {{weights.pth}}",
     "dataset 'my_val' is not registered"),
    ("ablate-option-after-overrides", f"ablate --config-file {TINY_CONFIG} --study 1a "
     "--schedule tiny MODEL.RETINANET.NUM_CLASSES 6 --output {dir}/b9",
     "option --output comes after the KEY VALUE config overrides"),
    ("ablate-dataset-json-missing", f"ablate --config-file {TINY_CONFIG} --study 1a --schedule "
     "tiny --output {dir}/b14 --dataset d10={dir}/nope.json:{images}", "annotation file"),
    ("ablate-dataset-classes-other-count", f"ablate --config-file {TINY_CONFIG} --study 1a "
     "--schedule tiny --output {dir}/b15 --dataset d11={other_classes.json}:{images} "
     "DATASETS.TRAIN ('d11',) DATASETS.TEST ('d11',)", "has 3 categories"),
    # train's option: not one of ablate's (not "misplaced")
    # a --dataset no run reads: the study would train on the base config's datasets
    ("ablate-dataset-unused", f"ablate --config-file {TINY_CONFIG} --study 1a --schedule tiny "
     "--output {dir}/b20 --dataset dunused={dataset}/train.json:{dataset}/train",
     "--dataset 'dunused': no run of this study trains or evaluates on it"),
    # the imbalance study's levels choose their datasets: an override of them would be lost
    ("ablate-imbalance-datasets-override", f"ablate --config-file {TINY_CONFIG} --study "
     "imbalance --schedule tiny --output {dir}/b21 "
     "DATASETS.TRAIN ('synthetic_shapes_tiny_train',)",
     "the override DATASETS.TRAIN ('synthetic_shapes_tiny_train',) would be lost"),
    ("ablate-seeds-too-large", f"ablate --config-file {TINY_CONFIG} --study 1a --schedule tiny "
     "--seeds 0,4294967296 --output {dir}/b19", "4294967296 is too large"),
    # a bad value of a key only the model reads: refused before the study begins (it failed
    # in every setting's process, leaving failed rows)
    ("ablate-model-key-bad", f"ablate --config-file {TINY_CONFIG} --study 1a --schedule tiny "
     "--output {dir}/b22 MODEL.RETINA_FOCAL.SAMPLER_NAME Bogus",
     "its model cannot be built: MODEL.RETINA_FOCAL.SAMPLER_NAME='Bogus' is not registered"),
    ("ablate-rpn-loss-softmax", "ablate --config-file "
     "Synthetic/faster_rcnn_focal_rpn_R_18_FPN_synthetic.yaml --study focal_rpn_detector "
     "--schedule tiny --output {dir}/b23 MODEL.RETINA_FOCAL.RPN.LOSS_NAME SoftmaxFocalLoss",
     "the RPN head predicts one sigmoid logit per anchor"),
    # a model chosen on the command line: the override is named as the cause
    ("ablate-model-overridden", f"ablate --config-file {TINY_CONFIG} --study 1a --schedule "
     "tiny --output {dir}/b26 MODEL.META_ARCHITECTURE RetinaNet",
     "(from the command line's override): another model ignores"),
    ("ablate-output-dir-override", f"ablate --config-file {TINY_CONFIG} --study 1a --schedule "
     "tiny --output {dir}/b24 OUTPUT_DIR {dir}/b25", "the override OUTPUT_DIR"),
    ("ablate-option-not-its-own", f"ablate --config-file {TINY_CONFIG} --study 1a --schedule "
     "tiny --output {dir}/b13 MODEL.RETINANET.NUM_CLASSES 6 --resume",
     "--resume is not an option of retina-focal ablate (its options: --help, --config-file"),
    ("benchmark-option-after-overrides", "benchmark --only loss --quick "
     "MODEL.RETINANET.NUM_CLASSES 3 --output {dir}/k3.json",
     "option --output comes after the KEY VALUE config overrides"),
    ("export-output-after-overrides", f"export --format onnx --config-file {TINY_CONFIG} "
     "MODEL.WEIGHTS {weights.pth} --output {dir}/e9",
     "option --output comes after the KEY VALUE config overrides"),
    ("export-output-missing", f"export --format onnx --config-file {TINY_CONFIG} "
     "MODEL.WEIGHTS {weights.pth}", "the following arguments are required: --output"),
    ("plot-focal-loss-figure4-options-without-config", "plot-focal-loss --output {dir}/f2 "
     "--num-images 5 MODEL.WEIGHTS {weights.pth}",
     "--num-images, KEY VALUE overrides would have no effect"),
    ("benchmark-config-missing", "benchmark --only loss --quick --config-file {dir}/nope.yaml "
     "--output {dir}/k1.json", "nope.yaml"),
    ("benchmark-device-unknown", "benchmark --only loss --quick --device gpu --output "
     "{dir}/k2.json", "--device='gpu' is not a device torch knows"),
    # an empty --output (an unset shell variable): benchmark wrote nothing and exited 0,
    # gpu-checks failed after its work with a traceback, eval and plot used their defaults
    ("benchmark-output-empty", "benchmark --only loss --quick --output ''",
     "--output '' is empty: give the file to write"),
    ("gpu-checks-output-empty", "gpu-checks --device cpu --quick --only focal_loss --output ''",
     "--output '' is empty: give the file to write"),
    ("eval-output-empty", "eval --results {results.json} --gt-json {gt_json} --output ''",
     "--output '' is empty: give a folder"),
    ("plot-output-empty", "plot {dir} --output ''", "--output '' is empty: give a folder"),
    ("gpu-checks-output-after-overrides", "gpu-checks --device cpu --quick --only focal_loss "
     "MODEL.RETINANET.FOCAL_LOSS_GAMMA 1.0 --output {dir}/g7.json",
     "option --output comes after the KEY VALUE config overrides"),
    # the loss section times both implementations, but a bad value is still refused
    ("benchmark-loss-impl-invalid", "benchmark --only loss --quick --output {dir}/k8.json "
     "MODEL.RETINA_FOCAL.FOCAL_LOSS_IMPL fast", "MODEL.RETINA_FOCAL.FOCAL_LOSS_IMPL='fast' is "
     "invalid: use one of 'auto', 'portable', 'fused'"),
    # an output below a file (or a file where a folder goes): refused before the work
    ("benchmark-output-below-a-file", "benchmark --only loss --quick --output "
     "{results.json}/k4.json", "its folder cannot be made ("),
    ("imbalance-output-is-a-file", f"imbalance --config-file {TINY_CONFIG} --output "
     "{results.json}", "is a file; give a folder"),
    ("analyze-output-below-a-file", f"analyze --config-file {TINY_CONFIG} --output "
     "{results.json}/a5", "cannot create this folder ("),
    # no class: refused where the model is built (it failed in its first step); the benchmark
    # takes its classes from --classes
    ("export-num-classes-zero", f"export --config-file {TINY_CONFIG} --output {{dir}}/x10 "
     "MODEL.RETINANET.NUM_CLASSES 0", "MODEL.RETINANET.NUM_CLASSES=0 is invalid: use an integer "
     ">= 1"),
    ("benchmark-num-classes-override", "benchmark --only train --quick --output {dir}/k5.json "
     "MODEL.RETINANET.NUM_CLASSES 0", "MODEL.RETINANET.NUM_CLASSES 0 among the overrides: the "
     "classes of every section"),
    # every section compares with Detectron2's RetinaNet from the same config: a config whose
    # RetinaFocal is another model was a traceback after the build (a shape error, or "first
    # losses differ"); now refused before any section, naming the key
    ("benchmark-loss-not-detectron2s", "benchmark --only train --quick --output {dir}/k6.json "
     "MODEL.RETINA_FOCAL.LOSS_NAME SoftmaxFocalLoss", "but MODEL.RETINA_FOCAL.LOSS_NAME is "
     "'SoftmaxFocalLoss' (Detectron2's RetinaNet has no such setting): leave the key at "
     "'SigmoidFocalLoss'"),
    ("benchmark-two-stage-config", "benchmark --only train --quick --output {dir}/k7.json "
     "--config-file Synthetic/faster_rcnn_focal_rpn_R_18_FPN_synthetic.yaml",
     "but MODEL.META_ARCHITECTURE is 'GeneralizedRCNN': use a RetinaFocal config"),
    ("imbalance-max-images-negative", f"imbalance --config-file {TINY_CONFIG} --max-images -1 "
     "--output {dir}/i3", "argument --max-images: -1 is not an integer >= 0"),
    ("imbalance-coco-images-zero", f"imbalance --config-file {TINY_CONFIG} --coco-images 0 "
     "--output {dir}/i4", "argument --coco-images: 0 is not an integer >= 1"),
    ("imbalance-datasets-empty-name", f"imbalance --config-file {TINY_CONFIG} --datasets "
     "synthetic_shapes_tiny_val,,x --output {dir}/i5",
     "argument --datasets: 'synthetic_shapes_tiny_val,,x' has an empty name"),
]


# rows refused by a check that comes before their output folder is made (a stranger's find:
# demo made its --output before matching the classes)
LEAVE_NO_FOLDER = {"imbalance-config-not-a-retinanet", "imbalance-coco-config-missing",
                   "imbalance-study-empty",
                   "demo-coco-json-other-classes", "ablate-option-after-overrides",
                   "benchmark-option-after-overrides", "export-output-after-overrides",
                   "ablate-settings-empty-value", "ablate-seeds-empty",
                   "ablate-settings-trailing-comma", "ablate-study-of-another-model",
                   "ablate-focal-rpn-study-on-retinafocal", "ablate-output-empty",
                   "ablate-output-is-a-file", "ablate-output-under-a-file",
                   "ablate-override-set-by-setting", "ablate-option-not-its-own",
                   "ablate-dataset-json-missing", "ablate-dataset-classes-other-count",
                   "ablate-dataset-unused", "ablate-imbalance-datasets-override",
                   "ablate-seeds-too-large", "ablate-model-key-bad", "ablate-rpn-loss-softmax",
                   "ablate-output-dir-override", "ablate-model-overridden",
                   "train-option-not-its-own"}


def _argv(template, files):
    # split first (paths have no spaces here), then fill the {name} placeholders; '' is an
    # empty argument
    return ["" if part == "''" else re.sub(r"\{([^{}]+)\}", lambda m: files[m.group(1)], part)
            for part in template.split()]


if not torch.cuda.is_available():  # Detectron2's configs default to cuda
    BAD.append(("train-device-cuda-without-gpu", f"train --config-file {TINY_CONFIG} "
                "OUTPUT_DIR {dir}/o7 MODEL.DEVICE cuda", "this machine has no CUDA device"))


@pytest.mark.parametrize("row", BAD, ids=[r[0] for r in BAD])
def test_bad_input_is_one_error_line_and_changes_nothing(row, files, capsys, monkeypatch):
    _, template, fragment = row
    monkeypatch.chdir(files["dir"])
    _quiet_stale_handlers()
    before = [snapshot(files["run"]), snapshot(files["dataset"])]
    existing = set(os.listdir(files["dir"]))
    status = main(_argv(template, files))
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error: " in line]
    assert status != 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert len(errors) == 1, err[-3000:]
    # the message: the error line and what follows it (a listing, the likely cause)
    message = err[err.index(errors[0]):]
    assert fragment in message, message
    assert [snapshot(files["run"]), snapshot(files["dataset"])] == before
    # a folder the refused command was to write into holds no file (it may have been made);
    # demo's unreadable images are skipped and the rest written (exit status 1), by design
    if row[0] in LEAVE_NO_FOLDER:  # refused after its checks: nothing was created
        assert set(os.listdir(files["dir"])) == existing, row[0]
    for new in set(os.listdir(files["dir"])) - existing - ({"d2", "d3", "d4"}
                                                           if row[0].startswith("demo-input")
                                                           else set()):
        assert not snapshot(os.path.join(files["dir"], new)), new


# (id, argv, a file or folder the command must have written)
GOOD = [
    ("train", f"train --config-file {TINY_CONFIG} OUTPUT_DIR {{dir}}/g_train",
     "g_train/model_final.pth"),
    ("lazy-train", f"lazy-train --config-file {LAZY_TINY} train.output_dir={{dir}}/g_lazy "
     "train.device=cpu", "g_lazy/model_final.pth"),
    ("eval-results", "eval --results {results.json} --gt-json {gt_json} --output {dir}/g_eval",
     "g_eval/coco_report.json"),
    ("eval-checkpoint", f"eval --config-file {TINY_CONFIG} MODEL.WEIGHTS {{weights.pth}} "
     "OUTPUT_DIR {dir}/g_eval2", "g_eval2/inference"),
    # evaluating a run's own checkpoint in its folder: its config.yaml stays the training one
    ("eval-own-checkpoint", f"train --config-file {TINY_CONFIG} --eval-only OUTPUT_DIR "
     "{dir}/g_own MODEL.WEIGHTS {dir}/g_own/model_final.pth", "g_own/config_eval.yaml"),
    # a 16-bit grey PNG and a CMYK JPEG: read as 8-bit RGB (16-bit scaled, not saturated)
    ("demo-odd-images", f"demo --config-file {TINY_CONFIG} --input {{gray16.png}} {{cmyk.jpg}} "
     "--output {dir}/g_demo MODEL.WEIGHTS {weights.pth}", "g_demo/results.json"),
    ("export-16-bit-sample", f"export --config-file {TINY_CONFIG} --output {{dir}}/g_export "
     "--sample-image {gray16.png} MODEL.WEIGHTS {weights.pth}", "g_export/model.ts"),
    ("analyze", f"analyze --config-file {TINY_CONFIG} --max-images 2 --output {{dir}}/g_an",
     "g_an/assignment.json"),
    ("visualize", f"visualize --config-file {TINY_CONFIG} --output {{dir}}/g_vis.png",
     "g_vis.png"),
    ("plot", "plot {run} --output {dir}/g_plot", "g_plot/summary.json"),
    ("ablate", f"ablate --config-file {TINY_CONFIG} --study 1a --settings alpha=0.75 "
     "--schedule tiny --output {dir}/g_ab", "g_ab/results.md"),
    ("imbalance", f"imbalance --config-file {TINY_CONFIG} --datasets synthetic_shapes_tiny_val "
     "--max-images 2 --coco-config '' --output {dir}/g_imb", "g_imb"),
    ("benchmark", "benchmark --only loss --quick --output {dir}/g_bench.json", "g_bench.json"),
    ("make-dataset", "make-dataset --output {dir}/g_ds --num-train 2 --num-val 2",
     "g_ds"),
    ("plot-focal-loss", "plot-focal-loss --output {dir}/g_fl", "g_fl"),
]


@pytest.mark.parametrize("row", GOOD, ids=[r[0] for r in GOOD])
def test_the_happy_path_of_every_command(row, files, capsys, monkeypatch):
    name, template, written = row
    monkeypatch.chdir(files["dir"])
    if name == "eval-own-checkpoint":  # a copy of the finished run, evaluated in place
        shutil.copytree(files["run"], os.path.join(files["dir"], "g_own"))
        training_config = open(os.path.join(files["run"], "config.yaml")).read()
    _quiet_stale_handlers()
    before = snapshot(files["run"])
    argv = _argv(template, files)
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 0, captured.out[-2000:] + captured.err[-3000:]
    assert not [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert os.path.exists(os.path.join(files["dir"], written))
    assert snapshot(files["run"]) == before
    if name == "eval-own-checkpoint":
        assert open(os.path.join(files["dir"], "g_own", "config.yaml")).read() == training_config


def test_every_command_has_a_bad_and_a_good_row():
    from retina_focal.cli import COMMANDS

    untested = {"gpu-checks", "benchmark-synthetic"}  # CUDA-only; a timing tool of the data path
    bad = {r[1].split()[0] for r in BAD}
    good = {r[1].split()[0] for r in GOOD}
    assert set(COMMANDS) - untested <= bad
    assert set(COMMANDS) - untested <= good


def test_docs_reliability_lists_every_row_as_it_is():
    """docs/reliability.md's table "Every command, every input" is BAD, row for row."""
    from conftest import REPO

    text = open(os.path.join(REPO, "docs", "reliability.md"), encoding="utf-8").read()
    section = text.split("### Every command, every input", 1)[1].split("\n### ", 1)[0]
    documented = re.findall(r"^\| `([^`]+)` \| `retina-focal ([^`]+)` \| `(.+)` \|$", section,
                            re.M)
    assert [(rid, frag) for rid, _, frag in documented] == [(r[0], r[2]) for r in BAD
                                                            if "cuda" not in r[0]]
    for (rid, command, _), row in zip(documented, BAD):
        assert command.split()[0] == row[1].split()[0], rid


def test_visualize_writes_its_own_drawing_again_and_demo_its_own_folder(
        files, capsys, monkeypatch):
    """The output checks refuse other files, not the command's own earlier output."""
    monkeypatch.chdir(files["dir"])
    _quiet_stale_handlers()
    for _ in range(2):
        assert main(["visualize", "--config-file", TINY_CONFIG, "--output",
                     os.path.join(files["dir"], "again", "vis.png")]) == 0
        assert main(["demo", "--config-file", TINY_CONFIG, "--input", files["image"],
                     "--output", os.path.join(files["dir"], "again", "demo"),
                     "MODEL.WEIGHTS", files["weights.pth"]]) == 0
    assert "error:" not in capsys.readouterr().err
