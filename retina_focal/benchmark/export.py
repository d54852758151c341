"""Section 4: inference latency of the exported model run by onnxruntime, as the whole-detector
graph (image in, detections out: :mod:`retina_focal.export.detector_graph`) and as the graph to
the head followed by the eager post-processing (:mod:`retina_focal.export.runtime`), against
Detectron2's eager RetinaNet and our eager RetinaFocal, on the same image and weights as
section 3."""
import os
import tempfile
from typing import Dict

from retina_focal.analysis.compute import conv_flops, matmul_gflops
from retina_focal.benchmark.models import inference_models, inference_run
from retina_focal.benchmark.settings import BenchSettings
from retina_focal.benchmark.timing import Progress, alternate, summarize

__all__ = ["ORT", "ORT_DETECTOR", "bench_export"]

ORT = "ONNX Runtime"  # the head graph, then the eager post-processing
ORT_DETECTOR = "ONNX Runtime, whole"  # the whole-detector graph
D2 = "Detectron2 RetinaNet"
OURS = "RetinaFocal"


def bench_export(settings: BenchSettings, device):
    """Export our model to ONNX twice (whole detector; head only), then time both
    (onnxruntime, ``settings.ort_threads`` intra-op threads that do not spin between runs: they
    would take cores from the eager model timed next; ``settings.ort_opt_level`` graph
    optimisation) against both eager models, in alternating rounds."""
    from retina_focal.export.files import export_file
    from retina_focal.export.parity import compare_instances
    from retina_focal.export.runtime import ExportedModel, onnx_backend

    cfg, ours, theirs, image = inference_models(settings, device)
    backends = {}
    with tempfile.TemporaryDirectory() as tmp:
        size_mb = {}
        for name, graph in ((ORT, "head"), (ORT_DETECTOR, "detector")):
            folder = os.path.join(tmp, graph)
            os.makedirs(folder)
            path = export_file(cfg, ours, image[0]["image"].float().cpu(), "onnx", folder,
                               None, graph=graph)
            backends[name] = onnx_backend(path, threads=settings.ort_threads, spinning=False,
                                          opt_level=settings.ort_opt_level)
            size_mb[graph] = os.path.getsize(path) / 2 ** 20
    exported = {name: ExportedModel(ours, backend) for name, backend in backends.items()}
    outs: Dict = {}
    fns = {ORT_DETECTOR: inference_run(exported[ORT_DETECTOR], image, outs, ORT_DETECTOR),
           ORT: inference_run(exported[ORT], image, outs, ORT),
           OURS: inference_run(ours, image, outs, OURS),
           D2: inference_run(theirs, image, outs, D2)}
    progress = Progress("export", len(fns) + settings.repeats)
    times = alternate(fns, settings.repeats, warmup=max(2, settings.warmup), device=device,
                      progress=progress)
    results = {name: summarize(t) for name, t in times.items()}
    for name in fns:
        results[name]["detections"] = len(outs[name])
    # the export's own parity check (ties paired; scores within 1e-5, boxes within 1e-3 px +
    # 1e-5 x |coordinate|)
    differences = compare_instances(outs[OURS], outs[ORT])
    differences_whole = compare_instances(outs[OURS], outs[ORT_DETECTOR])
    same, same_whole = differences["same"], differences_whole["same"]
    whole, d2 = results[ORT_DETECTOR], results[D2]
    # what a ratio of 0.5 would take: the graph's convolutions at twice Detectron2's speed,
    # against the float32 ceiling of this CPU measured now (exact export: float32 only)
    flops = conv_flops(ours, inference_run(ours, image, outs, "flops"))
    ceiling = matmul_gflops() if device == "cpu" else None
    compute = {"conv_gflop": flops / 1e9,
               "whole_conv_gflops": flops / 1e9 / whole["median_s"],
               "d2_conv_gflops": flops / 1e9 / d2["median_s"],
               "conv_gflops_for_half": flops / 1e9 / (0.5 * d2["median_s"]),
               "matmul_gflops_float32": ceiling}
    return {
        "ratio_ort_detector_over_d2": whole["median_s"] / d2["median_s"],
        "cpu_ratio_ort_detector_over_d2": whole["median_cpu_s"] / d2["median_cpu_s"],
        "ratio_ort_over_d2": results[ORT]["median_s"] / results[D2]["median_s"],
        "ratio_ort_over_ours": results[ORT]["median_s"] / results[OURS]["median_s"],
        "cpu_ratio_ort_over_d2": results[ORT]["median_cpu_s"] / results[D2]["median_cpu_s"],
        "ratio_ort_median_over_d2_min": results[ORT]["median_s"] / results[D2]["min_s"],
        "setup": {"image_size": list(settings.image_size), "classes": settings.classes,
                  "device": device, "backbone": cfg.MODEL.BACKBONE.NAME,
                  "onnx_mb": size_mb, "ort_threads": settings.ort_threads, "ort_spinning": False,
                  "ort_opt_level": settings.ort_opt_level,
                  "providers": backends[ORT].providers,
                  "same_detections_as_eager": same, "detection_differences": differences,
                  "whole_same_detections_as_eager": same_whole,
                  "whole_detection_differences": differences_whole},
        "compute": compute,
        "results": results,
    }
