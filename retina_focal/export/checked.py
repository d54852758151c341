"""Export a model and check the file against the eager model: the work of ``retina-focal
export`` (:mod:`retina_focal.cli.export`), with plain arguments, for your own code too.

:func:`check_graph_options` and :func:`check_exportable` refuse what cannot be exported before
anything is written; :func:`export_checked` clears an earlier export from the folder
(:func:`clear_earlier_export`), writes the class map and the model file and compares the file's
detections with the eager model's (:func:`export_and_check`, or TorchScript's
:func:`export_torchscript_checked`); 0 when they are equal, else 1.
"""
import json
import logging
import os
import shutil
import sys
from typing import Optional, Tuple

import torch
from torch import nn

from retina_focal.export.detector_graph import check_whole_detector
from retina_focal.export.files import CLASS_MAP_FILE, FORMATS, export_file
from retina_focal.export.graph import check_dense_detector
from retina_focal.export.onnx import GRAPHS
from retina_focal.export.torchscript import export_torchscript
from retina_focal.utils.environment import require_packages
from retina_focal.utils.errors import UserError

__all__ = ["AP_TOLERANCE", "LOGGER_NAME", "ExportOptionError", "check_exportable",
           "check_graph_options", "check_image", "clear_earlier_export", "export_and_check",
           "export_checked", "export_torchscript_checked"]

AP_TOLERANCE = 0.1  # COCO AP points: exported against eager on --verify-dataset

# the export command's logger (its name predates the other formats; tests and users filter on it)
LOGGER_NAME = "retina_focal.export.torchscript"
logger = logging.getLogger(LOGGER_NAME)


class ExportOptionError(UserError, ValueError):
    """An export option that does not apply to the format or graph asked for; the message
    names the option."""


def check_graph_options(fmt: str, graph: Optional[str],
                        input_dtype: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """--graph and --input-dtype are ONNX options, --input-dtype a detector graph's: refuse them
    elsewhere (:class:`ExportOptionError`, one error line), and fill in their defaults.

    Args:
        fmt: the format (a key of :data:`~retina_focal.export.files.FORMATS`).
        graph: ``--graph`` (:data:`~retina_focal.export.onnx.GRAPHS`), None if not given.
        input_dtype: ``--input-dtype``, None if not given.

    Returns:
        ``(graph, input_dtype)``: for ONNX with their defaults filled in (the detector graph,
        float32), for the other formats as given (None).
    """
    if fmt != "onnx":
        given = [o for o, v in (("--graph", graph), ("--input-dtype", input_dtype))
                 if v is not None]
        if given:
            verb = "apply" if len(given) > 1 else "applies"
            raise ExportOptionError(f"{' and '.join(given)} only {verb} to --format onnx (this "
                                    f"export is --format {fmt})")
        return graph, input_dtype
    graph = graph or GRAPHS[0]
    if graph == "head" and input_dtype not in (None, "float32"):
        raise ExportOptionError("--input-dtype uint8 needs --graph detector (the head graph "
                                "takes float32 images)")
    return graph, input_dtype or "float32"


def check_exportable(cfg, model: nn.Module, fmt: str, graph: Optional[str]) -> None:
    """Raise a :class:`~retina_focal.utils.errors.UserError` naming why ``model`` (built from
    ``cfg``) cannot be exported as ``fmt`` (with ONNX's ``graph``), before any file is written:
    the whole-detector graph needs a RetinaNet, the head graphs a dense detector, and an
    exported program images the config's test resize makes large enough."""
    if fmt == "onnx":  # the file is written with onnx and checked with onnxruntime
        require_packages("--format onnx")
    if fmt == "onnx" and graph == "detector":
        check_whole_detector(model)
    elif fmt != "torchscript":  # the graph ends at a dense head
        check_dense_detector(model, f"--format {fmt}")
    if fmt == "exported-program":  # refused before a file it cannot run is written
        from detectron2.modeling.meta_arch.dense_detector import DenseDetector

        from retina_focal.export.exported_program import min_side, test_size_too_small

        detector: DenseDetector = model  # type: ignore[assignment]  # check_dense_detector passed
        too_small = test_size_too_small(cfg, min_side(detector),
                                        detector.backbone.size_divisibility)
        if too_small:
            raise ExportOptionError(f"--format exported-program: {too_small}")


def warn_if_nothing_compared(detections: int, verify_dataset: Optional[str]) -> None:
    """Say so when the sample image gave no detection: "equal to eager" then compared nothing
    (a randomly initialised model, whose scores sit at the prior, below the test threshold)."""
    if detections == 0:
        logger.warning("The sample image gave no detection, so the check above compared no "
                       "box or score" + ("" if verify_dataset else
                                         ": give --sample-image with objects on it, or "
                                         "--verify-dataset NAME (onnx, exported-program)"))


def check_image(model: nn.Module, fmt: str, image: torch.Tensor) -> torch.Tensor:
    """The sample image, grown to the exported program's smallest input when needed."""
    if fmt != "exported-program":
        return image
    from retina_focal.export.exported_program import min_side

    low = min_side(model)  # type: ignore[arg-type]  # a dense detector: check_exportable
    if min(image.shape[-2:]) >= low:
        return image
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (3, max(low, image.shape[1]), max(low, image.shape[2])),
                         generator=g).float()


def export_and_check(cfg, model: nn.Module, image: torch.Tensor, class_map, fmt: str,
                     output: str, graph: str = "detector", input_dtype: str = "float32",
                     verify_dataset: Optional[str] = None,
                     max_images: Optional[int] = None) -> int:
    """ONNX / exported program: export, load back with the runtime, compare on the sample
    image (and ``verify_dataset``, ``--verify-dataset``); 0 when equal, else 1.

    ``fmt``, ``graph``, ``input_dtype``: as :func:`~retina_focal.export.files.export_file`;
    the file goes into the folder ``output``, the dataset check's report into ``output/verify``
    (at most ``max_images`` images of ``verify_dataset``, None: all)."""
    from retina_focal.export.parity import (
        ATOL,
        BOX_ATOL,
        BOX_RTOL,
        compare_instances,
        dataset_parity_verdict,
        parity_on_dataset,
        same_detections,
    )
    from retina_focal.export.runtime import load_exported

    path = export_file(cfg, model, image, fmt, output, class_map,
                       graph=graph, input_dtype=input_dtype)
    exported = load_exported(cfg, path).model
    image = check_image(model, fmt, image)
    with torch.no_grad():
        inputs = [{"image": image}]
        diff = compare_instances(model(inputs)[0]["instances"],
                                 exported(inputs)[0]["instances"])
    same = same_detections(diff)
    logger.info(f"Wrote {path}; {diff['detections'][1]} detections on the sample image; equal "
                f"to eager model: {same} (max box difference {diff['max_box_difference']}, max "
                f"score difference {diff['max_score_difference']})")
    warn_if_nothing_compared(diff["detections"][1], verify_dataset)
    if not same:
        logger.error("The exported model's detections differ from the eager model's")
        return 1
    if not verify_dataset:
        return 0
    report = parity_on_dataset(cfg, model, exported, verify_dataset, class_map,
                               os.path.join(output, "verify"), max_images=max_images)
    print(f"\nPer-image maximum differences, exported ({fmt}) against eager, "
          f"{report['num_images']} images of {verify_dataset}:")
    print(f"  {'image_id':>8} {'detections':>11} {'classes':>8} {'max |box|':>11} "
          f"{'max |score|':>11}")
    for r in report["images"]:
        box, score = r["max_box_difference"], r["max_score_difference"]
        print(f"  {r['image_id']:>8} {r['detections'][1]:>11} "
              f"{'same' if r['same_classes'] else 'DIFFER':>8} "
              f"{'-' if box is None else f'{box:.2e}':>11} "
              f"{'-' if score is None else f'{score:.2e}':>11}")
    ap = report["ap"]
    print(f"Over all images: max box difference {report['max_box_difference']}, max score "
          f"difference {report['max_score_difference']}; every image the same (classes; "
          f"scores within {ATOL}; boxes within {BOX_ATOL} + {BOX_RTOL} x |coordinate|): "
          f"{report['all_same']}")
    print(f"COCO AP: eager {ap['eager']:.3f}, exported {ap['exported']:.3f}")
    same, reason = dataset_parity_verdict(report, AP_TOLERANCE)
    with open(os.path.join(output, "verify", "parity.json"), "w") as f:
        json.dump(dict(report, verdict={"same": same, "reason": reason}), f, indent=1)
    if not same:
        print(f"error: the exported model differs from the eager model on "
              f"{verify_dataset}: {reason}", file=sys.stderr)
        return 1
    print(f"Exported equals eager on {verify_dataset}: {reason}")
    return 0


def export_torchscript_checked(model: nn.Module, image: torch.Tensor, output: str,
                               class_map_text: str) -> int:
    """TorchScript: trace ``model`` on ``image`` into ``output/model.ts`` (``class_map_text``
    inside it, as ``class_map.json``), load it back and compare on ``image``; 0 when equal,
    else 1."""
    check = export_torchscript(model, image, os.path.join(output, FORMATS["torchscript"]),
                               extra_files={CLASS_MAP_FILE: class_map_text})
    logger.info(f"Wrote {check['path']}; {check['num_detections']} detections on the sample "
                f"image; equal to eager model: {check['same']}")
    warn_if_nothing_compared(check["num_detections"], None)
    if not check["same"]:
        logger.error("The exported model's detections differ from the eager model's (largest "
                     f"box difference {check['max_box_difference']} px, score difference "
                     f"{check['max_score_difference']}; None: the counts differ)")
        return 1
    return 0


def clear_earlier_export(output: str) -> None:
    """Remove an earlier export's files from ``output`` (every format's model file, the class
    map, the ``verify/`` report): left beside a new export they would describe another
    model."""
    earlier = [name for name in list(FORMATS.values()) + [CLASS_MAP_FILE, "verify"]
               if os.path.lexists(os.path.join(output, name))]
    for name in earlier:
        path = os.path.join(output, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    if earlier:
        logger.info(f"{output}: removed the earlier export's {', '.join(earlier)}")


def export_checked(cfg, model: nn.Module, image: torch.Tensor, class_map, fmt: str, output: str,
                   graph: Optional[str] = None, input_dtype: Optional[str] = None,
                   verify_dataset: Optional[str] = None,
                   max_images: Optional[int] = None) -> int:
    """Export ``model`` (eval mode, built from ``cfg``) as ``fmt`` into the existing folder
    ``output``, traced on ``image`` (``(3, H, W)`` float, the config's channel order), and check
    it against the eager model; 0 when the detections are equal, else 1.

    An earlier export in ``output`` is removed first (:func:`clear_earlier_export`);
    ``class_map`` (the checkpoint's, or None) is written to ``output/class_map.json`` and into
    the file. ``graph`` and ``input_dtype`` as :func:`check_graph_options` returns them;
    ``verify_dataset`` and ``max_images``: ONNX and exported program only
    (:func:`export_and_check`)."""
    class_map_text = json.dumps(class_map)
    clear_earlier_export(output)
    with open(os.path.join(output, CLASS_MAP_FILE), "w") as f:
        f.write(class_map_text + "\n")
    if fmt != "torchscript":
        return export_and_check(cfg, model, image, class_map, fmt, output,
                                graph=graph or GRAPHS[0], input_dtype=input_dtype or "float32",
                                verify_dataset=verify_dataset, max_images=max_images)
    return export_torchscript_checked(model, image, output, class_map_text)
