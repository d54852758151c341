"""tools/benchmark.py runs end to end in its quick mode and writes every figure (no timing
assertions: the tool measures, tests do not)."""
import json
import os

from conftest import REPO, run_tool


def test_benchmark_quick_mode_writes_all_figures(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_tool(["tools/benchmark.py", "--quick", "--output", str(out)], cwd=REPO)
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
    assert report["inference"]["setup"]["fraction_above_thresh"] > 0.01
    assert os.path.basename(report["environment"]["command"].split()[0]) == "benchmark.py"
