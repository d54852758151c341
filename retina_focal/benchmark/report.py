"""The benchmark's report: the printed tables and the JSON file (the environment it ran in:
:func:`retina_focal.utils.environment.measurement_environment`)."""
import os
from typing import Dict

from retina_focal.benchmark.timing import log
from retina_focal.utils.file_io import atomic_write_json

__all__ = ["print_report", "save_json", "write_json"]


def print_report(report) -> None:
    log("")
    if "focal_loss" in report:
        fl = report["focal_loss"]
        p = fl["problem"]
        log(f"Focal loss forward+backward: {p['images']} images, {p['anchors']} anchors, "
            f"{p['classes']} classes ({p['positive']} positive, {p['ignored']} ignored), "
            f"alpha {p['alpha']}, gamma {p['gamma']}, {p['dtype']} on {p['device']}")
        log(f"  {'method':<26} {'median ms':>10} {'x ours':>7} {'CPU ms':>9} {'x ours':>7} "
            f"{'peak extra MB':>14} {'x ours':>7}")
        for name, r in fl["results"].items():
            mem = r.get("peak_extra_mb")
            mem_s = f"{mem:14.1f} {r['memory_vs_ours']:7.2f}" if mem is not None else ""
            log(f"  {name:<26} {r['median_s'] * 1e3:10.1f} {r['time_vs_ours']:7.2f} "
                f"{r['median_cpu_s'] * 1e3:9.1f} {r['cpu_time_vs_ours']:7.2f} {mem_s}")
    for key, title in (("train_iteration", "Training iteration (fwd+bwd+SGD)"),
                       ("inference", "Inference, one image")):
        if key not in report:
            continue
        sec = report[key]
        s = sec["setup"]
        log(f"{title}: {' '.join([s['config'], *s['overrides']])} {s['image_size']} on "
            f"{s['device']}")
        _log_times(sec["results"], 26)
        log(_ratio("ratio RetinaFocal / Detectron2", sec["ratio_ours_over_d2"],
                   sec["cpu_ratio_ours_over_d2"])
            + f"; our median over their fastest round {sec['ratio_ours_median_over_d2_min']:.3f}")
        for what, r in sec.get("bfloat16", {}).items():
            log(_ratio(f"bfloat16 ratio ({what})", r["ratio_ours_over_d2"],
                       r["cpu_ratio_ours_over_d2"]))
        if "profile" in sec:
            prof = sec["profile"]
            for name in ("RetinaFocal", "Detectron2 RetinaNet"):
                log(f"  profile {name}: convolutions {prof[name]['conv_s'] * 1e3:.1f} ms of "
                    f"{prof[name]['self_time_s'] * 1e3:.1f} ms "
                    f"({100 * prof[name]['conv_share']:.0f}%)")
            log(f"  floor of the ratio with these convolutions: "
                f"{prof['conv_floor_ratio']:.3f}")
    if "export" in report:
        sec = report["export"]
        s = sec["setup"]
        log(f"Inference, one image, exported (ONNX, onnxruntime {s['providers']}, "
            f"{s['ort_threads'] or 'default'} threads, optimisation {s['ort_opt_level']}): "
            f"{s['image_size']} on {s['device']}")
        _log_times(sec["results"], 22)
        log(_ratio("ratio ONNX Runtime, whole detector graph / Detectron2",
                   sec["ratio_ort_detector_over_d2"], sec["cpu_ratio_ort_detector_over_d2"])
            + f" (detections equal to eager: {s['whole_same_detections_as_eager']})")
        log(_ratio("ratio ONNX Runtime, head graph + eager post-processing / Detectron2",
                   sec["ratio_ort_over_d2"], sec["cpu_ratio_ort_over_d2"])
            + f"; our median over their fastest round {sec['ratio_ort_median_over_d2_min']:.3f}"
            f"; ONNX Runtime / RetinaFocal eager {sec['ratio_ort_over_ours']:.3f}")
        c = sec.get("compute")
        if c:
            log(f"  convolutions: {c['conv_gflop']:.1f} GFLOP per image; run at "
                f"{c['whole_conv_gflops']:.0f} GFLOP/s by the whole graph, "
                f"{c['d2_conv_gflops']:.0f} by Detectron2; a ratio of 0.5 needs "
                f"{c['conv_gflops_for_half']:.0f} GFLOP/s of convolution alone")
            if c["matmul_gflops_float32"] is not None:
                log(f"  float32 matrix-product ceiling of this CPU, measured now: "
                    f"{c['matmul_gflops_float32']:.0f} GFLOP/s")


def _log_times(results: Dict, width: int) -> None:
    """One line per method: median wall time (and the fastest round), median CPU time."""
    for name, r in results.items():
        log(f"  {name:<{width}} {r['median_s'] * 1e3:10.1f} ms (min {r['min_s'] * 1e3:.1f}), "
            f"CPU {r['median_cpu_s'] * 1e3:.1f} ms")


def _ratio(label: str, wall: float, cpu: float) -> str:
    """``  label: W wall, C CPU time`` (the start of every ratio line)."""
    return f"  {label}: {wall:.3f} wall, {cpu:.3f} CPU time"


def save_json(report: Dict, path: str) -> None:
    """``report`` as indented JSON at ``path`` (its folder made), atomically: a run stopped
    while writing keeps the previous complete file; a value JSON has no type for is written
    as its text."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_json(path, report, indent=2, default=str)


def write_json(report: Dict, path: str) -> None:
    """:func:`save_json`, then say so."""
    save_json(report, path)
    log(f"wrote {path}")
