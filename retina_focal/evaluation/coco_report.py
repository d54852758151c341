"""COCO box evaluation with a report a person can read: Detectron2's ``COCOEvaluator`` plus a
per-category AP table (sorted), precision-recall curves (PNG) per IoU threshold and per object
size, and one JSON file holding every number.

Two entry points share the report code:

* :class:`COCOReportEvaluator`: a drop-in ``COCOEvaluator`` (used by ``retina-focal train`` and
  ``eval`` and the LazyConfigs). In multi-process evaluation Detectron2 gathers the
  predictions on the main process; only that process writes the report.
* :func:`retina_focal.evaluation.results_file.evaluate_results_file`: a COCO results file
  against a ground-truth JSON, with pycocotools alone (no model).
"""
import contextlib
import copy
import io
import json
import logging
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Instances
from detectron2.utils import comm
from tabulate import tabulate

from retina_focal.data.class_map import (
    ClassMap,
    class_map_from_categories,
    class_map_from_metadata,
    match_class_maps,
)
from retina_focal.utils.compat import coco_evaluator_kwargs
from retina_focal.utils.plotting import pyplot

__all__ = [
    "COCOReportEvaluator",
    "coco_eval_report",
    "run_cocoeval",
    "set_lazy_evaluator_class_map",
    "write_report",
    "REPORT_FILE",
]

logger = logging.getLogger(__name__)

REPORT_FILE = "coco_report.json"
# COCOeval.stats, in order (bbox): AP at IoU .50:.95 / .50 / .75, AP per size, AR at 1/10/100
# detections, AR per size.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
# The IoU settings the PR curves are drawn for: a single threshold, or the mean over all of them.
IOU_SETTINGS = (("iou50", 0.5), ("iou75", 0.75), ("iou50-95", None))


class COCOReportEvaluator(COCOEvaluator):
    """:class:`COCOEvaluator` (box AP, pure pycocotools where the compiled evaluator is absent)
    that also writes :func:`write_report`'s files into ``output_dir``.

    Its ``evaluate()`` returns exactly what ``COCOEvaluator`` returns; the report is an extra.
    """

    def __init__(self, dataset_name: str, tasks=("bbox",), distributed: bool = True,
                 output_dir: Optional[str] = None, *, class_map: Optional[ClassMap] = None,
                 model_desc: str = "the model", **kwargs):
        """
        Args:
            dataset_name, tasks, distributed, output_dir, kwargs: as ``COCOEvaluator``.
            class_map: the model's classes (:mod:`retina_focal.data.class_map`: its
                checkpoint's ``class_map``, or its training set's), matched by name with the
                dataset's categories when the evaluator is built: the same classes under
                other ids are renumbered (results carry the dataset's own ids, AP is that of
                the right classes); other names are a ``ValueError`` showing both lists.
                ``None``: the model's outputs are taken to be the dataset's classes in order.
            model_desc: how the model is named in those messages.
        """
        from retina_focal.data import ensure_datasets

        ensure_datasets([dataset_name])  # COCOEvaluator reads the JSON when it is built
        for key, value in coco_evaluator_kwargs().items():
            kwargs.setdefault(key, value)
        super().__init__(dataset_name, tasks=tasks, distributed=distributed,
                         output_dir=output_dir, **kwargs)
        self._dataset_name = dataset_name
        self.report: Optional[Dict] = None
        # model class k -> the dataset's contiguous class self._class_perm[k]; None: identity
        self._class_perm: Optional[torch.Tensor] = None
        if class_map is not None:
            perm = match_class_maps(class_map, self._dataset_class_map(), model_desc=model_desc,
                                    data_desc=f"dataset '{dataset_name}'")
            if perm is not None:
                self._class_perm = torch.as_tensor(perm, dtype=torch.long)

    def _dataset_class_map(self) -> ClassMap:
        """The dataset's classes in Detectron2's contiguous order: from its metadata when it
        maps ids (what ``COCOEvaluator`` writes results with), else its JSON's categories."""
        meta = self._metadata
        if meta.get("thing_classes") is not None and \
                meta.get("thing_dataset_id_to_contiguous_id"):
            cmap = class_map_from_metadata(meta.thing_classes,
                                           meta.thing_dataset_id_to_contiguous_id)
            assert cmap is not None  # None only when thing_classes is None, checked above
            return cmap
        return class_map_from_categories(self._coco_api.dataset["categories"])

    def process(self, inputs, outputs):
        """``COCOEvaluator.process`` of the outputs with their classes renumbered into the
        dataset's (when the class maps differ in order; the outputs are not modified)."""
        if self._class_perm is not None:
            outputs = [self._renumbered(o) for o in outputs]
        super().process(inputs, outputs)

    def _renumbered(self, output: Dict) -> Dict:
        if "instances" not in output:
            return output
        instances = output["instances"]
        fields = dict(instances.get_fields())
        classes = fields["pred_classes"]
        assert self._class_perm is not None  # process() renumbers only with a permutation
        fields["pred_classes"] = self._class_perm.to(classes.device)[classes]
        return dict(output, instances=Instances(instances.image_size, **fields))

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names=class_names)
        # Detectron2 only reaches this on the process that gathered the predictions; the check
        # keeps the report single-writer should that ever change.
        if iou_type != "bbox" or not comm.is_main_process():
            return results
        if coco_eval is None:  # no detection at all: report it (every AP 0), not nothing
            coco_eval, _ = run_cocoeval(self._coco_api, [])
        self.report = coco_eval_report(coco_eval, class_names=class_names,
                                       dataset=self._dataset_name)
        table = self.report["tables"]["per_category"]
        self._logger.info("Per-category bbox AP (sorted):\n" + table)
        if self._output_dir:
            files = write_report(self.report, self._output_dir)
            self._logger.info(f"COCO report written: {', '.join(sorted(files.values()))}")
        return results


def _masked_mean(x: np.ndarray, axis) -> np.ndarray:
    """Mean over ``axis`` ignoring COCOeval's -1 ("no ground truth") entries; NaN where none."""
    valid = x > -1
    count = valid.sum(axis=axis)
    total = np.where(valid, x, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _nan_to_none(values):
    return [None if not np.isfinite(v) else round(float(v), 6) for v in values]


def _scalar(v) -> Optional[float]:
    return None if v is None or not np.isfinite(v) else float(v)


def coco_eval_report(coco_eval, class_names: Optional[Sequence[str]] = None,
                     dataset: str = "") -> Dict:
    """Everything a box ``COCOeval`` (after ``evaluate/accumulate/summarize``) knows, as a
    JSON-ready dict.

    Args:
        coco_eval: a pycocotools ``COCOeval`` with ``eval["precision"]`` of shape
            (T IoUs, R recall points, K classes, A size ranges, M max-detection settings).
        class_names: K names in the order of ``coco_eval.params.catIds``; by default the
            ground truth's category names.

    Returns:
        dict with ``metrics`` (the 12 COCO numbers, in %), ``per_category`` (list sorted by AP,
        descending; NaN AP, i.e. no ground truth, last), ``pr_curves`` (recall points and,
        per IoU setting and size range, the class-mean precision and each class's precision),
        ``counts`` and ``tables`` (the standard and per-category tables as text).
    """
    params = coco_eval.params
    precision = np.asarray(coco_eval.eval["precision"], dtype=np.float64)  # (T, R, K, A, M)
    cat_ids = list(params.catIds)
    if class_names is None or len(class_names) != len(cat_ids):
        class_names = [coco_eval.cocoGt.cats[c]["name"] for c in cat_ids]
    areas = list(params.areaRngLbl)
    m_last = len(params.maxDets) - 1  # the 100-detections setting, as COCO's AP

    stats = [float(s) for s in coco_eval.stats]
    metrics = {name: (s * 100 if s >= 0 else None) for name, s in zip(STAT_NAMES, stats)}

    def iou_index(thr):
        idx = np.flatnonzero(np.isclose(params.iouThrs, thr))
        if not len(idx):
            raise ValueError(f"IoU threshold {thr} is not among COCOeval's {params.iouThrs}")
        return int(idx[0])

    def slice_iou(p, thr):  # (T, ...) -> (...) for one threshold, or mean over all of them
        return p[iou_index(thr)] if thr is not None else _masked_mean(p, axis=0)

    num_gt = {c: 0 for c in cat_ids}
    for ann in coco_eval.cocoGt.dataset.get("annotations", []):
        if ann["category_id"] in num_gt and not ann.get("iscrowd", 0):
            num_gt[ann["category_id"]] += 1

    per_category = []
    for k, (cid, name) in enumerate(zip(cat_ids, class_names)):
        p = precision[:, :, k, :, m_last]  # (T, R, A)
        row: Dict[str, Any] = {"id": int(cid), "name": name, "num_gt": num_gt[cid]}
        for label, thr in (("AP", None), ("AP50", 0.5), ("AP75", 0.75)):
            sel = p[:, :, 0] if thr is None else p[iou_index(thr), :, 0]
            valid = sel[sel > -1]
            row[label] = float(valid.mean() * 100) if valid.size else None
        for a, suffix in zip(range(1, len(areas)), ("s", "m", "l")):
            valid = p[:, :, a][p[:, :, a] > -1]
            row["AP" + suffix] = float(valid.mean() * 100) if valid.size else None
        per_category.append(row)
    per_category.sort(key=lambda r: (r["AP"] is None, -(r["AP"] or 0.0), r["name"]))

    pr_curves: Dict = {"recall": [float(r) for r in params.recThrs]}
    for key, thr in IOU_SETTINGS:
        p = slice_iou(precision[..., m_last], thr)  # (R, K, A)
        pr_curves[key] = {}
        for a, area in enumerate(areas):
            pa = p[:, :, a]  # (R, K)
            pr_curves[key][area] = {
                "mean": _nan_to_none(_masked_mean(pa, axis=1)),
                "per_category": {
                    name: _nan_to_none(np.where(pa[:, k] > -1, pa[:, k], np.nan))
                    for k, name in enumerate(class_names)
                },
            }

    counts = {
        "images": len(params.imgIds),
        "categories": len(cat_ids),
        "ground_truth": int(sum(num_gt.values())),
        "detections": len(coco_eval.cocoDt.getAnnIds()),
    }
    return {
        "dataset": dataset,
        "metrics": metrics,
        "per_category": per_category,
        "pr_curves": pr_curves,
        "counts": counts,
        "params": {"iou_thresholds": [float(t) for t in params.iouThrs],
                   "area_ranges": dict(zip(areas, [list(map(float, r)) for r in params.areaRng])),
                   "max_dets": [int(m) for m in params.maxDets]},
        "tables": {"metrics": format_metrics_table(metrics),
                   "per_category": format_per_category_table(per_category)},
    }


def _fmt(v):
    return "nan" if v is None else f"{v:.3f}"


def format_metrics_table(metrics: Dict[str, Optional[float]]) -> str:
    """The 12 COCO numbers as a two-row pipe table (AP row, AR row)."""
    ap = [k for k in STAT_NAMES if k.startswith("AP")]
    ar = [k for k in STAT_NAMES if k.startswith("AR")]
    tables = [
        tabulate([[_fmt(metrics[k]) for k in keys]], headers=keys, tablefmt="pipe",
                 stralign="right", disable_numparse=True)
        for keys in (ap, ar)
    ]
    return "\n".join(tables)


def format_per_category_table(per_category: List[Dict]) -> str:
    headers = ["category", "AP", "AP50", "AP75", "APs", "APm", "APl", "#gt"]
    rows = [[r["name"]] + [_fmt(r[k]) for k in headers[1:-1]] + [r["num_gt"]]
            for r in per_category]
    return tabulate(rows, headers=headers, tablefmt="pipe", stralign="right",
                    disable_numparse=True)


def write_report(report: Dict, output_dir: str) -> Dict[str, str]:
    """Write ``coco_report.json`` and the precision-recall PNGs into ``output_dir``.

    PNGs: ``pr_<iou>.png`` for iou in iou50, iou75, iou50-95 (left: each class and their mean,
    all sizes; right: the class mean per size range) and ``pr_area_<size>.png`` for each size
    range (the class mean at each IoU setting).

    Returns:
        {name: path} of the files written.
    """
    plt = pyplot()
    os.makedirs(output_dir, exist_ok=True)
    files = {}
    curves = report["pr_curves"]
    recall = np.asarray(curves["recall"])
    areas = list(report["params"]["area_ranges"])

    def arr(values):
        return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)

    def ap_of(values):
        a = arr(values)
        return np.nan if np.isnan(a).all() else float(np.nanmean(a) * 100)

    titles = {"iou50": "IoU=0.50", "iou75": "IoU=0.75", "iou50-95": "IoU=0.50:0.95"}
    for key, _ in IOU_SETTINGS:
        fig, (ax_cls, ax_area) = plt.subplots(1, 2, figsize=(12, 5))
        by_area = curves[key]
        for name, values in by_area["all"]["per_category"].items():
            if not np.isnan(arr(values)).all():
                ax_cls.plot(recall, arr(values), lw=1, label=f"{name} ({ap_of(values):.1f})")
        ax_cls.plot(recall, arr(by_area["all"]["mean"]), "k", lw=2.5,
                    label=f"mean ({ap_of(by_area['all']['mean']):.1f})")
        ax_cls.set_title(f"{titles[key]}, all sizes, per class (AP)")
        for area in areas:
            values = by_area[area]["mean"]
            if not np.isnan(arr(values)).all():
                ax_area.plot(recall, arr(values), lw=2, label=f"{area} ({ap_of(values):.1f})")
        ax_area.set_title(f"{titles[key]}, class mean per object size (AP)")
        for ax in (ax_cls, ax_area):
            _pr_axes(ax)
        fig.suptitle(f"{report.get('dataset') or 'COCO'}: precision-recall, {titles[key]}")
        files[f"pr_{key}"] = _save(fig, os.path.join(output_dir, f"pr_{key}.png"))
        plt.close(fig)

    for area in areas:
        fig, ax = plt.subplots(figsize=(6, 5))
        for key, _ in IOU_SETTINGS:
            values = curves[key][area]["mean"]
            if not np.isnan(arr(values)).all():
                ax.plot(recall, arr(values), lw=2, label=f"{titles[key]} ({ap_of(values):.1f})")
        _pr_axes(ax)
        ax.set_title(f"{report.get('dataset') or 'COCO'}: {area} objects, class mean (AP)")
        files[f"pr_area_{area}"] = _save(fig, os.path.join(output_dir, f"pr_area_{area}.png"))
        plt.close(fig)

    report = dict(report, files={k: os.path.basename(v) for k, v in files.items()})
    path = os.path.join(output_dir, REPORT_FILE)
    with open(path, "w") as f:
        json.dump(report, f, indent=1, allow_nan=False)
    files["report"] = path
    return files


def _pr_axes(ax):
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper right")


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def run_cocoeval(coco_gt, results: List[Dict]):
    """Box ``COCOeval`` of ``results`` (COCO results format, ids already checked) on
    ``coco_gt``, evaluated, accumulated and summarized; returns (coco_eval, summary text).
    No detections at all is a valid input (every AP is then 0)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes(copy.deepcopy(results))
    else:  # pycocotools' loadRes cannot take an empty list
        coco_dt = COCO()
        coco_dt.dataset = {"images": coco_gt.dataset["images"],
                           "categories": coco_gt.dataset["categories"], "annotations": []}
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt.createIndex()
    coco_eval = COCOeval(coco_gt, coco_dt, "bbox")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval, out.getvalue()


def set_lazy_evaluator_class_map(cfg, class_map: Optional[ClassMap], model_desc: str) -> None:
    """Give a LazyConfig's ``dataloader.evaluator`` the model's class map (the ``class_map``
    and ``model_desc`` arguments of :class:`COCOReportEvaluator`), so that it matches the
    model's classes with the test set's by name, as the YAML path does. An evaluator of
    another type is left alone (with a warning when there is a class map to check)."""
    evaluator = cfg.get("dataloader", {}).get("evaluator")
    if evaluator is None:
        return
    target = evaluator.get("_target_")
    if not (isinstance(target, type) and issubclass(target, COCOReportEvaluator)):
        if class_map is not None:
            logger.warning(f"dataloader.evaluator is {target}, not a COCOReportEvaluator: the "
                           "model's classes are not matched by name with the test set's")
        return
    evaluator.class_map = None if class_map is None else [dict(c) for c in class_map]
    evaluator.model_desc = model_desc
