"""tools/ablate.py: studies as data, a real 2-setting study (2 workers), resume, bad input."""
import json
import os

import numpy as np
import pytest
from conftest import REPO, TINY_CONFIG, copypaste_ap, run_tool
from detectron2.config import get_cfg
from PIL import Image

from retina_focal import add_retina_focal_config
from retina_focal.ablation.results import METRICS, write_results
from retina_focal.ablation.studies import (
    STUDIES,
    get_schedule,
    get_study,
    resolve_overrides,
)

SYNTHETIC_CONFIG = os.path.join(REPO, "configs", "Synthetic",
                                "retina_focal_R_18_FPN_synthetic.yaml")


def _overrides(setting):
    return dict(setting.overrides)


def test_paper_tables_as_data():
    # Lin et al. 2017, Table 1a: gamma 0, alpha -> AP
    a = get_study("1a")
    assert [(_overrides(s)["MODEL.RETINANET.FOCAL_LOSS_ALPHA"], s.paper_ap) for s in a.settings] \
        == [(0.1, 0.0), (0.25, 10.8), (0.5, 30.2), (0.75, 31.1), (0.9, 30.8), (0.99, 28.7),
            (0.999, 25.1)]
    assert all(_overrides(s)["MODEL.RETINANET.FOCAL_LOSS_GAMMA"] == 0 for s in a.settings)
    # Table 1b: (gamma, alpha) -> AP
    b = get_study("1b")
    assert [(_overrides(s)["MODEL.RETINANET.FOCAL_LOSS_GAMMA"],
             _overrides(s)["MODEL.RETINANET.FOCAL_LOSS_ALPHA"], s.paper_ap) for s in b.settings] \
        == [(0, .75, 31.1), (.1, .75, 31.4), (.2, .75, 31.9), (.5, .5, 32.9), (1, .25, 33.7),
            (2, .25, 34.0), (5, .25, 32.2)]
    d = get_study("1d")
    assert [s.paper_ap for s in d.settings] == [31.1, 31.8, 30.6, 32.8, 31.0, 27.6, 31.1, 28.3,
                                                24.0, None, 36.0]
    assert [s.paper_ap for s in get_study("table3").settings] == [31.1, 34.0, 33.8, 33.9]
    assert set(STUDIES) >= {"1a", "1b", "1c", "1d", "table3", "extra_losses"}


def test_anchor_study_derives_sizes_from_the_base_config():
    cfg = get_cfg()
    add_retina_focal_config(cfg)
    cfg.merge_from_file(SYNTHETIC_CONFIG)
    c = get_study("1c")
    labels = c.labels()
    assert labels == ["1 scale x 1 ratio", "2 scale x 1 ratio", "3 scale x 1 ratio",
                      "1 scale x 3 ratio", "2 scale x 3 ratio", "3 scale x 3 ratio",
                      "4 scale x 3 ratio"]
    setting = c.settings[labels.index("2 scale x 3 ratio")]
    opts = resolve_overrides(setting.overrides, cfg)
    cfg.merge_from_list(opts)
    # the synthetic config's smallest anchors per level are 16, 32, ..., 256; octave scales
    # 2^(i/2): the paper's 2 scales
    for level, base in enumerate([16, 32, 64, 128, 256]):
        assert cfg.MODEL.ANCHOR_GENERATOR.SIZES[level] == pytest.approx([base, base * 2 ** 0.5])
    assert cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS == [[0.5, 1.0, 2.0]]


def test_assigner_study_settings_build_the_assigner_they_name():
    from detectron2.modeling import build_model

    from retina_focal import ATSSAssigner, IoUThresholdMatcher

    built = {}
    for setting in get_study("assigners").settings:
        cfg = get_cfg()
        add_retina_focal_config(cfg)
        cfg.merge_from_file(TINY_CONFIG)
        cfg.merge_from_list(resolve_overrides(setting.overrides, cfg))
        built[setting.label] = build_model(cfg).assigner
    assert isinstance(built["ATSS top-9"], ATSSAssigner)
    others = [a for label, a in built.items() if label != "ATSS top-9"]
    assert all(isinstance(a, IoUThresholdMatcher) for a in others)
    # the settings really differ: six distinct assigners (by their repr / attributes)
    assert len({repr(vars(a)) for a in built.values()}) == len(built) == 6


def test_bad_study_schedule_and_key_are_clear_errors(capsys):
    from retina_focal.cli import ablate

    assert ablate.run(["--config-file", TINY_CONFIG, "--study", "2z", "--schedule", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "Unknown study '2z'" in err and \
        "1a, 1b, 1c, 1d, 1e, table3, imbalance, assigners, extra_losses" in err
    assert ablate.run(["--config-file", TINY_CONFIG, "--study", "1a", "--schedule", "fast"]) == 2
    err = capsys.readouterr().err
    assert "Unknown schedule 'fast'" in err and "cpu_short" in err
    assert ablate.run(["--config-file", TINY_CONFIG, "--study", "1a", "--schedule", "tiny",
                       "--settings", "alpha=0.33"]) == 2
    assert "alpha=0.33" in capsys.readouterr().err
    assert ablate.run(["--config-file", TINY_CONFIG, "--study", "1a", "--schedule", "tiny",
                       "MODEL.RETINA_FOCAL.NO_SUCH_KEY", "1"]) == 2
    assert "MODEL.RETINA_FOCAL.NO_SUCH_KEY" in capsys.readouterr().err
    with pytest.raises(ValueError, match="choices: tiny, cpu_short, cpu_medium, cpu, cpu_fast, "
                       "cpu_fast_fp32, cpu_study, cpu_study_fp32, coco_1x"):
        get_schedule("nope")


def _check_outputs(study_dir, labels, paper):
    results = json.load(open(os.path.join(study_dir, "results.json")))
    assert results["study"] == "1b" and results["schedule"] == "tiny"
    rows = results["settings"]
    assert [r["label"] for r in rows] == labels
    assert [r["paper_ap"] for r in rows] == paper
    for r in rows:
        assert r["status"] == "done"
        assert sorted(r["metrics"]) == sorted(METRICS)
        # the metrics are the training run's own final evaluation (its copypaste line, in %)
        log = open(os.path.join(r["output_dir"], "train_stdout.txt")).read()
        expected = copypaste_ap(log)
        got = [r["metrics"][m] for m in METRICS]
        for e, g in zip(expected, got):
            assert (g is None and np.isnan(e)) or g == pytest.approx(e, abs=1e-3)
    md = open(os.path.join(study_dir, "results.md")).read().splitlines()
    header = next(i for i, line in enumerate(md) if line.startswith("| setting |"))
    assert md[header].split("|")[2:8] == [f" {m} " for m in METRICS]
    table = md[header + 2: header + 2 + len(labels)]
    for line, row in zip(table, rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == row["label"]
        assert cells[1] == ("-" if row["metrics"]["AP"] is None else f"{row['metrics']['AP']:.1f}")
        assert cells[7] == f"{row['paper_ap']:.1f}"
    img = np.asarray(Image.open(os.path.join(study_dir, "results.png")).convert("RGB"))
    assert img.shape[0] > 200 and img.shape[1] > 300 and img.std() > 5  # a drawn plot
    return rows


def test_study_runs_two_workers_then_resumes_without_retraining(tmp_path):
    study_dir = str(tmp_path / "study")
    labels = ["gamma=0.0 alpha=0.75", "gamma=2.0 alpha=0.25"]
    args = ["tools/ablate.py", "--config-file", TINY_CONFIG, "--study", "1b", "--schedule",
            "tiny", "--output", study_dir, "--settings", ",".join(labels)]
    # score threshold 0 so that a 2-iteration model makes detections and gets a finite AP
    opts = ["MODEL.RETINANET.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "20"]
    # the second setting was interrupted before: its directory has no result.json
    stale = os.path.join(study_dir, "06_gamma=2.0_alpha=0.25")
    os.makedirs(stale)
    open(os.path.join(stale, "metrics.json"), "w").write('{"bbox/AP": 99.0}\n')
    proc = run_tool(args + ["--workers", "2"] + opts, cwd=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "2 of 2 settings to train, 2 worker(s)" in out
    # the interrupted run holds no result: trained again from scratch, and the log says so
    assert f"'gamma=2.0 alpha=0.25': {stale} holds an unfinished run (no result.json); it is " \
        "trained again from scratch" in out
    # both settings started before either finished: they ran at the same time
    starts = [out.index(f"start '{label}'") for label in labels]
    assert max(starts) < out.index("1/2 settings finished")
    assert "iter: 1 " in out  # Detectron2's per-iteration line (with ETA) is passed through
    rows = _check_outputs(study_dir, labels, [31.1, 34.0])
    assert rows[1]["output_dir"] == stale and rows[1]["metrics"]["AP"] != 99.0  # retrained
    # each record's key is the hash of the config the run trained (its config.yaml)
    from retina_focal.ablation.records import config_digest, resolved_config
    from retina_focal.engine.defaults import build_cfg

    for r in rows:
        record = json.load(open(os.path.join(r["output_dir"], "result.json")))
        trained = resolved_config(build_cfg(os.path.join(r["output_dir"], "config.yaml")))
        assert record["config"] == trained
        assert record["signature"]["config_sha256"] == config_digest(trained)
    assert all(r["metrics"]["AP"] is not None for r in rows)
    kept = {(d, f): os.stat(os.path.join(d, f)).st_mtime_ns for d in (r["output_dir"] for r in rows)
            for f in ("result.json", "metrics.json", "model_final.pth")}

    # the same command again: nothing is retrained, the results are written again
    proc = run_tool(args + opts, cwd=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "0 of 2 settings to train, 1 worker(s)" in out
    for label in labels:
        assert f"'{label}': already done" in out and f"start '{label}'" not in out
    assert kept == {k: os.stat(os.path.join(*k)).st_mtime_ns for k in kept}
    assert "iter: " not in out
    _check_outputs(study_dir, labels, [31.1, 34.0])


def test_final_metrics_are_the_last_evaluation_and_no_detection_is_zero(tmp_path):
    from retina_focal.ablation.results import read_final_metrics

    rows = [{"iteration": 9, "total_loss": 1.0},
            {"iteration": 9, **{f"bbox/{m}": 10.0 + i for i, m in enumerate(METRICS)}},
            {"iteration": 19, **{f"bbox/{m}": 20.0 + i for i, m in enumerate(METRICS)}},
            {"iteration": 19, "total_loss": 0.5}]
    (tmp_path / "metrics.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert read_final_metrics(str(tmp_path)) == {m: 20.0 + i for i, m in enumerate(METRICS)}
    # Detectron2 writes NaN when the model detected nothing ...
    (tmp_path / "metrics.json").write_text(json.dumps({f"bbox/{m}": float("nan")
                                                      for m in METRICS}) + "\n")
    assert read_final_metrics(str(tmp_path)) == {m: None for m in METRICS}
    # ... and says so in its log: that is an AP of 0
    (tmp_path / "log.txt").write_text("d2.evaluation.coco_evaluation WARNING: No predictions "
                                      "from the model!\n")
    assert read_final_metrics(str(tmp_path)) == {m: 0.0 for m in METRICS}
    assert read_final_metrics(str(tmp_path / "missing")) is None


def test_workers_settings_and_config_file_errors_are_refused_before_anything_runs(
        tmp_path, monkeypatch, capsys):
    from retina_focal.cli import ablate

    monkeypatch.chdir(tmp_path)
    base = ["--study", "1a", "--schedule", "tiny", "--output", str(tmp_path / "out")]
    labels = get_study("1a").labels()

    def refused(argv, error, message):
        with pytest.raises(error) as e:
            ablate.plan_from_args(ablate.build_parser().parse_args(argv))
        assert str(e.value) == message
        assert ablate.run(argv) == 2
        assert f"error: {message}" in capsys.readouterr().err

    refused(["--config-file", TINY_CONFIG, "--workers", "0"] + base, ValueError,
            "--workers=0 is invalid: use 1 or more")
    refused(["--config-file", TINY_CONFIG, "--settings", f"{labels[0]},alpha=0.33"] + base,
            ValueError, f"--settings: ['alpha=0.33'] not in study 1a; its settings: {labels}")
    refused(["--config-file", "x.yaml"] + base, FileNotFoundError,
            "config file 'x.yaml' does not exist here, and config 'x.yaml' is not one of "
            "retina_focal's configs (16 shipped: retina_focal.config.list_configs())")
    with pytest.raises(SystemExit) as e:  # no --config-file at all: argparse's usage error
        ablate.run(base)
    assert e.value.code == 2
    assert "the following arguments are required: --config-file" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []  # nothing written


def test_focal_rpn_studies_build_the_rpn_they_name():
    """Issue 17: the same settings for the RPN alone (proposal recall) and the whole Faster
    R-CNN (box AP); each setting's config builds the FocalRPN its label names."""
    from retina_focal.engine.defaults import build_cfg, build_model
    from retina_focal.modeling import FocalRPN

    config = os.path.join(REPO, "configs", "Synthetic",
                          "faster_rcnn_focal_rpn_R_18_FPN_synthetic.yaml")
    proposals, detector = get_study("focal_rpn_proposals"), get_study("focal_rpn_detector")
    assert proposals.task == "box_proposals" and detector.task == "bbox"
    assert proposals.labels() == detector.labels()
    assert proposals.labels()[:4] == ["BCE + sampler (Detectron2)", "FL all anchors prior .01",
                                      "FL + sampler", "alpha-CE all anchors"]
    expected = {  # label -> (alpha, gamma, sampling, normalizer, prior, box normaliser)
        "BCE + sampler (Detectron2)": (-1.0, 0.0, "detectron2", "detectron2", 0.5, "same"),
        "FL all anchors prior .01": (0.25, 2.0, "all", "ema", 0.01, "same"),
        "FL + sampler": (0.25, 2.0, "detectron2", "detectron2", 0.5, "same"),
        "alpha-CE all anchors": (0.75, 0.0, "all", "ema", 0.01, "same"),
        "FL gamma=0.5 alpha=.5 all anchors": (0.5, 0.5, "all", "ema", 0.01, "same"),
        "FL gamma=1 alpha=.25 all anchors": (0.25, 1.0, "all", "ema", 0.01, "same"),
        "FL all anchors prior .01 sampled box loss": (0.25, 2.0, "all", "ema", 0.01,
                                                      "detectron2"),
    }
    for study, arch in ((proposals, "ProposalNetwork"), (detector, "GeneralizedRCNN")):
        for setting in study.settings:
            cfg = build_cfg(config, resolve_overrides(setting.overrides, None))
            assert cfg.MODEL.META_ARCHITECTURE == arch
            rpn = build_model(cfg).proposal_generator
            assert isinstance(rpn, FocalRPN)
            loss = rpn.objectness_loss
            got = (loss.alpha, loss.gamma, rpn.sampling, rpn.normalizer, rpn.prior_prob,
                   rpn.box_normalizer)
            assert got == expected[setting.label], setting.label
            if study is proposals:  # AR@1000 needs 1000 proposals per image
                assert cfg.MODEL.RPN.POST_NMS_TOPK_TEST == 1000
    assert get_schedule("config").overrides == ()


def test_proposal_recall_is_read_and_seeds_repeat_each_setting(tmp_path):
    """A ProposalNetwork's final box_proposals/AR* metrics are read like box AP; --seeds makes
    one run per seed (SEED last), and results.md tables the spread over seeds."""
    from retina_focal.ablation.results import PROPOSAL_METRICS, read_final_metrics, write_results
    from retina_focal.ablation.runner import parse_seeds
    from retina_focal.cli import ablate

    rows = [{"iteration": 9, **{f"box_proposals/{m}": 1.0 for m in PROPOSAL_METRICS}},
            {"iteration": 19, **{f"box_proposals/{m}": 50.0 + i
                                 for i, m in enumerate(PROPOSAL_METRICS)}}]
    (tmp_path / "metrics.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert read_final_metrics(str(tmp_path), "box_proposals") == {
        m: 50.0 + i for i, m in enumerate(PROPOSAL_METRICS)}
    assert read_final_metrics(str(tmp_path)) is None  # no box AP in a proposal run

    assert parse_seeds("0, 1,2") == [0, 1, 2] and parse_seeds(None) == []
    for bad in ("a", "-1", "1,1", "", ","):  # an empty --seeds names no seed: refused
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)
    config = os.path.join(REPO, "configs", "Synthetic",
                          "faster_rcnn_focal_rpn_R_18_FPN_synthetic.yaml")
    plan = ablate.plan_from_args(ablate.build_parser().parse_args(
        ["--config-file", config, "--study", "focal_rpn_proposals", "--schedule", "tiny",
         "--settings", "FL + sampler,FL all anchors prior .01", "--seeds", "3,4"]))
    runs = plan["runs"]
    assert [r["label"] for r in runs] == [
        "FL all anchors prior .01 seed=3", "FL all anchors prior .01 seed=4",
        "FL + sampler seed=3", "FL + sampler seed=4"]
    assert [r["opts"][-2:] for r in runs] == [["SEED", "3"], ["SEED", "4"]] * 2

    study = get_study("focal_rpn_proposals")
    table = [{"label": r["label"], "setting": r["setting"].label, "seed": r["seed"],
              "paper_ap": None, "status": "done", "wall_s": 1.0, "overrides": r["opts"],
              "metrics": {m: 40.0 + 2 * k for m in PROPOSAL_METRICS}}
             for k, r in enumerate(runs)]
    paths = write_results(study, table, str(tmp_path), {})
    md = open(paths["md"]).read()
    assert "| setting | AR@100 | ARs@100 |" in md
    assert "| FL all anchors prior .01 | 2 | 41.0 | 40.0 | 42.0 |" in md
    assert "| FL + sampler | 2 | 45.0 | 44.0 | 46.0 |" in md


def test_table_1e_settings_build_their_depth_at_their_scale():
    """Issue 18: R18 / R34 / R50 x 192 / 256 / 320 px on the synthetic config, each with the
    paper's Table 1e row of its scale beside it (R50 only); built and run forward, not
    trained."""
    import torch
    from detectron2.data import detection_utils
    from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock

    from retina_focal.ablation.studies import PAPER_TABLE_1E
    from retina_focal.engine.defaults import build_cfg, build_model

    study = get_study("1e")
    assert study.title == "Table 1e: backbone depth x image scale" and study.timed
    assert study.labels() == [f"R{d}-{s}" for d in (18, 34, 50) for s in (192, 256, 320)]
    assert [(s.paper_ap, s.paper_ms) for s in study.settings] == [(None, None)] * 6 + [
        (30.5, 64.0), (34.3, 98.0), (35.7, 153.0)]  # the paper's R50 at 400 / 600 / 800 px
    assert len(PAPER_TABLE_1E) == 10 and len(study.paper_speed) == 10
    assert {p[0] for p in study.paper_speed} == {"R50", "R101"}
    base = build_cfg(SYNTHETIC_CONFIG, freeze=False)
    blocks = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]),
              50: (BottleneckBlock, [3, 4, 6, 3])}
    for setting in study.settings:
        depth, size = (int(v) for v in setting.label[1:].split("-"))
        assert setting.curve == (f"R{depth}", str(size))
        cfg = build_cfg(SYNTHETIC_CONFIG, resolve_overrides(setting.overrides, base))
        model = build_model(cfg).eval()
        stages = model.backbone.bottom_up.stages
        block, counts = blocks[depth]
        assert [len(st) for st in stages] == counts, setting.label
        assert all(isinstance(b, block) for st in stages for b in st), setting.label
        # the synthetic config's half width: stem 32; res5 256 (BasicBlock) or 4 x 256
        assert model.backbone.bottom_up.stem.out_channels == 32
        assert stages[-1][-1].out_channels == (256 if depth < 50 else 1024)
        for is_train in (True, False):  # a 256x256 image is resized to size x size
            augs = detection_utils.build_augmentation(cfg, is_train)
            image = np.zeros((256, 256, 3), dtype=np.uint8)
            for aug in augs:
                image = aug.get_transform(image).apply_image(image)
            assert image.shape[:2] == (size, size), (setting.label, is_train)
        with torch.no_grad():
            features = model.backbone(torch.zeros(1, 3, size, size))
        assert sorted(features) == ["p3", "p4", "p5", "p6", "p7"]
        assert features["p3"].shape[-2:] == (size // 8, size // 8)


_PURE_LINE = ("[12/01 03:40:00 d2.evaluation.evaluator]: Total inference pure compute time: "
              "0:00:0{} ({} s / iter per device, on 1 devices)\n")


def test_inference_time_is_read_from_the_log_and_its_absence_is_an_error(tmp_path):
    from retina_focal.ablation.results import read_inference_time

    with pytest.raises(FileNotFoundError, match=str(tmp_path / "log.txt")):
        read_inference_time(str(tmp_path))
    log = tmp_path / "log.txt"
    log.write_text("[12/01 03:39:00 d2.engine.train_loop]: Starting training from iteration 0\n"
                   "Total inference time: 0:00:02 (0.040000 s / iter per device, on 1 devices)\n")
    with pytest.raises(ValueError) as e:  # the total time (data loading too) is not taken
        read_inference_time(str(tmp_path))
    assert str(log) in str(e.value) and "pure compute time" in str(e.value)
    # two evaluations: the last one's pure compute time
    log.write_text(_PURE_LINE.format(1, "0.021000") + _PURE_LINE.format(2, "0.012345"))
    assert read_inference_time(str(tmp_path)) == pytest.approx(0.012345)


def test_speed_accuracy_plot_and_table_of_a_timed_study(tmp_path):
    from retina_focal.ablation.results import plot_speed_accuracy, write_results

    study = get_study("1e")
    rows = []
    for k, setting in enumerate(study.settings):
        done = k != 4  # one setting failed: it is tabled as such and left off the plot
        rows.append({"label": setting.label, "paper_ap": setting.paper_ap,
                     "paper_ms": setting.paper_ms, "curve": list(setting.curve),
                     "status": "done" if done else "failed", "wall_s": 60.0,
                     "inference_s_per_image": 0.01 * (k + 1) if done else None,
                     "metrics": {m: 10.0 + k for m in METRICS} if done else None,
                     "overrides": []})
    path = str(tmp_path / "alone.png")
    plot_speed_accuracy(rows, study.paper_speed, path, title="fixture")
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape[1] > 800 and img.std() > 5  # two panels, drawn
    paths = write_results(study, rows, str(tmp_path), {})
    assert paths["speed_accuracy"] == str(tmp_path / "speed_accuracy.png")
    assert os.path.isfile(paths["speed_accuracy"])
    md = open(paths["md"]).read()
    assert "| paper AP | ms / image | paper ms | train+eval s |" in md
    assert "| R18-192 | 10.0 | 10.0 | 10.0 | 10.0 | 10.0 | 10.0 | - | 10.0 | - | 60 |" in md
    assert "| R50-256 | 17.0 | 17.0 | 17.0 | 17.0 | 17.0 | 17.0 | 34.3 | 80.0 | 98.0 | 60 |" in md
    assert "| R34-256 | failed |" in md
    # other studies keep their table
    os.makedirs(tmp_path / "1a")
    other = write_results(get_study("1a"), [], str(tmp_path / "1a"), {})
    assert "speed_accuracy" not in other and "ms / image" not in open(other["md"]).read()


def test_a_timed_study_records_the_runs_inference_time(tmp_path, capsys):
    """One 1e setting, 2 iterations of the tiny config: result.json and results.md have the
    run's own pure compute time per image (its log's line), and speed_accuracy.png is drawn;
    a log without the line is reported naming the file, and the setting is retrained."""
    from retina_focal.ablation.results import read_inference_time

    study_dir = str(tmp_path / "study")
    args = ["tools/ablate.py", "--config-file", TINY_CONFIG, "--study", "1e", "--schedule",
            "tiny", "--output", study_dir, "--settings", "R18-192",
            "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "20"]
    proc = run_tool(args, cwd=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    run_dir = os.path.join(study_dir, "01_R18-192")
    result = json.load(open(os.path.join(run_dir, "result.json")))
    log = open(os.path.join(run_dir, "log.txt")).read()
    assert "Total inference pure compute time" in log
    seconds = read_inference_time(run_dir)
    assert result["inference_s_per_image"] == seconds > 0
    row = json.load(open(os.path.join(study_dir, "results.json")))["settings"][0]
    assert row["inference_s_per_image"] == seconds and row["curve"] == ["R18", "192"]
    assert f"| - | {1000 * seconds:.1f} | - |" in open(os.path.join(study_dir, "results.md")).read()
    assert os.path.isfile(os.path.join(study_dir, "speed_accuracy.png"))

    # the same run without its time (an older result.json) and without the log line
    del result["inference_s_per_image"]
    json.dump(result, open(os.path.join(run_dir, "result.json"), "w"))
    open(os.path.join(run_dir, "log.txt"), "w").write(log.replace("pure compute", "compute"))
    from retina_focal.ablation.runner import StudyRunner
    from retina_focal.cli import ablate

    plan = ablate.plan_from_args(ablate.build_parser().parse_args(args[1:]))
    runner = StudyRunner(plan)
    assert runner.load_done(plan["runs"][0]) is None  # not taken as done: retrained
    out = capsys.readouterr().out
    assert os.path.join(run_dir, "log.txt") in out and "pure compute time" in out


def test_verdicts_follow_the_spread_over_seeds(tmp_path):
    """Issue 27: two settings are separable only when their ranges over seeds do not overlap;
    each study's orderings are judged "reproduced" / "not reproduced" / "not separable" in
    results.md and results.json, and the plot and the table show the mean and the spread."""
    from retina_focal.ablation.results import seed_summary, separation, verdict, write_results
    from retina_focal.ablation.studies import Claim

    assert separation([30.0, 31.0], [28.0, 29.5]) == "higher"
    assert separation([28.0, 29.5], [30.0, 31.0]) == "lower"
    assert separation([30.0, 31.0], [29.0, 30.5]) == "not separable"  # ranges overlap
    assert separation([30.0, 31.0], [31.0, 32.0]) == "not separable"  # they touch
    assert separation([30.0], [20.0, 21.0]) == "too few seeds"

    study = get_study("table3")
    assert [c.text for c in study.claims] == [
        "FL beats CE", "FL* (2, 1) beats CE", "FL and FL* (2, 1) are equal"]
    scores = {"CE alpha=.75": [40.0, 41.0], "FL gamma=2 alpha=.25": [44.0, 45.0],
              "FL* gamma*=2 beta=1": [40.5, 43.0]}
    rows = [{"label": f"{label} seed={seed}", "setting": label, "seed": seed, "paper_ap": None,
             "status": "done", "wall_s": 1.0, "overrides": [],
             "metrics": {m: value for m in METRICS}}
            for label, values in scores.items() for seed, value in enumerate(values)]
    rows.append({"label": "FL* gamma*=4 beta=0 seed=0", "setting": "FL* gamma*=4 beta=0",
                 "seed": 0, "paper_ap": None, "status": "pending", "wall_s": None,
                 "overrides": [], "metrics": None})
    summary = seed_summary(rows, "AP")
    assert summary["FL gamma=2 alpha=.25"] == {"values": [44.0, 45.0], "seeds": 2, "mean": 44.5,
                                               "min": 44.0, "max": 45.0, "spread": 1.0,
                                               "failed": 0}
    assert summary["FL* gamma*=4 beta=0"]["mean"] is None
    assert [verdict(c, summary) for c in study.claims] == [
        "reproduced", "not separable", "not reproduced"]
    reverse = Claim("CE beats FL", "CE alpha=.75", "FL gamma=2 alpha=.25")
    assert verdict(reverse, summary) == "not reproduced"
    ties = Claim("CE and FL* tie", "CE alpha=.75", "FL* gamma*=2 beta=1", "ties")
    assert verdict(ties, summary) == "reproduced (not separable)"
    assert verdict(Claim("x", "CE alpha=.75", "FL* gamma*=4 beta=0"), summary) == \
        "too few seeds"
    # a setting whose runs failed (diverged) is named: not taken for one that did not run
    failed = [dict(r, status="failed", metrics=None) if r["setting"] == "CE alpha=.75" and
              r["seed"] == 1 else r for r in rows]
    assert verdict(study.claims[0], seed_summary(failed, "AP")) == \
        "too few seeds: CE alpha=.75 failed"

    paths = write_results(study, rows, str(tmp_path), {})
    md = open(paths["md"]).read()
    assert "| FL gamma=2 alpha=.25 | 2 | 44.5 | 44.0 | 45.0 | 1.0 | best |" in md
    assert "| CE alpha=.75 | 2 | 40.5 | 40.0 | 41.0 | 1.0 | below (-4.0) |" in md
    assert "| FL* gamma*=2 beta=1 | 2 | 41.8 | 40.5 | 43.0 | 2.5 | below (-2.8) |" in md
    assert ("| FL beats CE | FL gamma=2 alpha=.25: 44.5 (44.0-45.0) | CE alpha=.75: 40.5 "
            "(40.0-41.0) | +4.0 | reproduced |") in md
    assert "| FL and FL* (2, 1) are equal |" in md and "| not reproduced |" in md
    # ranges 0.001 apart are printed with the digits that show them apart, not as touching
    close = {"CE alpha=.75": [45.35, 45.4], "FL gamma=2 alpha=.25": [45.401, 45.45]}
    close_rows = [dict(r, metrics={m: close[r["setting"]][r["seed"]] for m in METRICS})
                  for r in rows if r["setting"] in close]
    (tmp_path / "close").mkdir()
    close_md = open(write_results(study, close_rows, str(tmp_path / "close"), {})["md"]).read()
    assert ("| FL beats CE | FL gamma=2 alpha=.25: 45.425 (45.401-45.450) | CE alpha=.75: "
            "45.375 (45.350-45.400) | +0.050 | reproduced |") in close_md
    saved = json.load(open(paths["json"]))
    assert [c["verdict"] for c in saved["claims"]] == [
        "reproduced", "not separable", "not reproduced"]
    assert saved["seed_summary"]["CE alpha=.75"]["spread"] == 1.0
    assert Image.open(paths["png"]).size[0] > 300

    with pytest.raises(ValueError, match="not one of its settings"):
        from retina_focal.ablation.studies import Study
        Study("x", "x", study.settings, claims=(Claim("y", "CE alpha=.75", "nope"),))
    with pytest.raises(ValueError, match="relation"):
        Claim("y", "a", "b", "wins")


def test_imbalance_study_pairs_fl_and_ce_on_every_preset():
    """Issue 27: the imbalance study trains Table 1b's FL and Table 1a's CE on each preset's
    train split and evaluates on its val split, the default preset's too (a level trains on
    the preset it is tabled under, whatever the base config's datasets); on the synthetic
    config the default preset's runs have the key of Table 3's CE and FL runs (reused on
    resume)."""
    from retina_focal.ablation.runner import build_plan
    from retina_focal.ablation.studies import IMBALANCE_LEVELS
    from retina_focal.data import IMBALANCE_PRESETS

    assert list(IMBALANCE_LEVELS) == list(IMBALANCE_PRESETS)
    study = get_study("imbalance")
    assert len(study.settings) == 2 * len(IMBALANCE_LEVELS) >= 8
    table3 = {s.label: s.overrides for s in get_study("table3").settings}
    for setting in study.settings:
        prefix, loss = setting.label.rsplit(" ", 1)
        o = _overrides(setting)
        assert (o["MODEL.RETINANET.FOCAL_LOSS_GAMMA"], o["MODEL.RETINANET.FOCAL_LOSS_ALPHA"]) \
            == {"FL": (2.0, 0.25), "CE": (0.0, 0.75)}[loss]
        same_loss = table3[{"FL": "FL gamma=2 alpha=.25", "CE": "CE alpha=.75"}[loss]]
        assert set(o) - set(dict(same_loss)) == {"DATASETS.TRAIN", "DATASETS.TEST"}
        assert o["DATASETS.TRAIN"] == (f"{prefix}_train",)
        assert o["DATASETS.TEST"] == (f"{prefix}_val",)
    keys = {}
    for name, labels in (("imbalance", "synthetic_shapes FL,synthetic_shapes CE"),
                         ("table3", "FL gamma=2 alpha=.25,CE alpha=.75")):
        for config in (SYNTHETIC_CONFIG, TINY_CONFIG):
            plan = build_plan(config, name, "cpu_short", settings_text=labels,
                              output=os.path.join("output", "not_made"))
            keys[name, config] = {r["signature"]["config_sha256"] for r in plan["runs"]}
    assert keys["imbalance", SYNTHETIC_CONFIG] == keys["table3", SYNTHETIC_CONFIG]
    # the tiny config trains on synthetic_shapes_tiny: its Table 3 runs are other runs
    assert keys["imbalance", TINY_CONFIG] != keys["table3", TINY_CONFIG]
    assert [(c.better, c.worse) for c in study.claims] == [
        (f"{p} FL", f"{p} CE") for p in IMBALANCE_LEVELS]
    base = build_cfg_for_test()
    for setting in study.settings:  # every override applies to the synthetic config
        base.clone().merge_from_list(resolve_overrides(setting.overrides, base))


def build_cfg_for_test():
    from retina_focal.engine.defaults import build_cfg

    return build_cfg(SYNTHETIC_CONFIG, freeze=False)


def test_cpu_fast_is_the_default_schedule():
    """Issue 27: every study runs at cpu_fast unless told otherwise; cpu_short stays as a
    smoke test (its description says so); cpu_fast and cpu_study each have a float32 twin that
    differs only in LR and precision."""
    from retina_focal.cli import ablate

    args = ablate.build_parser().parse_args(["--config-file", TINY_CONFIG, "--study", "1a"])
    assert args.schedule == "cpu_fast"
    for name in ("cpu_fast", "cpu_study"):
        study, fp32 = dict(get_schedule(name).overrides), \
            dict(get_schedule(name + "_fp32").overrides)
        assert "SOLVER.AMP.ENABLED" not in study  # the config's own bfloat16 setting
        assert fp32["SOLVER.AMP.ENABLED"] is False
        assert {k: v for k, v in study.items() if k != "SOLVER.BASE_LR"} == \
            {k: v for k, v in fp32.items() if k not in ("SOLVER.BASE_LR", "SOLVER.AMP.ENABLED")}
    fast = dict(get_schedule("cpu_fast").overrides)
    assert (fast["SOLVER.IMS_PER_BATCH"], fast["SOLVER.MAX_ITER"], fast["SOLVER.BASE_LR"],
            fast["SOLVER.STEPS"]) == (4, 1700, 0.08, (1400, 1600))
    assert "smoke test" in get_schedule("cpu_short").description


def test_imbalance_results_do_not_rank_settings_of_different_datasets(tmp_path):
    """The imbalance study's settings train on different presets: results.md tables their
    spread without a "vs the best" column, and judges FL against CE per preset."""
    from retina_focal.ablation.results import write_results

    study = get_study("imbalance")
    assert not study.compare_to_best and get_study("table3").compare_to_best
    rows = [{"label": f"{s.label} seed={seed}", "setting": s.label, "seed": seed,
             "paper_ap": None, "status": "done", "wall_s": 1.0, "overrides": [],
             "metrics": {m: 10.0 * k + seed for m in METRICS}}
            for k, s in enumerate(study.settings) for seed in (0, 1)]
    md = open(write_results(study, rows, str(tmp_path), {})["md"]).read()
    assert "vs the best" not in md
    assert "| synthetic_shapes FL | 2 | 0.5 | 0.0 | 1.0 | 1.0 |\n" in md
    assert "| FL beats CE on synthetic_shapes | " in md and "| -10.0 | not reproduced |" in md


def test_a_setting_refused_by_the_trainer_fails_with_its_error_line(tmp_path):
    """Each setting runs the engine's training (``train_config``, not the ``retina-focal``
    command) in a process of its own: a run the trainer refuses (here SOLVER.BASE_LR -1,
    refused once the config is built) is a failed setting whose one-line error, naming the
    key, is shown, and the study goes on to its other setting."""
    study_dir = str(tmp_path / "study")
    labels = ["gamma=0.0 alpha=0.75", "gamma=2.0 alpha=0.25"]
    proc = run_tool(["tools/ablate.py", "--config-file", TINY_CONFIG, "--study", "1b",
                     "--schedule", "tiny", "--output", study_dir, "--settings",
                     ",".join(labels), "SOLVER.BASE_LR", "-1.0"], cwd=REPO)
    out = proc.stdout + proc.stderr
    assert "FAILED (exit code 1" in out, out[-4000:]
    assert "error: " in out and "SOLVER.BASE_LR" in out and "Traceback" not in out
    assert "2/2 settings finished" in out  # the second setting ran after the first failed
    log = open(os.path.join(study_dir, "01_gamma=0.0_alpha=0.75", "train_stdout.txt")).read()
    assert "train_config" in log and "retina_focal.cli" not in log
    # its first line is the setting's command, quoted so that it pastes into a shell
    import shlex

    first = shlex.split(log.splitlines()[0])
    assert first[0] == "$" and first[2] == "-c" and "train_config(" in first[3]
    assert first[4] == TINY_CONFIG and first[-2:] == ["OUTPUT_DIR", os.path.dirname(
        os.path.join(study_dir, "01_gamma=0.0_alpha=0.75", "x"))]


def test_every_claim_is_the_papers_ordering_where_the_paper_has_both_numbers():
    """A claim says what the paper found: where the paper has both settings' AP, "beats" is
    the higher paper AP over the lower, and "ties" two paper APs within 0.5 (Table 1c's 33.8
    and 34.0)."""
    from retina_focal.ablation.studies import STUDIES

    checked = 0
    for study in STUDIES.values():
        paper = {s.label: s.paper_ap for s in study.settings}
        for claim in study.claims:
            a, b = paper[claim.better], paper[claim.worse]
            if a is None or b is None:
                continue
            checked += 1
            if claim.relation == "ties":
                assert abs(a - b) <= 0.5, (study.name, claim.text)
            else:
                assert a > b, (study.name, claim.text)
    assert checked >= 15


def test_orderings_without_seeds_and_of_models_that_detect_nothing(tmp_path):
    """Without --seeds each setting has one run: its ordering is "too few seeds", with the
    runs' AP, not "not run" (a stranger's find); a run tabled twice (with and without its
    seed) counts once; two settings that scored 0 in every run (models that detect nothing)
    are not compared; one at 0 is below the other (a stranger's find: it read "every run
    scored 0" too)."""
    study = get_study("table3")
    metrics = {m: 0.0 for m in METRICS}
    rows = [{"label": "CE alpha=.75", "paper_ap": None, "status": "done", "wall_s": 1.0,
             "overrides": [], "metrics": dict(metrics, AP=40.0), "output_dir": "ce"},
            {"label": "FL gamma=2 alpha=.25", "paper_ap": None, "status": "done",
             "wall_s": 1.0, "overrides": [], "metrics": dict(metrics, AP=42.0),
             "output_dir": "fl"}]
    saved = json.load(open(write_results(study, rows, str(tmp_path), {})["json"]))
    fl_vs_ce = next(c for c in saved["claims"] if c["claim"] == "FL beats CE")
    assert fl_vs_ce["verdict"] == "too few seeds" and fl_vs_ce["difference"] == 2.0
    assert saved["seed_summary"] == {}  # the spread table stays one of seeds

    seeded = [dict(r, label=f"{r['label']} seed={k}", setting=r["label"], seed=k,
                   output_dir=f"{r['output_dir']}{k}", metrics=dict(metrics))
              for r in rows for k in (0, 1)]
    # the seed-0 run of CE tabled again without its seed (it is the config's SEED)
    again = dict(seeded[0], label="CE alpha=.75", output_dir="ce0")
    del again["seed"], again["setting"]
    saved = json.load(open(write_results(study, seeded + [again], str(tmp_path), {})["json"]))
    fl_vs_ce = next(c for c in saved["claims"] if c["claim"] == "FL beats CE")
    assert fl_vs_ce["verdict"] == "every run scored 0: nothing to compare"
    assert saved["seed_summary"]["CE alpha=.75"]["seeds"] == 2
    md = open(tmp_path / "results.md").read()
    assert "| best |" not in md  # no setting is best when all scored 0
    assert "| CE alpha=.75 | 2 | 0.0 | 0.0 | 0.0 | 0.0 | - |" in md
    # one setting at 0 in every run is below the other: an ordering like any other
    from retina_focal.ablation.results import seed_summary, verdict
    from retina_focal.ablation.studies import Claim

    one_zero = [dict(r, metrics=dict(metrics, AP=30.0 + r["seed"]))
                if r["setting"] == "FL gamma=2 alpha=.25" else r for r in seeded]
    summary = seed_summary(one_zero, "AP")
    assert verdict(study.claims[0], summary) == "reproduced"  # FL beats CE
    assert verdict(Claim("CE beats FL", "CE alpha=.75", "FL gamma=2 alpha=.25"),
                   summary) == "not reproduced"


def test_settings_names_labels_that_hold_commas():
    """The assigners study's labels hold commas ("IoU [0.4, 0.5]"): --settings could not name
    them (each piece was taken for a label)."""
    from retina_focal.ablation.runner import split_labels
    from retina_focal.cli import ablate

    labels = get_study("assigners").labels()
    assert split_labels("IoU [0.4, 0.5],IoU [0.3, 0.7],low-quality off, ATSS top-9", labels) \
        == ["IoU [0.4, 0.5]", "IoU [0.3, 0.7]", "low-quality off", "ATSS top-9"]
    for text, message in (("IoU [0.4", r"\['IoU \[0.4'\] not in study"),
                          ("nope,ATSS top-9", r"\['nope'\] not in study"),
                          ("ATSS top-9,", "has an empty label"), (" , ", "names no setting"),
                          # each piece that spells no label is named, the valid ones are not
                          ("IoU [0.4,ATSS top-9", r"\['IoU \[0.4'\] not in study")):
        with pytest.raises(ValueError, match=message):
            split_labels(text, labels, "assigners")
    with pytest.raises(ValueError, match=r"\['CE', 'FL'\] not in study"):
        split_labels("CE,FL", get_study("table3").labels(), "table3")
    assert [r["label"] for r in ablate.plan_from_args(ablate.build_parser().parse_args(
        ["--config-file", TINY_CONFIG, "--study", "assigners", "--schedule", "tiny",
         "--settings", "ATSS top-9,IoU [0.4, 0.5]"]))["runs"]] == ["IoU [0.4, 0.5]", "ATSS top-9"]


def test_speed_accuracy_plot_has_one_point_per_setting_over_its_seeds(tmp_path):
    """Two seeds of a setting were drawn as two points of its depth's line, joined as if they
    were two scales; now one point per setting (at the seeds' mean) and each run a dot."""
    from retina_focal.ablation.results import plot_speed_accuracy, speed_curves, speed_points

    rows = [{"status": "done", "metrics": {"AP": ap}, "inference_s_per_image": s,
             "curve": ["R18", size]}
            for ap, s, size in ((40.0, 0.030, "256"), (42.0, 0.032, "256"), (50.0, 0.040, "320"),
                                (52.0, 0.044, "320"))]
    assert speed_points(rows) == {"R18": {"256": [(30.0, 40.0), (32.0, 42.0)],
                                          "320": [(40.0, 50.0), (44.0, 52.0)]}}
    assert speed_curves(speed_points(rows)) == {"R18": [("256", 31.0, 41.0), ("320", 42.0, 51.0)]}
    plot_speed_accuracy(rows, (), str(tmp_path / "s.png"))
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_a_study_without_paper_numbers_has_no_paper_column(tmp_path):
    """The focal-RPN studies have no paper numbers: their tables carried an empty "paper AP"
    column (a stranger's find); a study with them keeps it."""
    study = get_study("focal_rpn_proposals")
    assert all(s.paper_ap is None for s in study.settings)
    rows = [{"label": s.label, "paper_ap": None, "status": "done", "wall_s": 5.0,
             "overrides": [], "metrics": {m: 10.0 for m in (*METRICS, "AR@100")}}
            for s in study.settings[:2]]
    md = open(write_results(study, rows, str(tmp_path), {})["md"]).read()
    header = next(line for line in md.splitlines() if line.startswith("| setting |"))
    assert "paper AP" not in header and header.endswith("| train+eval s |")
    row = next(line for line in md.splitlines() if line.startswith(f"| {rows[0]['label']} |"))
    assert row.count("|") == header.count("|") and row.endswith("| 5 |")
    (tmp_path / "t3").mkdir()
    table3 = get_study("table3")
    md = open(write_results(table3, [dict(rows[0], label="CE alpha=.75", paper_ap=31.1)],
                            str(tmp_path / "t3"), {})["md"]).read()
    assert "| paper AP | train+eval s |" in md and "| 31.1 | 5 |" in md
