"""retina_focal.analysis.imbalance and ``retina-focal imbalance``: anchor imbalance, the loss
shares at the prior initialisation (against torchvision's focal loss), COCO-like boxes from
COCO's published statistics, and the FL - CE plot of the imbalance study."""
import json
import math
import os

import numpy as np
import pytest
import torch
from conftest import REPO, TINY_CONFIG
from PIL import Image
from torchvision.ops import sigmoid_focal_loss

from retina_focal.analysis.imbalance import (
    COCO_REFERENCE,
    coco_like_dicts,
    element_counts,
    imbalance_row,
    init_loss_shares,
)


def test_element_counts_of_the_sigmoid_loss():
    # a positive anchor: 1 positive + K - 1 negative elements; a negative anchor: K negatives
    assert element_counts(3, 100, 6) == (3.0, 100 * 6 + 3 * 5)
    assert element_counts(0, 10, 1) == (0.0, 10.0)
    with pytest.raises(ValueError, match="num_classes"):
        element_counts(1, 1, 0)


@pytest.mark.parametrize("pos,neg,k", [(34, 12179, 6), (3, 12268, 6), (140, 90858, 80)])
def test_init_loss_shares_equal_torchvisions_focal_loss_at_the_prior(pos, neg, k):
    """The negatives' share of the loss when every logit is the prior's, computed from
    torchvision's sigmoid_focal_loss on the actual (anchors x classes) targets."""
    prior = 0.01
    targets = torch.zeros(pos + neg, k)
    targets[torch.arange(pos), torch.arange(pos) % k] = 1.0
    logits = torch.full_like(targets, math.log(prior / (1 - prior)), dtype=torch.float64)
    targets = targets.double()
    shares = init_loss_shares(pos, neg, k, prior)
    for name, (alpha, gamma) in {"CE": (0.75, 0.0), "FL": (0.25, 2.0)}.items():
        loss = sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction="none")
        expected = (loss[targets == 0].sum() / loss.sum()).item()
        assert shares[name] == pytest.approx(expected, rel=1e-9), name
    assert shares["CE"] > 0.5 > shares["FL"]  # the paper's section 3.3, at these counts
    with pytest.raises(ValueError, match="prior"):
        init_loss_shares(pos, neg, k, prior=1.0)


def test_imbalance_row_counts_by_hand():
    records = [{"num_positive": 4, "num_ignored": 2, "num_negative": 94, "gt_class": [0, 1]},
               {"num_positive": 0, "num_ignored": 0, "num_negative": 100, "gt_class": []}]
    row = imbalance_row(records, num_classes=3)
    assert row["images"] == 2 and row["objects_per_image"] == 1.0
    assert row["anchors_per_image"] == 100.0
    assert (row["positive_per_image"], row["ignored_per_image"], row["negative_per_image"]) \
        == (2.0, 1.0, 97.0)
    assert row["negatives_per_positive"] == 194 / 4
    assert row["negative_elements_per_positive"] == (194 * 3 + 4 * 2) / 4
    assert row["init_negative_loss_share"] == init_loss_shares(4, 194, 3)
    with pytest.raises(ValueError, match="no images"):
        imbalance_row([], 3)


def test_coco_like_boxes_follow_cocos_published_statistics():
    dicts = coco_like_dicts(3000, seed=0)
    assert coco_like_dicts(5, seed=0) == dicts[:5]  # deterministic
    boxes = [a["bbox"] for d in dicts for a in d["annotations"]]
    assert len(boxes) / len(dicts) == pytest.approx(COCO_REFERENCE["objects_per_image"],
                                                    rel=0.02)
    areas = np.asarray([w * h for _, _, w, h in boxes])
    shares = [(areas < 32 ** 2).mean(), ((areas >= 32 ** 2) & (areas < 96 ** 2)).mean(),
              (areas >= 96 ** 2).mean()]
    # 41 / 34 / 25 %; a large box clipped to the image may fall into "medium"
    assert shares == pytest.approx([0.41, 0.34, 0.25], abs=0.02)
    h, w = COCO_REFERENCE["image_size"]
    assert all(0 <= x and 0 <= y and x + bw <= w + 1e-6 and y + bh <= h + 1e-6
               for x, y, bw, bh in boxes)


def test_command_measures_datasets_and_plots_fl_minus_ce(tmp_path, capsys):
    """The command's counts equal a direct count with the model's anchors and assigner; with
    the study's results it tables and plots AP(FL) - AP(CE) with the verdicts; a results.json
    of another study is refused."""
    from detectron2.data import DatasetCatalog

    from retina_focal.analysis.settings import AssignmentSetting, load_cfg
    from retina_focal.cli import imbalance

    study_dir = tmp_path / "study"
    study_dir.mkdir()
    summary = {"synthetic_shapes_tiny FL": {"values": [30.0, 31.0], "seeds": 2, "mean": 30.5,
                                            "min": 30.0, "max": 31.0, "spread": 1.0},
               "synthetic_shapes_tiny CE": {"values": [27.0, 29.0], "seeds": 2, "mean": 28.0,
                                            "min": 27.0, "max": 29.0, "spread": 2.0}}
    (study_dir / "results.json").write_text(json.dumps({
        "study": "imbalance", "seed_summary": summary,
        "claims": [{"better": "synthetic_shapes_tiny FL", "verdict": "reproduced"}]}))
    out = tmp_path / "out"
    assert imbalance.run(["--config-file", TINY_CONFIG, "--datasets", "synthetic_shapes_tiny_val",
                          "--coco-config", "", "--study", str(study_dir),
                          "--output", str(out)]) == 0
    saved = json.load(open(out / "imbalance.json"))
    row = saved["datasets"]["synthetic_shapes_tiny"]
    setting = AssignmentSetting(load_cfg(TINY_CONFIG, []))
    records = []
    for d in DatasetCatalog.get("synthetic_shapes_tiny_val"):
        records.append(setting.analyze(d))
    assert row == json.loads(json.dumps(imbalance_row(records, 6)))
    assert saved["fl_minus_ce"][0]["difference"] == 2.5
    assert saved["fl_minus_ce"][0]["half_width"] == 1.5
    md = (out / "fl_minus_ce.md").read_text()
    assert "| 2 | 30.5 | 28.0 | +2.5 | 1.5 | reproduced |" in md
    assert Image.open(out / "fl_minus_ce.png").size[0] > 300
    assert "| synthetic_shapes_tiny | 8 |" in (out / "imbalance.md").read_text()

    # a study with no level seeded yet (run without --seeds, or not finished) and no COCO
    # line: the plot says so (it was a log-axis traceback, after imbalance.md was written)
    (study_dir / "results.json").write_text(json.dumps({"study": "imbalance",
                                                        "seed_summary": {}, "claims": []}))
    assert imbalance.run(["--config-file", TINY_CONFIG, "--datasets", "synthetic_shapes_tiny_val",
                          "--coco-config", "", "--study", str(study_dir),
                          "--output", str(tmp_path / "none")]) == 0
    assert json.load(open(tmp_path / "none" / "imbalance.json"))["fl_minus_ce"][0][
        "difference"] is None
    assert Image.open(tmp_path / "none" / "fl_minus_ce.png").size[0] > 300
    # run without --seeds: one run per setting, tabled from the runs' summary (it showed "-")
    runs = {k: dict(v, values=v["values"][:1], seeds=1, mean=v["values"][0],
                    min=v["values"][0], max=v["values"][0], spread=0.0)
            for k, v in summary.items()}
    (study_dir / "results.json").write_text(json.dumps({
        "study": "imbalance", "seed_summary": {}, "run_summary": runs,
        "claims": [{"better": "synthetic_shapes_tiny FL", "verdict": "too few seeds"}]}))
    assert imbalance.run(["--config-file", TINY_CONFIG, "--datasets", "synthetic_shapes_tiny_val",
                          "--coco-config", "", "--study", str(study_dir),
                          "--output", str(tmp_path / "one")]) == 0
    assert "| 1 | 30.0 | 27.0 | +3.0 | 0.0 | too few seeds |" in (
        tmp_path / "one" / "fl_minus_ce.md").read_text()

    (study_dir / "results.json").write_text(json.dumps({"study": "1a"}))
    with pytest.raises(SystemExit, match="not the imbalance study"):
        imbalance.run(["--config-file", TINY_CONFIG, "--datasets", "synthetic_shapes_tiny_val",
                       "--coco-config", "", "--study", str(study_dir), "--output", str(out)])
    with pytest.raises(SystemExit, match="no_such_val"):
        imbalance.run(["--config-file", TINY_CONFIG, "--datasets", "no_such_val",
                       "--coco-config", "", "--output", str(out)])


@pytest.mark.parametrize("argv, message", [
    (["--max-images", "-1"], "argument --max-images: -1 is not an integer >= 0"),
    (["--coco-images", "0"], "argument --coco-images: 0 is not an integer >= 1"),
    (["--datasets", "synthetic_shapes_val,,x"],
     "argument --datasets: 'synthetic_shapes_val,,x' has an empty name"),
    (["--datasets", "synthetic_shapes_tiny_val,"],
     "argument --datasets: 'synthetic_shapes_tiny_val,' has an empty name"),
])
def test_bad_numbers_and_empty_dataset_names_are_usage_errors_naming_the_option(
        argv, message, tmp_path, capsys):
    """A stranger's finds: --max-images -1 and --coco-images 0 got one message naming neither
    option (exit status 1), and an empty name in --datasets was silently dropped. Now
    argparse's usage error (exit status 2) naming the option, before anything is measured."""
    from retina_focal import cli

    assert cli.main(["imbalance", "--config-file", TINY_CONFIG, "--coco-config", "",
                     "--output", str(tmp_path / "out")] + argv) == 2
    err = capsys.readouterr().err
    assert f"retina-focal imbalance: error: {message}" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_both_configs_are_checked_before_any_dataset_is_measured(monkeypatch, tmp_path):
    """A stranger's find: a missing --coco-config was reported only after every dataset had
    been measured (minutes on the presets)."""
    import retina_focal.analysis.imbalance as analysis
    from retina_focal.cli import imbalance

    def measured(*args, **kwargs):
        raise AssertionError("a dataset was measured before the configs were checked")

    monkeypatch.setattr(analysis, "measure_datasets", measured)
    with pytest.raises(SystemExit, match="nope.yaml' does not exist"):
        imbalance.run(["--config-file", TINY_CONFIG, "--coco-config",
                       str(tmp_path / "nope.yaml"), "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_each_config_builds_its_anchors_and_assigner_once(monkeypatch, tmp_path):
    """The up-front check's setting is the one that measures (each config's backbone, anchors
    and assigner were built once to check and again per dataset)."""
    from retina_focal.analysis.settings import AssignmentSetting
    from retina_focal.cli import imbalance

    built = []
    init = AssignmentSetting.__init__

    def counted(self, cfg):
        built.append(cfg.INPUT.MIN_SIZE_TEST)
        init(self, cfg)

    monkeypatch.setattr(AssignmentSetting, "__init__", counted)
    assert imbalance.run(["--config-file", TINY_CONFIG, "--datasets",
                          "synthetic_shapes_tiny_val,synthetic_shapes_tiny_train",
                          "--coco-images", "2", "--output", str(tmp_path / "out")]) == 0
    assert len(built) == 2 and built[1] == 600  # the config's, then COCO's at 600 px
    saved = json.load(open(tmp_path / "out" / "imbalance.json"))
    assert {"synthetic_shapes_tiny", "synthetic_shapes_tiny_train"} <= set(saved["datasets"])


def test_own_coco_files_are_measured_and_bad_inputs_are_one_error_line(tmp_path, monkeypatch):
    """A stranger's finds, each refused before anything is measured, with nothing written:
    the command could not measure a user's COCO files (its advice, to register them in Python,
    cannot reach the command's process): ``--dataset NAME=JSON:IMAGE_DIR`` now registers them,
    and one given but not measured is refused; a registered dataset without its files
    (Detectron2's coco_2017_val) and a --study results.json that is not an object were
    tracebacks; a study level left out of --datasets vanished from the plot; a two-stage
    config that sets MODEL.RETINANET.IN_FEATURES was measured as if it were a RetinaNet."""
    from helpers import make_gt

    from retina_focal.cli import imbalance

    _, gt_json = make_gt(tmp_path)
    (tmp_path / "images").mkdir()
    for i in (10, 11, 12, 13):
        Image.new("RGB", (100, 100)).save(tmp_path / "images" / f"{i}.png")
    own = f"pets_val={gt_json}:{tmp_path / 'images'}"
    out = tmp_path / "out"
    assert imbalance.run(["--config-file", TINY_CONFIG, "--dataset", own, "--coco-config", "",
                          "--output", str(out)]) == 0
    row = json.load(open(out / "imbalance.json"))["datasets"]["pets"]
    assert row["images"] == 4 and row["num_classes"] == 3

    study = tmp_path / "study"
    study.mkdir()
    frcnn = tmp_path / "frcnn.yaml"
    frcnn.write_text("_BASE_: " + os.path.join(REPO, "configs", "Synthetic",
                                               "faster_rcnn_focal_rpn_R_18_FPN_synthetic.yaml")
                     + "\nMODEL:\n  RETINANET:\n    IN_FEATURES: ['p2', 'p3', 'p4', 'p5', 'p6']\n")
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "no_datasets"))
    cases = [
        (["--dataset", own, "--datasets", "synthetic_shapes_tiny_val"],
         "--dataset pets_val: registered but not measured"),
        (["--datasets", "coco_2017_val"],
         ("--datasets: dataset 'coco_2017_val' is registered but its files cannot be read",
          "no_datasets")),
        (["--datasets", "synthetic_shapes_tiny_val", "--study", str(study)],
         "holds no study's results (a JSON list without a 'study' key)"),
        (["--datasets", "synthetic_shapes_tiny_val", "--study", str(study)],
         "--study has the levels synthetic_shapes_sparse, whose datasets are not measured"),
        (["--datasets", "synthetic_shapes_tiny_val", "--config-file", str(frcnn)],
         "MODEL.META_ARCHITECTURE is 'GeneralizedRCNN'"),
    ]
    for i, (args, message) in enumerate(cases):
        levels = ("synthetic_shapes_tiny", "synthetic_shapes_sparse")
        results = [1, 2] if i == 2 else {"study": "imbalance", "settings": [
            {"label": f"{p} {loss} seed=0"} for p in levels for loss in ("FL", "CE")]}
        (study / "results.json").write_text(json.dumps(results))
        argv = ["--config-file", TINY_CONFIG, "--coco-config", "", "--output",
                str(tmp_path / f"refused{i}")] + args
        with pytest.raises(SystemExit) as info:
            imbalance.run(argv)
        for part in (message,) if isinstance(message, str) else message:
            assert part in str(info.value), (args, info.value)
        assert str(info.value).startswith("error: ")
        assert not (tmp_path / f"refused{i}").exists()


def test_second_strangers_finds(tmp_path, monkeypatch):
    """A COCO file without images (a ValueError traceback after the other datasets were
    measured) or without objects (Infinity in imbalance.json) is refused before any dataset is
    measured; a --study trained with another config is refused (its AP differences were
    plotted against the other config's anchors); --study given the results.json file is told
    to give the folder; the COCO row names a --coco-config that is not the paper's."""
    from helpers import make_gt

    import retina_focal.analysis.imbalance as analysis
    from retina_focal.cli import imbalance

    gt, gt_json = make_gt(tmp_path)
    (tmp_path / "images").mkdir()
    for image in gt["images"]:
        Image.new("RGB", (100, 100)).save(tmp_path / "images" / image["file_name"])
    for name, content in (("noimages", dict(gt, images=[], annotations=[])),
                          ("noobjects", dict(gt, annotations=[]))):
        (tmp_path / f"{name}.json").write_text(json.dumps(content))
    measured = []
    real = analysis.measure_imbalance
    monkeypatch.setattr(analysis, "measure_imbalance",
                        lambda *a, **k: measured.append(a[-1]) or real(*a, **k))
    base = ["--config-file", TINY_CONFIG, "--coco-config", "", "--dataset",
            f"good={gt_json}:{tmp_path / 'images'}"]
    study = tmp_path / "study"
    study.mkdir()
    trained = "configs/Synthetic/retina_focal_R_18_FPN_synthetic.yaml"
    (study / "results.json").write_text(json.dumps({
        "study": "imbalance", "config_file": trained, "settings": []}))
    for i, (args, message) in enumerate([
            (["--dataset", f"empty={tmp_path / 'noimages.json'}:{tmp_path / 'images'}",
              "--datasets", "good,empty"], "--datasets empty: no images: negatives per positive"),
            (["--dataset", f"bare={tmp_path / 'noobjects.json'}:{tmp_path / 'images'}",
              "--datasets", "good,bare"], "--datasets bare: no object in its 4 images"),
            (["--study", str(study)], "was trained with configs/Synthetic/retina_focal_R_18_FPN_"
             "synthetic.yaml, not --config-file"),
            (["--study", str(study / "results.json")], "is a file: give the study's folder")]):
        with pytest.raises(SystemExit) as info:
            imbalance.run(base + args + ["--output", str(tmp_path / f"out{i}")])
        assert message in str(info.value), info.value
        assert not (tmp_path / f"out{i}").exists() and measured == []
    # the COCO row names the config it measured with
    out = tmp_path / "coco"
    assert imbalance.run(["--config-file", TINY_CONFIG, "--datasets", "good", "--dataset",
                          base[-1], "--coco-config", TINY_CONFIG, "--coco-images", "2",
                          "--output", str(out)]) == 0
    assert set(json.load(open(out / "imbalance.json"))["datasets"]) == {
        "good", "COCO (retina_focal_R_18_FPN_tiny.yaml's anchors at 600 px)"}


def test_a_dataset_without_positive_anchors_is_refused_not_infinite():
    """Negatives per positive anchor of a dataset whose objects get no positive anchor would
    be infinite (written as Infinity, which is not JSON): it is an error naming the dataset."""
    from retina_focal.analysis.imbalance import measure_imbalance
    from retina_focal.utils.errors import DataError

    class NoPositives:
        def analyze(self, d):
            return {"num_positive": 0, "num_negative": 100, "num_ignored": 0, "gt_class": [0]}

    with pytest.raises(DataError, match="tiny_boxes: no anchor is positive in its 2 images"):
        measure_imbalance(NoPositives(), [{}, {}], 3, "tiny_boxes")
