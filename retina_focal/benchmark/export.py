"""Section 4: inference latency of the exported model run by onnxruntime (the graph to the
head, then the eager post-processing, :mod:`retina_focal.export.runtime`) against Detectron2's
eager RetinaNet and our eager RetinaFocal, on the same image and weights as section 3."""
import os
import tempfile

import torch

from retina_focal.benchmark.models import (
    build_models,
    compare_detections,
    make_batch,
    trained_like_scores,
)
from retina_focal.benchmark.timing import Progress, alternate, summarize

__all__ = ["ORT", "bench_export"]

ORT = "ONNX Runtime"
D2 = "Detectron2 RetinaNet"
OURS = "RetinaFocal"


def bench_export(args, device):
    """Export our model to ONNX, then time it (onnxruntime, ``args.ort_threads`` intra-op
    threads, ``args.ort_opt_level`` graph optimisation) against both eager models."""
    from retina_focal.export.files import export_file
    from retina_focal.export.runtime import ExportedModel, onnx_backend

    cfg, ours, theirs = build_models(args, device)
    trained_like_scores(ours)
    theirs.load_state_dict(ours.state_dict())
    ours.eval()
    theirs.eval()
    image = make_batch(1, args.image_size[0], args.image_size[1], args.classes, device, seed=1)
    image = [{k: v for k, v in image[0].items() if k != "instances"}]
    with tempfile.TemporaryDirectory() as tmp:
        path = export_file(cfg, ours, image[0]["image"].float().cpu(), "onnx", tmp, None)
        backend = onnx_backend(path, threads=args.ort_threads, opt_level=args.ort_opt_level)
        size_mb = os.path.getsize(path) / 2 ** 20
    exported = ExportedModel(ours, backend)
    outs = {}

    def infer(model, name):
        def run():
            with torch.no_grad():
                outs[name] = model(image)[0]["instances"]
        return run

    fns = {ORT: infer(exported, ORT), OURS: infer(ours, OURS), D2: infer(theirs, D2)}
    progress = Progress("export", len(fns) + args.repeats)
    times = alternate(fns, args.repeats, warmup=max(2, args.warmup), device=device,
                      progress=progress)
    results = {name: summarize(t) for name, t in times.items()}
    for name in fns:
        results[name]["detections"] = len(outs[name])
    same, differences = compare_detections(outs[OURS], outs[ORT])
    return {
        "ratio_ort_over_d2": results[ORT]["median_s"] / results[D2]["median_s"],
        "ratio_ort_over_ours": results[ORT]["median_s"] / results[OURS]["median_s"],
        "cpu_ratio_ort_over_d2": results[ORT]["median_cpu_s"] / results[D2]["median_cpu_s"],
        "ratio_ort_median_over_d2_min": results[ORT]["median_s"] / results[D2]["min_s"],
        "setup": {"image_size": list(args.image_size), "classes": args.classes,
                  "device": device, "backbone": cfg.MODEL.BACKBONE.NAME,
                  "onnx_mb": size_mb, "ort_threads": args.ort_threads,
                  "ort_opt_level": args.ort_opt_level,
                  "providers": backend.providers,
                  "same_detections_as_eager": same, "detection_differences": differences},
        "results": results,
    }
