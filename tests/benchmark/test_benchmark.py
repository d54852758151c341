"""tools/benchmark.py runs end to end in its quick mode and writes every figure (no timing
assertions: the tool measures, tests do not); its Detectron2 side is Detectron2's own
RetinaNet and RetinaNetHead, and "same detections" means same classes, boxes and scores."""
import json
import os
import re

import pytest
import torch
from conftest import REPO, TINY_CONFIG, run_tool
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from detectron2.structures import Boxes, Instances

from retina_focal.benchmark.models import EAGER_TOLERANCES, QUICK_CONFIG, build_models
from retina_focal.benchmark.settings import BenchSettings
from retina_focal.export.parity import compare_instances


def test_benchmark_quick_mode_writes_all_figures(tmp_path):
    out = tmp_path / "bench.json"
    # a BatchNorm head (the quick-start's), which Detectron2's RetinaNetHead builds on 0.6
    proc = run_tool(["tools/benchmark.py", "--quick", "--output", str(out), "--no-gn-head",
                     "MODEL.RETINANET.NORM", "BN"], cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "ratio RetinaFocal / Detectron2" in proc.stdout and "ETA" in proc.stdout
    report = json.loads(out.read_text())

    loss = report["focal_loss"]
    assert set(loss["results"]) == {
        "ours (fused)", "ours (portable)", "fvcore eager", "fvcore TorchScript", "torchvision",
        "Detectron2 loss path",
    }
    for r in loss["results"].values():
        assert r["median_s"] > 0 and r["time_vs_ours"] > 0
        assert r["median_cpu_s"] > 0 and r["cpu_time_vs_ours"] > 0
        assert r["peak_extra_mb"] > 0 and r["memory_vs_ours"] > 0
    # every method keeps at least the (R, K) float32 gradient alive
    grad_mb = loss["problem"]["anchors"] * loss["problem"]["classes"] * 4 / 2**20
    valid_grad_mb = (loss["problem"]["anchors"] - loss["problem"]["ignored"]) * 80 * 4 / 2**20
    assert loss["results"]["ours (fused)"]["peak_extra_mb"] >= grad_mb * 0.99
    assert loss["results"]["fvcore eager"]["peak_extra_mb"] >= valid_grad_mb * 0.99

    for key in ("train_iteration", "inference"):
        sec = report[key]
        assert set(sec["results"]) == {"RetinaFocal", "Detectron2 RetinaNet"}
        assert all(r["median_s"] > 0 for r in sec["results"].values())
        assert sec["ratio_ours_over_d2"] > 0 and sec["cpu_ratio_ours_over_d2"] > 0
        assert sec["ratio_ours_median_over_d2_min"] >= sec["ratio_ours_over_d2"]
    # same weights, same batch: the two models start from the same losses (parity)
    first = report["train_iteration"]["setup"]["first_losses"]
    for k in ("loss_cls", "loss_box_reg"):
        a, b = first["RetinaFocal"][k], first["Detectron2 RetinaNet"][k]
        assert abs(a - b) <= 1e-5 * abs(b)
    assert report["inference"]["setup"]["same_detections"]
    diff = report["inference"]["setup"]["detection_differences"]
    assert diff["same_classes"] and diff["detections"][0] == diff["detections"][1] > 0
    assert diff["max_box_difference"] <= 1e-3 and diff["max_score_difference"] <= 1e-4
    for key in ("train_iteration", "inference"):
        assert report[key]["setup"]["detectron2_head"] == "RetinaNetHead"
        # what was measured: the config and its overrides (a stranger's find: inference had
        # neither, the training section no overrides)
        # its shipped name, which --config-file takes anywhere (the path relative to the
        # checkout was not one outside it)
        assert report[key]["setup"]["config"] == "Synthetic/retina_focal_R_18_FPN_tiny.yaml"
        assert report[key]["setup"]["overrides"] == ["MODEL.RETINANET.NORM", "BN"]
    assert "Inference, one image: Synthetic/retina_focal_R_18_FPN_tiny.yaml " \
        "MODEL.RETINANET.NORM BN [128, 160] on cpu" in proc.stdout
    assert report["train_iteration"]["setup"]["head_norm"] == "BN"
    assert report["inference"]["setup"]["fraction_above_thresh"] > 0.01
    assert os.path.basename(report["environment"]["command"].split()[0]) == "benchmark.py"


def test_training_step_in_bfloat16_and_the_convolution_profile(tmp_path):
    """--train-bfloat16 times both models under CPU bfloat16 autocast too, with both ratios;
    --profile gives each float32 step's convolution share and the floor of the ratio."""
    out = tmp_path / "bench.json"
    proc = run_tool(["tools/benchmark.py", "--quick", "--only", "train", "--train-bfloat16",
                     "--profile", "--output", str(out), "--no-gn-head",
                     "MODEL.RETINANET.NORM", "BN"], cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    sec = json.loads(out.read_text())["train_iteration"]
    assert set(sec["results"]) == {"RetinaFocal", "Detectron2 RetinaNet", "RetinaFocal bf16",
                                   "Detectron2 RetinaNet bf16"}
    assert sec["setup"]["precisions"] == ["float32", "bfloat16"]
    r = sec["results"]
    both = sec["bfloat16"]["both_bf16"]["ratio_ours_over_d2"]
    assert both == pytest.approx(r["RetinaFocal bf16"]["median_s"]
                                 / r["Detectron2 RetinaNet bf16"]["median_s"])
    mixed = sec["bfloat16"]["ours_bf16_vs_d2_float32"]["ratio_ours_over_d2"]
    assert mixed == pytest.approx(r["RetinaFocal bf16"]["median_s"]
                                  / r["Detectron2 RetinaNet"]["median_s"])
    prof = sec["profile"]
    for name in ("RetinaFocal", "Detectron2 RetinaNet"):
        p = prof[name]
        assert 0 < p["conv_s"] < p["self_time_s"] and 0 < p["conv_share"] < 1
        assert "aten::convolution_backward" in p["top_ops"] or "aten::mkldnn_convolution" in (
            p["top_ops"])
    assert prof["conv_floor_ratio"] == pytest.approx(
        prof["RetinaFocal"]["conv_s"] / prof["Detectron2 RetinaNet"]["self_time_s"])
    assert "floor of the ratio" in proc.stdout and "bfloat16 ratio (both_bf16)" in proc.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_step_on_cuda_records_each_models_peak_memory():
    """The GPU checks' train_step section: on CUDA the train section also records the peak
    extra memory of one step of each model and their ratio."""
    from retina_focal.benchmark.models import bench_train

    settings = BenchSettings(config_file=QUICK_CONFIG, classes=6, gn_head=False,
                             image_size=(128, 160), repeats=1, warmup=1)
    sec = bench_train(settings, "cuda")
    mb = {name: sec["results"][name]["peak_extra_mb"]
          for name in ("RetinaFocal", "Detectron2 RetinaNet")}
    assert all(v > 0 for v in mb.values())
    assert sec["memory_ratio_ours_over_d2"] == pytest.approx(
        mb["RetinaFocal"] / mb["Detectron2 RetinaNet"])


def _args(*opts, gn_head=False):
    return BenchSettings(config_file=QUICK_CONFIG, classes=6, gn_head=gn_head, opts=opts)


@pytest.mark.parametrize("norm", ["", "BN"])
def test_detectron2_side_is_detectron2s_own_retinanet_head(norm):
    """Where Detectron2 can build it, the benchmark's Detectron2 model has Detectron2's own
    RetinaNetHead (not a copy of ours), NCHW, with our weights."""
    from detectron2.modeling import RetinaNet

    from retina_focal.modeling.meta_arch import RetinaFocal

    _, ours, theirs = build_models(_args("MODEL.RETINANET.NORM", norm), "cpu")
    assert type(theirs) is RetinaNet and isinstance(ours, RetinaFocal)
    assert type(theirs.head) is RetinaNetHead
    assert theirs.head.cls_score.weight.is_contiguous()
    for (n, a), (m, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert n == m and torch.equal(a, b)


def test_gn_head_falls_back_only_where_detectron2_cannot_build_it():
    from retina_focal.modeling.detectron2_reference import detectron2_head_kind

    cfg, _, theirs = build_models(_args(gn_head=True), "cpu")
    try:
        RetinaNetHead(cfg, [theirs.backbone.output_shape()[f]
                            for f in cfg.MODEL.RETINANET.IN_FEATURES])
        buildable = True
    except ValueError:  # Detectron2 0.6
        buildable = False
    assert (type(theirs.head) is RetinaNetHead) == buildable
    kind = detectron2_head_kind(cfg, theirs)
    assert (kind == "RetinaNetHead") if buildable else ("NORM='GN'" in kind)


def _instances(boxes, scores, classes):
    inst = Instances((100, 100))
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.scores = torch.tensor(scores)
    inst.pred_classes = torch.tensor(classes)
    return inst


def compare_detections(a, b):
    return compare_instances(a, b, **EAGER_TOLERANCES)


def test_same_detections_compares_boxes_and_scores_not_only_classes():
    a = _instances([[0, 0, 10, 10], [5, 5, 20, 30]], [0.9, 0.5], [1, 2])
    assert compare_detections(a, _instances([[0, 0, 10, 10.0005], [5, 5, 20, 30]],
                                            [0.90005, 0.5], [1, 2]))["same"]
    for other in (_instances([[0, 0, 10, 12], [5, 5, 20, 30]], [0.9, 0.5], [1, 2]),
                  _instances([[0, 0, 10, 10], [5, 5, 20, 30]], [0.9, 0.4], [1, 2]),
                  _instances([[0, 0, 10, 10], [5, 5, 20, 30]], [0.9, 0.5], [1, 3]),
                  _instances([[0, 0, 10, 10]], [0.9], [1])):
        details = compare_detections(a, other)
        assert not details["same"], details


def test_synthetic_benchmark_runs_both_sides(tmp_path):
    """tools/benchmark_synthetic.py (docs/performance.md, the data path): a smoke run on the
    tiny config; the figures are times, so only their presence is checked."""
    out = tmp_path / "synthetic.json"
    # a BatchNorm head: the head_norm section times the head's fused BatchNorm
    proc = run_tool(["tools/benchmark_synthetic.py", "--config-file", TINY_CONFIG, "--images",
                     "4", "--steps", "1", "--rounds", "1", "--output", str(out),
                     "MODEL.RETINANET.NORM", "BN"], cwd=REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    report = json.load(open(out))
    assert set(report["mapper"]["ms_per_image"]) == {
        "detectron2_DatasetMapper", "RobustDatasetMapper", "RobustDatasetMapper_cached"}
    assert all(v > 0 for v in report["mapper"]["ms_per_image"].values())
    assert set(report["head_norm"]["s_per_step"]) == {"fused", "detectron2"}
    assert (report["head_norm"]["steps"], report["head_norm"]["rounds"]) == (1, 1)
    assert "benchmark_synthetic.py" in report["environment"]["command"]


def test_export_section_prints_the_whole_graphs_ratio(tmp_path):
    """Issue 30: `--only export` times the whole-detector graph in onnxruntime against
    Detectron2's eager RetinaNet in the same run and prints their ratio (no timing
    assertion), with its detections checked against the eager model's."""
    pytest.importorskip("onnxruntime", reason="the `deploy` extra: pip install -e .[deploy]")
    out = tmp_path / "bench.json"
    proc = run_tool(["tools/benchmark.py", "--quick", "--only", "export", "--output", str(out),
                     "--no-gn-head", "MODEL.RETINANET.NORM", "BN"], cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "ratio ONNX Runtime, whole detector graph / Detectron2:" in proc.stdout
    sec = json.loads(out.read_text())["export"]
    assert set(sec["results"]) == {"ONNX Runtime, whole", "ONNX Runtime", "RetinaFocal",
                                   "Detectron2 RetinaNet"}
    assert sec["ratio_ort_detector_over_d2"] == pytest.approx(
        sec["results"]["ONNX Runtime, whole"]["median_s"]
        / sec["results"]["Detectron2 RetinaNet"]["median_s"])
    assert sec["setup"]["whole_same_detections_as_eager"], sec["setup"]
    # what 0.5 would take, beside the CPU's float32 ceiling measured in the same run
    c, d2_s = sec["compute"], sec["results"]["Detectron2 RetinaNet"]["median_s"]
    assert c["conv_gflop"] > 0 and c["matmul_gflops_float32"] > 0
    assert c["conv_gflops_for_half"] == pytest.approx(c["conv_gflop"] / (0.5 * d2_s))
    assert "a ratio of 0.5 needs" in proc.stdout and "ceiling of this CPU" in proc.stdout


def test_quick_fills_only_the_sizes_not_given():
    """A stranger's find: --quick overrode --image-size, --repeats and --anchors given with it
    (and the report recorded the command line asking for them)."""
    from retina_focal.cli import benchmark

    given = benchmark.parse_args(["--quick", "--image-size", "96", "96", "--repeats", "3",
                                  "--anchors", "123", "--warmup", "0"])
    assert (given.image_size, given.repeats, given.anchors, given.warmup) == ([96, 96], 3, 123, 0)
    quick = benchmark.parse_args(["--quick"])
    assert (tuple(quick.image_size), quick.repeats, quick.anchors) == ((128, 160), 1, 4000)
    full = benchmark.parse_args([])
    assert (tuple(full.image_size), full.repeats, full.anchors, full.warmup) == \
        ((512, 640), 7, 240000, 2)


@pytest.mark.parametrize("argv, message", [
    (["MODEL.RETINANET.NUM_CLASSESX", "3"], "unknown config key MODEL.RETINANET.NUM_CLASSESX"),
    (["MODEL.RETINANET.NUM_CLASSES", "3", "--output", "x.json"],
     "option --output comes after the KEY VALUE config overrides"),
    (["--device", "cuda:7"], "--device"),
])
def test_benchmark_refuses_bad_overrides_and_devices_before_any_section(argv, message, capsys):
    """One error line, exit status 1, no traceback, before anything is measured."""
    from retina_focal import cli

    assert cli.main(["benchmark", "--quick", "--only", "inference"] + argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["--threads", "-3"], ["--image-size", "0", "0"],
                                  ["--warmup", "-1"], ["--repeats", "0"]])
def test_benchmark_refuses_bad_numbers_as_usage_errors(argv, capsys):
    from retina_focal import cli

    assert cli.main(["benchmark", "--quick", "--only", "loss"] + argv) == 2
    assert argv[0] in capsys.readouterr().err


def test_benchmark_synthetic_refuses_before_it_measures(tmp_path, capsys):
    """A stranger's finds: an --output folder failed after the whole run; a GroupNorm head
    timed the same code on both sides; an unregistered dataset was a KeyError traceback."""
    from retina_focal import cli

    base = ["benchmark-synthetic", "--config-file", TINY_CONFIG, "--images", "2", "--steps",
            "1", "--rounds", "1"]
    for argv, message in (
            (["--output", str(tmp_path)], "is a folder"),
            (["--only", "head_norm"], "MODEL.RETINANET.NORM 'GN'"),
            (["--only", "mapper", "DATASETS.TRAIN", "('nope',)"], "nope")):
        assert cli.main(base + argv) == 1, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []
    # an --output folder: the same status from both benchmark commands (1, one error line); a
    # number out of range: argparse's usage error (2), as docs/tools.md says
    assert cli.main(["benchmark", "--quick", "--output", str(tmp_path)]) == 1
    assert "is a folder" in capsys.readouterr().err
    for option in ("--images", "--steps", "--rounds"):
        assert cli.main(base + [option, "0"]) == 2
        assert option in capsys.readouterr().err


def test_the_loss_section_takes_the_configs_alpha_and_gamma(tmp_path, monkeypatch, capsys):
    """A stranger's find: ``--only loss MODEL.RETINANET.FOCAL_LOSS_GAMMA 5.0`` timed the loss
    with gamma 2.0, the override silently ignored. The section takes the config's alpha and
    gamma, with its overrides (the defaults give the published figures' 0.25 and 2.0)."""
    from retina_focal import cli
    from retina_focal.benchmark import focal_loss

    seen = []
    methods = focal_loss.focal_methods

    def recording(logits, labels, num_classes, alpha, gamma, **kwargs):
        seen.append((logits.shape[-1], alpha, gamma))
        return methods(logits, labels, num_classes, alpha, gamma, **kwargs)

    monkeypatch.setattr(focal_loss, "focal_methods", recording)
    base = ["benchmark", "--quick", "--only", "loss", "--anchors", "400", "--classes", "3"]
    for overrides, expected in (
            ([], (3, 0.25, 2.0)),
            (["MODEL.RETINANET.FOCAL_LOSS_GAMMA", "5.0", "MODEL.RETINANET.FOCAL_LOSS_ALPHA",
              "0.5"], (3, 0.5, 5.0))):
        out = tmp_path / "loss.json"
        assert cli.main(base + ["--output", str(out)] + overrides) == 0
        assert seen[-1] == expected
        problem = json.loads(out.read_text())["focal_loss"]["problem"]
        assert (problem["classes"], problem["alpha"], problem["gamma"]) == expected
        assert f"alpha {expected[1]}, gamma {expected[2]}" in capsys.readouterr().out
    # a value the model would refuse: refused before any section, naming the key
    assert cli.main(base + ["MODEL.RETINANET.FOCAL_LOSS_GAMMA", "-1.0"]) == 1
    err = capsys.readouterr().err
    assert "error: MODEL.RETINANET.FOCAL_LOSS_GAMMA=-1.0 is invalid" in err
    assert len(seen) == 2


@pytest.mark.parametrize("section, value", [("train", "0"), ("inference", "0"), ("loss", "3")])
def test_num_classes_among_the_overrides_is_refused_for_classes(section, value, monkeypatch,
                                                                capsys):
    """A stranger's find: ``MODEL.RETINANET.NUM_CLASSES 0`` ended in a RuntimeError (train)
    or IndexError (inference) traceback, and ``3`` was ignored by the loss section (80
    classes). --classes sets the classes of every section; the key among the overrides is
    refused, before any section, saying so."""
    from retina_focal import cli
    from retina_focal.cli import benchmark

    def section_ran(*args, **kwargs):
        raise AssertionError("a section ran")

    for name in ("bench_focal", "bench_train", "bench_inference"):
        monkeypatch.setattr(benchmark, name, section_ran)
    assert cli.main(["benchmark", "--quick", "--only", section, "MODEL.RETINANET.NUM_CLASSES",
                     value]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error: " in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert errors[0].startswith(f"error: MODEL.RETINANET.NUM_CLASSES {value} among the "
                                "overrides: the classes of every section")
    assert ("give --classes 3 instead" if value == "3" else "give --classes N") in errors[0]


_NOT_DETECTRON2 = {"HEAD_NAME": "MyHead", "LOSS_NAME": "SoftmaxFocalLoss",
                   "ASSIGNER_NAME": "ATSSAssigner", "ALLOW_LOW_QUALITY_MATCHES": False,
                   "LOW_QUALITY_MATCH_ORDER": "detectron", "LOW_QUALITY_MIN_IOU": 0.3,
                   "ALPHA_PER_CLASS": [0.3] * 6, "SAMPLER_NAME": "OHEMSampler",
                   "NORMALIZER": "batch"}


def test_only_a_config_detectron2s_retinanet_reproduces_is_benchmarked(tiny_cfg):
    """The defaults of every key the check reads are Detectron2's model (the benchmark's own
    first-loss check holds for them: test_benchmark_quick_mode_writes_all_figures); each key
    changed, and a two-stage meta-architecture, is refused naming the key and its value."""
    from retina_focal.config.loading import ConfigError
    from retina_focal.modeling.detectron2_reference import (
        DETECTRON2_EQUIVALENT,
        check_detectron2_comparable,
    )

    assert set(_NOT_DETECTRON2) == set(DETECTRON2_EQUIVALENT)
    for key, value in DETECTRON2_EQUIVALENT.items():  # the map is the config's defaults
        assert tiny_cfg.MODEL.RETINA_FOCAL[key] == value, key
    check_detectron2_comparable(tiny_cfg, "x")
    for key, value in _NOT_DETECTRON2.items():
        cfg = tiny_cfg.clone()
        cfg.MODEL.RETINA_FOCAL[key] = value
        with pytest.raises(ConfigError, match=f"x, but MODEL.RETINA_FOCAL.{key} is "
                                              f"{repr(value).replace('[', '.')}"):
            check_detectron2_comparable(cfg, "x")
    cfg = tiny_cfg.clone()
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    with pytest.raises(ConfigError, match="META_ARCHITECTURE is 'GeneralizedRCNN'"):
        check_detectron2_comparable(cfg, "x")


def test_synthetic_benchmark_refusals_name_the_overrides(tmp_path, capsys):
    """A stranger's finds: a head norm set by an override was blamed on the config file, and
    an unregistered DATASETS.TRAIN got advice (register in Python) the command line cannot
    follow."""
    from retina_focal import cli

    base = ["benchmark-synthetic", "--config-file", TINY_CONFIG, "--output",
            str(tmp_path / "s.json")]
    assert cli.main(base + ["MODEL.RETINANET.NORM", "GN"]) == 1
    err = capsys.readouterr().err
    assert "but the override sets MODEL.RETINANET.NORM 'GN' (both sides would run the same " \
        "code): leave it out, or --only mapper" in err
    assert cli.main(base + ["DATASETS.TRAIN", "('mine',)"]) == 1
    err = capsys.readouterr().err
    assert ("DATASETS.TRAIN: dataset 'mine' is not registered. This command has no --dataset "
            "NAME=JSON:IMAGE_DIR option to register COCO files: use a built-in dataset") in err
    # how many are registered, and the default preset's first (a stranger read "(64, e.g.
    # synthetic_shapes_sparse_train, ...": what 64 was, and not the default)
    assert re.search(r"\(\d+ are registered, e\.g\. synthetic_shapes_val, synthetic_shapes_train,",
                     err), err
    assert not (tmp_path / "s.json").exists()


def test_a_cuda_device_without_cuda_is_refused_with_advice_for_the_option(monkeypatch, capsys):
    """A stranger's find: ``--device cuda`` was told to do "as the synthetic configs do", which
    set MODEL.DEVICE, not an option."""
    import torch

    from retina_focal import cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["benchmark", "--quick", "--device", "cuda"]) == 1
    err = capsys.readouterr().err
    assert err.strip().endswith("this machine has no CUDA device: set --device cpu"), err
